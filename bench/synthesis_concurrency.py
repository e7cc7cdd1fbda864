"""Synthesis throughput: N requests in flight vs one at a time, through docqa's OpenAI-compatible client.

Two servers, each measured with concurrency 1 (the baseline, same run) and N:

1. A local OpenAI-compatible server with a fixed service time per request (``tests/openai_stub.py``),
   the shape of a GPU server with continuous batching below its batch limit: it isolates what the client
   does with concurrency. Goal (issue 3): at least 0.8·N× the baseline's throughput for N = 8.
2. ``transformers serve`` for real, on the bootstrap tiny model, on this machine's CPU: the server's own
   compute bounds the gain, so the figure says what a CPU-only server gives, not what the client can do.

    python bench/synthesis_concurrency.py [--requests 64] [--service-s 0.25] [--serve-requests 16]

Every requests/s figure also goes to docqa/data/throughputs.json, which `docqa estimate` reads. To measure a
server of your own instead (vLLM, TGI, ...: the figure a recipe's synthesis estimate needs), name it; it is
printed and recorded, and the section of docs/benchmarks.md is left as it is:

    python bench/synthesis_concurrency.py --base-url http://gpu-box:8000/v1 --model NAME --concurrency 32
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from pydoc_data.topics import topics

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import command_line, machine, record_figures, write_section
from docqa.estimate import model_size
from docqa.settings import Recipe, SynthesizeSettings
from docqa.synthesis import ChatRequest
from docqa.synthesis.llm import qa_messages
from docqa.synthesis.openai_backend import OpenAIChatClient
from tests.openai_stub import StubServer, json_pairs_responder

CONCURRENCY = 8
STUB_MODEL = "fixed-latency"
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


def measure(
    base_url: str, model: str, n: int, max_tokens: int, many: int = CONCURRENCY
) -> dict[int, tuple[float, int]]:
    results = {}
    for concurrency in (1, many):
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
        return measure(server.base_url, STUB_MODEL, n, max_tokens=1024)


def transformers_server(n: int, max_tokens: int, extra_args: tuple[str, ...]) -> dict[int, tuple[float, int]]:
    from docqa.bootstrap import ensure_bootstrap_base
    from docqa.synthesis.serve import transformers_serve

    folder, _ = ensure_bootstrap_base(Recipe().model.bootstrap)
    with transformers_serve(str(folder), device="cpu", extra_args=list(extra_args)) as served:
        measure(served.base_url, served.model, 2, max_tokens)  # warm-up: first requests load the model
        return measure(served.base_url, served.model, n, max_tokens)


def table(rows: list[tuple[str, dict[int, tuple[float, int]], int]], concurrency: int = CONCURRENCY) -> str:
    lines = [
        f"| server | requests | 1 in flight (baseline), req/s | {concurrency} in flight, req/s | speed-up | "
        f"goal ({0.8 * concurrency:g}×) |",
        "|---|---|---|---|---|---|",
    ]
    for name, results, n in rows:
        one, many = results[1][0], results[concurrency][0]
        ok = f"{results[1][1]}/{n} and {results[concurrency][1]}/{n} ok"
        goal = "met" if many / one >= 0.8 * concurrency else "not met"
        lines.append(f"| {name} ({ok}) | {n} | {one:.2f} | {many:.2f} | {many / one:.2f}× | {goal} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--service-s", type=float, default=0.25)
    parser.add_argument("--serve-requests", type=int, default=16)
    parser.add_argument("--serve-max-tokens", type=int, default=64)
    parser.add_argument("--base-url", help="measure this OpenAI-compatible server instead (with --model)")
    parser.add_argument("--model", help="the model name the --base-url server knows")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="with --base-url")
    parser.add_argument(
        "--max-tokens", type=int, default=1024, help="with --base-url (synthesize.max_tokens)"
    )
    args = parser.parse_args()
    if args.base_url:
        if not args.model:
            parser.error("--base-url needs --model")
        measure_server(args)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    fixed = fixed_latency_server(args.service_s, args.requests)
    rows = [(f"fixed {args.service_s:g} s service time", fixed, args.requests)]
    print(table(rows), flush=True)
    recorded = figures("fixed-latency-stub", STUB_MODEL, None, fixed, args.requests, 1024)
    for key, extra_args in (("", ()), ("-cb", ("--continuous-batching",))):
        served = transformers_server(args.serve_requests, args.serve_max_tokens, extra_args)
        command = " ".join(("transformers serve", *extra_args))
        name = f"`{command}`, tiny bootstrap model, CPU, max_tokens {args.serve_max_tokens}"
        rows.append((name, served, args.serve_requests))
        model = f"tiny bootstrap base (default model.bootstrap) behind `{command}`, CPU"
        size = model_size(Recipe())[1]
        n, max_tokens = args.serve_requests, args.serve_max_tokens
        recorded |= figures(f"transformers-serve{key}-bootstrap", model, size, served, n, max_tokens)
    body = table(rows) + (
        "\n\nClient: `OpenAIChatClient` (async httpx, `synthesize.concurrency`), real Q&A prompts over "
        f"Python reference topics. Machine: {os.cpu_count()} CPU cores, no GPU. The fixed-latency server is "
        "`tests/openai_stub.py`. `transformers serve` computes every reply on the same cores: without "
        "`--continuous-batching` it generates one request at a time, so concurrency cannot help; with it, "
        "requests in flight are batched together."
    )
    write_section(
        "synthesis_concurrency",
        "## Synthesis: concurrent requests vs one at a time (`bench/synthesis_concurrency.py`)\n\n" + body,
    )
    record_figures(
        "synthesis_concurrency",
        command_line("bench/synthesis_concurrency.py"),
        recorded,
        device=f"{machine()}; the server on the same machine",
    )
    print(table(rows))


def figures(
    name: str,
    model: str,
    parameters: int | None,
    results: dict[int, tuple[float, int]],
    n: int,
    max_tokens: int,
) -> dict[str, dict]:
    """Requests/s at each concurrency, for `docqa estimate` (it matches ``model`` to synthesize.model)."""
    return {
        f"synthesize.{name}.c{concurrency}": {
            "stage": "synthesize",
            "metric": "requests_per_s",
            "value": round(rate, 2),
            "device_kind": "server",
            "model": model,
            "parameters": parameters,
            "backend": "openai",
            "conditions": {"concurrency": concurrency, "requests": n, "ok": ok, "max_tokens": max_tokens},
        }
        for concurrency, (rate, ok) in results.items()
    }


def measure_server(args: argparse.Namespace) -> None:
    """A server of the user's: printed, and recorded for `docqa estimate` (not in docs/benchmarks.md)."""
    results = measure(args.base_url, args.model, args.requests, args.max_tokens, args.concurrency)
    print(table([(f"{args.model} at {args.base_url}", results, args.requests)], args.concurrency))
    found = figures(args.model, args.model, None, results, args.requests, args.max_tokens)
    for figure in found.values():
        figure["source"] = "bench/synthesis_concurrency.py --base-url (printed; not in docs/benchmarks.md)"
    command = command_line("bench/synthesis_concurrency.py")
    record_figures("synthesis_concurrency", command, found, device=f"server at {args.base_url}")


if __name__ == "__main__":
    main()
