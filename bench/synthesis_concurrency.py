"""Synthesis throughput: N requests in flight vs one at a time, through docqa's OpenAI-compatible client.

Two servers, each measured with concurrency 1 (the baseline, same run) and N:

1. A local OpenAI-compatible server with a fixed service time per request (``bench/openai_stub.py``),
   the shape of a GPU server with continuous batching below its batch limit: it isolates what the client
   does with concurrency. Goal (issue 3): at least 0.8·N× the baseline's throughput for N = 8.
2. ``transformers serve`` for real, on the bootstrap tiny model, on this machine's CPU: the server's own
   compute bounds the gain, so the figure says what a CPU-only server gives, not what the client can do.

    python bench/synthesis_concurrency.py [--requests 64] [--service-s 0.25] [--serve-requests 16]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from pydoc_data.topics import topics

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.openai_stub import StubServer, json_pairs_responder
from bench.report import write_section
from docqa.settings import Recipe, SynthesizeSettings
from docqa.synthesis import ChatRequest
from docqa.synthesis.llm import qa_messages
from docqa.synthesis.openai_backend import OpenAIChatClient

CONCURRENCY = 8
TOPICS = sorted(topics)


def chat_requests(n: int, settings: SynthesizeSettings) -> list[ChatRequest]:
    """``n`` real Q&A prompts over Python reference topics (cycled when n exceeds them)."""
    from docqa.synthesis import ChunkRequest

    requests = []
    for i in range(n):
        text = topics[TOPICS[i % len(TOPICS)]][:1500]
        chunk = ChunkRequest(chunk_id=f"c{i}", text=text, doc_title="Python reference")
        requests.append(ChatRequest(request_id=chunk.chunk_id, messages=qa_messages(chunk, settings)))
    return requests


def throughput(settings: SynthesizeSettings, requests: list[ChatRequest]) -> tuple[float, int]:
    """Requests per second over the whole batch, and how many replies were ok."""
    client = OpenAIChatClient(settings)
    started = time.perf_counter()
    replies = list(client.complete(requests))
    elapsed = time.perf_counter() - started
    return len(requests) / elapsed, sum(r.status == "ok" for r in replies)


def measure(base_url: str, model: str, n: int, max_tokens: int) -> dict[int, tuple[float, int]]:
    results = {}
    for concurrency in (1, CONCURRENCY):
        settings = SynthesizeSettings(
            backend="openai", base_url=base_url, model=model, concurrency=concurrency, max_tokens=max_tokens
        )
        results[concurrency] = throughput(settings, chat_requests(n, settings))
    return results


def fixed_latency_server(service_s: float, n: int) -> dict[int, tuple[float, int]]:
    def respond(body: dict) -> tuple[int, str]:
        time.sleep(service_s)
        return json_pairs_responder(body)

    with StubServer(respond) as server:
        return measure(server.base_url, "fixed-latency", n, max_tokens=1024)


def transformers_server(n: int, max_tokens: int, extra_args: tuple[str, ...]) -> dict[int, tuple[float, int]]:
    from docqa.bootstrap import ensure_bootstrap_base
    from docqa.synthesis.serve import transformers_serve

    folder, _ = ensure_bootstrap_base(Recipe().model.bootstrap)
    with transformers_serve(str(folder), device="cpu", extra_args=list(extra_args)) as served:
        measure(served.base_url, served.model, 2, max_tokens)  # warm-up: first requests load the model
        return measure(served.base_url, served.model, n, max_tokens)


def table(rows: list[tuple[str, dict[int, tuple[float, int]], int]]) -> str:
    lines = [
        f"| server | requests | 1 in flight (baseline), req/s | {CONCURRENCY} in flight, req/s | speed-up | "
        f"goal ({0.8 * CONCURRENCY:g}×) |",
        "|---|---|---|---|---|---|",
    ]
    for name, results, n in rows:
        one, many = results[1][0], results[CONCURRENCY][0]
        ok = f"{results[1][1]}/{n} and {results[CONCURRENCY][1]}/{n} ok"
        goal = "met" if many / one >= 0.8 * CONCURRENCY else "not met"
        lines.append(f"| {name} ({ok}) | {n} | {one:.2f} | {many:.2f} | {many / one:.2f}× | {goal} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--service-s", type=float, default=0.25)
    parser.add_argument("--serve-requests", type=int, default=16)
    parser.add_argument("--serve-max-tokens", type=int, default=64)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    fixed = fixed_latency_server(args.service_s, args.requests)
    rows = [(f"fixed {args.service_s:g} s service time", fixed, args.requests)]
    print(table(rows), flush=True)
    for extra_args in ((), ("--continuous-batching",)):
        served = transformers_server(args.serve_requests, args.serve_max_tokens, extra_args)
        command = " ".join(("transformers serve", *extra_args))
        name = f"`{command}`, tiny bootstrap model, CPU, max_tokens {args.serve_max_tokens}"
        rows.append((name, served, args.serve_requests))
    body = table(rows) + (
        "\n\nClient: `OpenAIChatClient` (async httpx, `synthesize.concurrency`), real Q&A prompts over "
        f"Python reference topics. Machine: {os.cpu_count()} CPU cores, no GPU. The fixed-latency server is "
        "`bench/openai_stub.py`. `transformers serve` computes every reply on the same cores: without "
        "`--continuous-batching` it generates one request at a time, so concurrency cannot help; with it, "
        "requests in flight are batched together."
    )
    write_section(
        "synthesis_concurrency",
        "## Synthesis: concurrent requests vs one at a time (`bench/synthesis_concurrency.py`)\n\n" + body,
    )
    print(table(rows))


if __name__ == "__main__":
    main()
