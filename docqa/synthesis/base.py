"""What every Q&A synthesis backend shares: the request and result records and the two protocols.

A :class:`Backend` turns chunks into Q&A results. The LLM backends are one :class:`Backend`
(:class:`docqa.synthesis.llm.LLMBackend`: prompt, parse) over a :class:`ChatClient` that only sends chat
messages and returns the replies: an OpenAI-compatible server or a local ``transformers`` model. The
optional LLM judge reuses the same client.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, Protocol

from pydantic import BaseModel


class QAPair(BaseModel):
    question: str
    answer: str


class ChunkRequest(BaseModel):
    """One chunk to write questions about; ``doc_title`` is given to the generator as context."""

    chunk_id: str
    text: str
    doc_title: str


class ChunkResult(BaseModel):
    """What a backend made of one chunk.

    ``ok``: a reply came and was read (its pairs may still be filtered later, or be none);
    ``unparsed``: a reply came but no pair could be read from it (``raw_reply`` keeps it);
    ``failed``: no reply at all (HTTP error, timeout, refused connection).
    """

    chunk_id: str
    status: Literal["ok", "unparsed", "failed"]
    pairs: list[QAPair]
    reason: str | None = None
    raw_reply: str | None = None
    attempts: int
    latency_s: float


class Backend(Protocol):
    def identity(self) -> dict[str, str]:
        """``backend``, ``model`` and ``prompt_version``: in the per-chunk store key and each pair's lineage.

        A backend adds any further entry that shapes its replies beyond the reply settings the stage
        keys on (``docqa.stages.synthesize.REPLY_SETTINGS``). Never a secret.
        """
        ...

    def generate(self, requests: list[ChunkRequest]) -> Iterator[ChunkResult]:
        """Exactly one result per request, yielded as each one is ready.

        Results may come in any order (a concurrent backend yields them as they complete), so callers
        match them to requests by ``chunk_id`` and must not rely on their order.
        """
        ...


class ChatRequest(BaseModel):
    """One chat-completions call; ``request_id`` matches the reply to it."""

    request_id: str
    messages: list[dict[str, str]]


class ChatReply(BaseModel):
    """What a chat client got for one request.

    ``ok``: a reply came (``content`` may still be unreadable as Q&A); ``failed``: none came after
    ``attempts`` tries (HTTP error, timeout, refused connection), ``reason`` says why. ``finish_reason``
    is the server's (``length`` when the reply hit ``max_tokens``).
    """

    request_id: str
    status: Literal["ok", "failed"]
    content: str | None = None
    finish_reason: str | None = None
    reason: str | None = None
    attempts: int
    latency_s: float


class ChatClient(Protocol):
    def identity(self) -> dict[str, str]:
        """``client`` and ``model``, plus anything else that shapes replies. Never a secret."""
        ...

    def complete(self, requests: list[ChatRequest]) -> Iterator[ChatReply]:
        """Exactly one reply per request, yielded as each one is ready, in any order."""
        ...
