"""The OpenAI-compatible backend against a scripted HTTP server on 127.0.0.1: prompt, parsing, retries
(5xx, 429 with Retry-After, hung connections, refused connections), bounded concurrency."""

from __future__ import annotations

import time
from email.utils import formatdate
from pydoc_data.topics import topics

import pytest
from conftest import closed_port_url, openai_settings
from openai_stub import StubServer, chat_response, json_pairs_responder, passage_of, sentence_pairs

from docqa.secrets import API_KEY_ENV
from docqa.settings import load_recipe
from docqa.synthesis import ChatRequest, ChunkRequest, ChunkResult, make_backend
from docqa.synthesis.llm import PROMPT_VERSION, LLMBackend
from docqa.synthesis.openai_backend import OpenAIChatClient, retry_after_seconds

TEXT = topics["assert"]


def run_backend(base_url: str, texts: list[str], **overrides) -> list[ChunkResult]:
    backend = make_backend(openai_settings(base_url, **overrides))
    requests = [
        ChunkRequest(chunk_id=f"c{i}", text=t, doc_title="Python reference") for i, t in enumerate(texts)
    ]
    return sorted(backend.generate(requests), key=lambda r: int(r.chunk_id[1:]))


def test_a_key_written_into_the_url_is_refused_where_the_key_is_used(monkeypatch) -> None:
    """The recipe is valid in any shell; the client, which reads the key, refuses a URL that holds it
    (the URL is logged)."""
    settings = openai_settings("http://h/v1?key=sk-secret-123")
    monkeypatch.setenv(API_KEY_ENV, "sk-secret-123")
    assert load_recipe(None, ["synthesize.backend=openai", "synthesize.model=m",
                              "synthesize.base_url=http://h/v1?key=sk-secret-123"])  # fmt: skip
    with pytest.raises(ValueError, match=f"keep it in {API_KEY_ENV} only"):
        OpenAIChatClient(settings)
    monkeypatch.setenv(API_KEY_ENV, "another-key")
    assert OpenAIChatClient(settings).url == "http://h/v1?key=sk-secret-123/chat/completions"


def test_reads_json_replies_and_sends_the_prompt() -> None:
    with StubServer() as server:
        (result,) = run_backend(server.base_url, [TEXT], language="de", max_answer_words=40)
    assert result.status == "ok" and result.attempts == 1 and result.reason is None
    assert [p.model_dump() for p in result.pairs] == sentence_pairs(server.requests[0]["body"])
    body = server.requests[0]["body"]
    assert body["model"] == "stub-model" and body["temperature"] == 0.2 and body["max_tokens"] == 1024
    prompt = body["messages"][-1]["content"]
    assert "exactly 2 question-answer pairs" in prompt and "in German" in prompt
    assert "at most 40 words" in prompt and "Python reference" in prompt and passage_of(body) == TEXT
    assert "Authorization" not in server.requests[0]["headers"]


def test_keeps_an_unreadable_reply_as_unparsed_and_notes_a_cut_off() -> None:
    reply = "I am sorry, but I cannot produce questions for this passage."
    with StubServer(lambda body: (200, chat_response(reply))) as server:
        (result,) = run_backend(server.base_url, [TEXT])
    assert result.status == "unparsed" and result.pairs == [] and result.raw_reply == reply and result.reason
    with StubServer(lambda body: (200, chat_response('[{"question": "What', "length"))) as server:
        (result,) = run_backend(server.base_url, [TEXT])
    assert result.status == "unparsed" and "max_tokens=1024" in result.reason


def test_retries_a_server_error_then_succeeds() -> None:
    def flaky(body: dict) -> tuple[int, str]:
        return (500, "internal error") if len(server.requests) == 1 else json_pairs_responder(body)

    with StubServer(flaky) as server:
        (result,) = run_backend(server.base_url, [TEXT])
    assert result.status == "ok" and result.attempts == 2 and len(result.pairs) == 2


def test_honours_retry_after_on_429() -> None:
    def limited(body: dict) -> tuple[int, str, dict[str, str]] | tuple[int, str]:
        if len(server.requests) == 1:
            return 429, '{"error": "rate limited"}', {"Retry-After": "1"}
        return json_pairs_responder(body)

    with StubServer(limited) as server:
        (result,) = run_backend(server.base_url, [TEXT])
    assert result.status == "ok" and result.attempts == 2
    first, second = (r["at"] for r in server.requests)
    # the backoff alone would wait ~0.01 s: the gap proves the server's Retry-After was honoured
    assert second - first >= 0.9


def test_caps_a_long_retry_after_at_retry_max_wait() -> None:
    def limited(body: dict) -> tuple[int, str, dict[str, str]]:
        return 429, "slow down", {"Retry-After": formatdate(time.time() + 3600, usegmt=True)}

    with StubServer(limited) as server:
        (result,) = run_backend(server.base_url, [TEXT], retry_max_wait_s=0.05, max_attempts=2)
    assert result.status == "failed" and result.attempts == 2 and "HTTP 429" in result.reason
    assert len(server.requests) == 2


def test_reports_a_persistent_error_as_failed_after_max_attempts() -> None:
    with StubServer(lambda body: (503, '{"error": "model is loading, try later"}')) as server:
        (result,) = run_backend(server.base_url, [TEXT], max_attempts=4)
    assert result.status == "failed" and result.attempts == 4 and len(server.requests) == 4
    assert "HTTP 503" in result.reason and "model is loading" in result.reason and result.raw_reply is None


def test_does_not_retry_a_client_error() -> None:
    with StubServer(lambda body: (400, '{"error": "unknown model stub-model"}')) as server:
        (result,) = run_backend(server.base_url, [TEXT])
    assert result.status == "failed" and result.attempts == 1 and "unknown model" in result.reason


def test_gives_up_on_a_hung_connection_and_a_refused_one() -> None:
    def hung(body: dict) -> tuple[int, str]:
        time.sleep(3)
        return json_pairs_responder(body)

    with StubServer(hung) as server:
        (result,) = run_backend(server.base_url, [TEXT], request_timeout_s=0.2, max_attempts=2)
    assert result.status == "failed" and result.attempts == 2 and "no reply within 0.2s" in result.reason

    (result,) = run_backend(closed_port_url(), [TEXT])
    assert result.status == "failed" and result.attempts == 3 and "ConnectError" in result.reason


@pytest.mark.parametrize("concurrency", [1, 4])
def test_keeps_at_most_concurrency_requests_in_flight(concurrency: int) -> None:
    def slow(body: dict) -> tuple[int, str]:
        time.sleep(0.05)
        return json_pairs_responder(body)

    texts = [topics[name] for name in ("assert", "for", "while", "if", "try", "with", "raise", "pass")]
    with StubServer(slow) as server:
        results = run_backend(server.base_url, texts, concurrency=concurrency)
    assert [r.chunk_id for r in results] == [f"c{i}" for i in range(len(texts))]
    assert all(r.status == "ok" for r in results)
    assert server.max_in_flight == concurrency


def test_a_consumer_that_stops_early_does_not_wait_for_the_rest() -> None:
    def slow(body: dict) -> tuple[int, str]:
        time.sleep(0.3 if passage_of(body) == TEXT else 2)
        return json_pairs_responder(body)

    with StubServer(slow) as server:
        client = OpenAIChatClient(openai_settings(server.base_url, concurrency=4))
        requests = [
            ChatRequest(
                request_id="fast", messages=[{"role": "user", "content": f'Passage:\n"""\n{TEXT}\n"""'}]
            )
        ]
        requests += [
            ChatRequest(
                request_id=f"slow{i}", messages=[{"role": "user", "content": f'Passage:\n"""\nx{i}\n"""'}]
            )
            for i in range(3)
        ]
        replies = client.complete(requests)
        first = next(replies)
        started = time.monotonic()
        replies.close()  # cancels the requests still in flight
        assert time.monotonic() - started < 1.5
    assert first.request_id == "fast" and first.status == "ok"


def test_retry_after_values() -> None:
    assert retry_after_seconds("7") == 7.0 and retry_after_seconds("0.5") == 0.5
    assert 55 <= retry_after_seconds(formatdate(time.time() + 60, usegmt=True)) <= 60
    assert retry_after_seconds(formatdate(time.time() - 60, usegmt=True)) == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_identity_names_backend_model_and_prompt_version() -> None:
    backend = make_backend(openai_settings("http://127.0.0.1:9/v1"))
    assert isinstance(backend, LLMBackend)
    assert backend.identity() == {
        "backend": "openai",
        "client": "openai",
        "model": "stub-model",
        "prompt_version": PROMPT_VERSION,
    }
