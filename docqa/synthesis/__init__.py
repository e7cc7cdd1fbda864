"""Q&A synthesis backends: the offline extractive bootstrap and OpenAI-compatible chat servers."""

from docqa.settings import SynthesizeSettings
from docqa.synthesis.base import Backend, ChunkRequest, ChunkResult, QAPair
from docqa.synthesis.extractive import ExtractiveBackend
from docqa.synthesis.openai_backend import OpenAIBackend
from docqa.synthesis.parsing import parse_reply

__all__ = ["Backend", "ChunkRequest", "ChunkResult", "QAPair", "make_backend", "parse_reply"]


def make_backend(settings: SynthesizeSettings) -> Backend:
    """The backend ``synthesize.backend`` names."""
    if settings.backend == "extractive":
        return ExtractiveBackend(settings)
    if settings.backend == "openai":
        return OpenAIBackend(settings)
    raise ValueError(f"unknown synthesis backend {settings.backend!r}; expected 'extractive' or 'openai'")
