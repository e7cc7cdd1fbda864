"""Chat completions from any OpenAI-compatible server (vLLM, TGI, llama.cpp, Ollama, transformers serve…).

Requests go out concurrently (at most ``synthesize.concurrency`` in flight) over one async ``httpx``
client; each reply is handed back as soon as it arrives, so the caller can store it before the rest are
done. Each request has a wall-clock limit (``request_timeout_s``, covering a server that trickles bytes)
and is retried by ``tenacity`` on 429, 5xx, timeouts and refused connections, with exponential backoff
and jitter, honouring ``Retry-After``, for at most ``max_attempts`` tries. A 4xx other than 408/409/425/
429 is not retried: sending the same request again cannot help.

The API key is read from ``DOCQA_LLM_API_KEY`` and sent as a bearer token. It never enters a reply, a
reason, the client identity or an exception message: :func:`docqa.secrets.redact` removes it from every
text that leaves this module (a misbehaving server may echo it).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from email.utils import parsedate_to_datetime

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from docqa.secrets import API_KEY_ENV, api_key, redact
from docqa.settings import SynthesizeSettings
from docqa.synthesis.base import ChatReply, ChatRequest

BODY_EXCERPT_CHARS = 300
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class RequestFailed(Exception):
    """A request that got no usable reply; ``retry`` says whether trying again may help."""

    def __init__(self, reason: str, retry: bool, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.retry_after_s = retry_after_s


class Backoff:
    """Exponential backoff with jitter, or the server's ``Retry-After`` when it sent one (both capped)."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.max_s = max_s
        self.exponential = wait_exponential_jitter(initial=initial_s, max=max_s, jitter=initial_s)

    def __call__(self, state: RetryCallState) -> float:
        failure = state.outcome.exception() if state.outcome else None
        if isinstance(failure, RequestFailed) and failure.retry_after_s is not None:
            return min(failure.retry_after_s, self.max_s)
        return self.exponential(state)


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number of seconds or an HTTP date (RFC 9110); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.replace(".", "", 1).isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


class OpenAIChatClient:
    """Concurrent chat completions against ``{base_url}/chat/completions``."""

    def __init__(self, settings: SynthesizeSettings) -> None:
        if not settings.base_url or not settings.model:
            raise ValueError("the openai synthesis backend needs synthesize.base_url and synthesize.model")
        # checked here, where the key is used, not in the settings: a recipe's validity must not depend
        # on the shell it is read in
        key = api_key()
        if key and any(key in value for value in (settings.base_url, settings.model)):
            raise ValueError(
                f"the API key must not be part of synthesize.base_url or synthesize.model (both are "
                f"logged); keep it in {API_KEY_ENV} only"
            )
        self.settings = settings
        self.url = settings.base_url.rstrip("/") + "/chat/completions"

    def identity(self) -> dict[str, str]:
        return {"client": "openai", "model": str(self.settings.model)}

    def complete(self, requests: list[ChatRequest]) -> Iterator[ChatReply]:
        """Replies as they arrive. The async work runs on its own event loop in a helper thread, so this
        works the same from plain code, a Prefect task or a notebook that already runs a loop."""
        if not requests:
            return
        replies: queue.Queue[ChatReply | BaseException | None] = queue.Queue()
        runner = _LoopThread(lambda: self._complete_all(requests, replies.put), replies)
        runner.start()
        try:
            for _ in requests:
                item = replies.get()
                if isinstance(item, BaseException):
                    raise item
                if item is None:
                    break
                yield item
        finally:
            runner.stop()

    async def _complete_all(self, requests: list[ChatRequest], deliver: Callable[[ChatReply], None]) -> None:
        slots = asyncio.Semaphore(self.settings.concurrency)
        limits = httpx.Limits(max_connections=self.settings.concurrency)
        headers = {"Authorization": f"Bearer {key}"} if (key := api_key()) else {}
        async with httpx.AsyncClient(headers=headers, limits=limits, timeout=None) as client:

            async def one(request: ChatRequest) -> None:
                async with slots:
                    deliver(await self._complete_one(client, request))

            await asyncio.gather(*(one(request) for request in requests))

    async def _complete_one(self, client: httpx.AsyncClient, request: ChatRequest) -> ChatReply:
        started = time.perf_counter()
        attempts = 0
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.max_attempts),
            wait=Backoff(self.settings.retry_initial_wait_s, self.settings.retry_max_wait_s),
            retry=retry_if_exception(lambda err: isinstance(err, RequestFailed) and err.retry),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    content, finish_reason = await self._post(client, request)
        except RequestFailed as failure:
            return ChatReply(
                request_id=request.request_id,
                status="failed",
                reason=redact(f"{failure.reason} (after {attempts} attempt{'s' if attempts > 1 else ''})"),
                attempts=attempts,
                latency_s=time.perf_counter() - started,
            )
        return ChatReply(
            request_id=request.request_id,
            status="ok",
            content=redact(content),
            finish_reason=finish_reason,
            attempts=attempts,
            latency_s=time.perf_counter() - started,
        )

    def _payload(self, request: ChatRequest) -> dict:
        return {
            "model": self.settings.model,
            "messages": request.messages,
            "temperature": self.settings.temperature,
            "max_tokens": self.settings.max_tokens,
        }

    async def _post(self, client: httpx.AsyncClient, request: ChatRequest) -> tuple[str, str | None]:
        """The reply's text and finish reason, or :class:`RequestFailed`."""
        limit = self.settings.request_timeout_s
        try:
            async with asyncio.timeout(limit):
                response = await client.post(self.url, json=self._payload(request))
        except TimeoutError:
            raise RequestFailed(f"no reply within {limit:g}s from {self.url}", retry=True) from None
        except httpx.TransportError as err:
            raise RequestFailed(f"{type(err).__name__} connecting to {self.url}: {err}", retry=True) from None
        if response.status_code != 200:
            excerpt = " ".join(response.text[:BODY_EXCERPT_CHARS].split())
            raise RequestFailed(
                f"HTTP {response.status_code} from {self.url}: {excerpt}",
                retry=response.status_code in RETRY_STATUS,
                retry_after_s=retry_after_seconds(response.headers.get("Retry-After")),
            )
        return _reply_content(response)


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


class _LoopThread:
    """Runs one coroutine on a fresh event loop in a daemon thread; its error, or None when it ends, is
    put on ``results`` after everything it delivered. ``stop()`` cancels it and waits for the thread."""

    def __init__(self, make: Callable[[], Coroutine[None, None, None]], results: queue.Queue) -> None:
        self._results = results
        self._loop = asyncio.new_event_loop()
        self._task = self._loop.create_task(make())  # runs once the thread runs the loop
        self._thread = threading.Thread(target=self._run, daemon=True, name="docqa-openai-client")

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass  # stop() was called: the consumer no longer wants replies
        except BaseException as err:  # handed to the consuming thread, which raises it
            self._results.put(err)
        finally:
            self._results.put(None)
            self._loop.close()

    def stop(self) -> None:
        if self._thread.is_alive():
            # RuntimeError: the loop closed in between, so the coroutine has already ended.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join()
