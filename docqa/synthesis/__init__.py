"""Q&A synthesis backends: the offline extractive bootstrap and OpenAI-compatible chat servers."""

from docqa.synthesis.base import Backend, ChunkRequest, ChunkResult, QAPair, make_backend
from docqa.synthesis.parsing import parse_reply

__all__ = ["Backend", "ChunkRequest", "ChunkResult", "QAPair", "make_backend", "parse_reply"]
