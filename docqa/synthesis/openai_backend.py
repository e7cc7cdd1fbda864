"""Q&A from any OpenAI-compatible chat-completions server (vLLM, llama.cpp, TGI, Ollama, OpenAI…).

One POST to ``{base_url}/chat/completions`` per chunk, asking for a JSON list of pairs; the reply is
read by :func:`docqa.synthesis.parsing.parse_reply`. A reply that cannot be read is kept and marked
``unparsed``; a request that never got a reply (HTTP error, timeout, refused connection) is marked
``failed`` after ``MAX_ATTEMPTS`` tries, with the status code and the start of the body as reason.

The API key is read from ``DOCQA_LLM_API_KEY`` and sent as a bearer token; it never enters a result,
a reason, the backend identity or an exception message (replies echoing it are redacted).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import httpx

from docqa.settings import SynthesizeSettings
from docqa.synthesis.base import ChunkRequest, ChunkResult
from docqa.synthesis.parsing import parse_reply

PROMPT_VERSION = "qa-json-v1"
API_KEY_ENV = "DOCQA_LLM_API_KEY"
MAX_ATTEMPTS = 3
RETRY_WAIT_S = 1.0  # doubled after each failed attempt
BODY_EXCERPT_CHARS = 300
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}

SYSTEM_PROMPT = (
    "You write question-answer pairs that teach the content of technical documents. You reply with JSON only."
)
USER_PROMPT = """Document: {title}

Passage:
\"\"\"
{text}
\"\"\"

Write exactly {n} question-answer pairs about this passage, in {language}.
- Every question must be answerable solely from the passage.
- Every question must be self-contained: name its subject explicitly, and never mention \
"the passage", "the text", "the document" or "the author".
- Every answer states the fact from the passage in at most {max_words} words.
- Do not repeat a question.

Reply with a JSON list only, no other text:
[{{"question": "...", "answer": "..."}}]"""


class RequestFailed(Exception):
    """A request that got no usable reply; ``retry`` says whether trying again may help."""

    def __init__(self, reason: str, retry: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


def build_messages(request: ChunkRequest, settings: SynthesizeSettings) -> list[dict[str, str]]:
    user = USER_PROMPT.format(
        title=request.doc_title or "(untitled)",
        text=request.text,
        n=settings.pairs_per_chunk,
        language=settings.language,
        max_words=settings.max_answer_words,
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


class OpenAIBackend:
    """Synchronous, one request at a time; ``generate`` yields each result as soon as it is ready."""

    def __init__(
        self,
        settings: SynthesizeSettings,
        retry_wait_s: float = RETRY_WAIT_S,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        if not settings.base_url or not settings.model:
            raise ValueError("the openai synthesis backend needs synthesize.base_url and synthesize.model")
        self.settings = settings
        self.url = settings.base_url.rstrip("/") + "/chat/completions"
        self.retry_wait_s = retry_wait_s
        self.max_attempts = max_attempts
        self._api_key = os.environ.get(API_KEY_ENV) or None

    def identity(self) -> dict[str, str]:
        return {"backend": "openai", "model": str(self.settings.model), "prompt_version": PROMPT_VERSION}

    def generate(self, requests: list[ChunkRequest]) -> Iterator[ChunkResult]:
        with httpx.Client(timeout=self.settings.request_timeout_s, headers=self._headers()) as client:
            for request in requests:
                yield self._generate_one(client, request)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _payload(self, request: ChunkRequest) -> dict:
        return {
            "model": self.settings.model,
            "messages": build_messages(request, self.settings),
            "temperature": self.settings.temperature,
            "max_tokens": self.settings.max_tokens,
        }

    def _generate_one(self, client: httpx.Client, request: ChunkRequest) -> ChunkResult:
        started = time.perf_counter()
        attempts = 0
        reason = "not attempted"
        while attempts < self.max_attempts:
            attempts += 1
            try:
                content, finish_reason = self._post(client, request)
            except RequestFailed as failure:
                reason = self._redact(failure.reason)
                if not failure.retry or attempts == self.max_attempts:
                    break
                time.sleep(self.retry_wait_s * 2 ** (attempts - 1))
                continue
            return self._read_reply(request, content, finish_reason, attempts, time.perf_counter() - started)
        return ChunkResult(
            chunk_id=request.chunk_id,
            status="failed",
            pairs=[],
            reason=f"{reason} (after {attempts} attempt{'s' if attempts > 1 else ''})",
            raw_reply=None,
            attempts=attempts,
            latency_s=time.perf_counter() - started,
        )

    def _post(self, client: httpx.Client, request: ChunkRequest) -> tuple[str, str | None]:
        """The reply's text and finish reason, or :class:`RequestFailed`."""
        try:
            response = client.post(self.url, json=self._payload(request))
        except httpx.TimeoutException:
            raise RequestFailed(
                f"timeout after {self.settings.request_timeout_s:g}s from {self.url}", retry=True
            ) from None
        except httpx.TransportError as err:
            raise RequestFailed(f"{type(err).__name__} connecting to {self.url}: {err}", retry=True) from None
        if response.status_code != 200:
            excerpt = " ".join(response.text[:BODY_EXCERPT_CHARS].split())
            raise RequestFailed(
                f"HTTP {response.status_code} from {self.url}: {excerpt}",
                retry=response.status_code in RETRY_STATUS,
            )
        return _reply_content(response)

    def _read_reply(
        self, request: ChunkRequest, content: str, finish_reason: str | None, attempts: int, latency_s: float
    ) -> ChunkResult:
        content = self._redact(content)
        pairs, reason = parse_reply(content)
        if reason is not None and finish_reason == "length":
            reason += f" (reply cut off at max_tokens={self.settings.max_tokens})"
        return ChunkResult(
            chunk_id=request.chunk_id,
            status="ok" if pairs else "unparsed",
            pairs=pairs,
            reason=reason,
            raw_reply=content,
            attempts=attempts,
            latency_s=latency_s,
        )

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text


def _reply_content(response: httpx.Response) -> tuple[str, str | None]:
    """``choices[0].message.content`` of a chat-completions response, or :class:`RequestFailed`."""
    try:
        body = response.json()
        choice = body["choices"][0]
        content = choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        excerpt = " ".join(response.text[:BODY_EXCERPT_CHARS].split())
        raise RequestFailed(f"not a chat-completions response: {excerpt}", retry=False) from None
    return content or "", choice.get("finish_reason")
