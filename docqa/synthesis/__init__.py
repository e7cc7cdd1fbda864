"""Q&A synthesis backends: the offline extractive bootstrap, and chat models (OpenAI-compatible servers or
a local ``transformers`` model) behind :class:`~docqa.synthesis.llm.LLMBackend`."""

from docqa.settings import SynthesizeSettings
from docqa.synthesis.base import (
    Backend,
    ChatClient,
    ChatReply,
    ChatRequest,
    ChunkRequest,
    ChunkResult,
    QAPair,
)
from docqa.synthesis.parsing import parse_reply

__all__ = [
    "Backend",
    "ChatClient",
    "ChatReply",
    "ChatRequest",
    "ChunkRequest",
    "ChunkResult",
    "QAPair",
    "make_backend",
    "make_chat_client",
    "parse_reply",
]


def make_chat_client(settings: SynthesizeSettings) -> ChatClient:
    """The chat client of an LLM backend (also what the judge talks to)."""
    if settings.backend == "openai":
        from docqa.synthesis.openai_backend import OpenAIChatClient

        return OpenAIChatClient(settings)
    if settings.backend == "transformers":
        from docqa.synthesis.transformers_backend import TransformersChatClient  # imports torch

        return TransformersChatClient(settings)
    raise ValueError(
        f"synthesize.backend {settings.backend!r} has no chat client; use openai or transformers"
    )


def make_backend(settings: SynthesizeSettings, client: ChatClient | None = None) -> Backend:
    """The backend ``synthesize.backend`` names; LLM backends share ``client`` with the judge if given."""
    if settings.backend == "extractive":
        from docqa.synthesis.extractive import ExtractiveBackend

        return ExtractiveBackend(settings)
    from docqa.synthesis.llm import LLMBackend

    return LLMBackend(client or make_chat_client(settings), settings)
