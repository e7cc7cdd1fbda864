"""`docqa run` on the sample corpus against an OpenAI-compatible server that fails a third of its requests.

The server is `tests/openai_stub.py` (a test double, not a model: its pairs are built from the
passage's first sentences). Every third request it receives fails, in turn with HTTP 500, HTTP 429 with
`Retry-After: 1`, and a hung connection that outlasts `synthesize.request_timeout_s`. The run must still
build the dataset, account for every chunk and log the figures; this script writes them, with the
baseline (the same server without failures, same run), to docs/benchmarks.md, and the baseline's
acceptance and requests/s to docqa/data/throughputs.json (for `docqa estimate`).

    python bench/flaky_server_run.py
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import command_line, machine, record_figures, write_section
from docqa.workspace import read_jsonl
from tests.openai_stub import StubServer, json_pairs_responder

SERVICE_S = 0.05
HANG_S = 5.0
SETTINGS = {
    "synthesize.backend": "openai",
    "synthesize.model": "flaky-stub",
    "synthesize.pairs_per_chunk": 2,
    "synthesize.request_timeout_s": 2,
    "synthesize.retry_initial_wait_s": 0.2,
    "synthesize.max_attempts": 4,
}
FIGURES = (
    "chunks", "chunks_failed", "chunks_near_duplicate", "replies_unparsed", "pairs_raw", "pairs_accepted",
    "retries", "latency_p50_s", "latency_p95_s",
)  # fmt: skip


def failing_responder():
    """Every third request fails: 500, then 429 with Retry-After, then a hung connection, in turn."""
    counter = itertools.count(1)
    failures = itertools.cycle(("500", "429", "hang"))
    lock = threading.Lock()

    def respond(body: dict):
        with lock:
            failure = next(failures) if next(counter) % 3 == 0 else None
        if failure == "500":
            return 500, '{"error": "internal error"}'
        if failure == "429":
            return 429, '{"error": "rate limited"}', {"Retry-After": "1"}
        time.sleep(HANG_S if failure == "hang" else SERVICE_S)
        return json_pairs_responder(body)

    return respond


def healthy_responder(body: dict):
    time.sleep(SERVICE_S)
    return json_pairs_responder(body)


def docqa_run(base_url: str, workspace: Path) -> tuple[float, dict]:
    command = [
        sys.executable,
        "-m",
        "docqa.cli",
        "run",
        "--workspace",
        str(workspace),
        "--recipe",
        "tiny-cpu",
    ]
    for key, value in {**SETTINGS, "synthesize.base_url": base_url}.items():
        command += ["--set", f"{key}={value}"]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    return seconds, json.loads((workspace / "reports" / "latest.json").read_text())


def measure(responder, workspace: Path) -> dict:
    with StubServer(responder) as server:
        seconds, report = docqa_run(server.base_url, workspace)
        requests = len(server.requests)
    accounting = read_jsonl(Path(report["outputs"]["synthesis"]) / "chunk_accounting.jsonl")
    states = {
        state: sum(r["state"] == state for r in accounting)
        for state in sorted({r["state"] for r in accounting})
    }
    return {
        "seconds": round(seconds, 1),
        "synthesize_seconds": report["stages"]["synthesize"]["seconds"],
        "requests": requests,
        "status": report["status"],
        "states": states,
        "rejected_by_reason": report["synthesis"]["rejected_by_reason"],
        "contamination": report["contamination"],
        "qa": (report["counts"]["qa_train"], report["counts"]["qa_knowledge"], report["counts"]["qa_eval"]),
        **{name: report["synthesis"][name] for name in FIGURES},
    }


def table(healthy: dict, flaky: dict) -> str:
    rows = [
        ("run status", "status"),
        ("HTTP requests the server received", "requests"),
        ("chunks", "chunks"),
        ("chunk states", "states"),
        ("chunks failed (retried by the next run)", "chunks_failed"),
        ("replies unparsed", "replies_unparsed"),
        ("pairs read", "pairs_raw"),
        ("pairs accepted", "pairs_accepted"),
        ("Q&A train / held-out", "qa"),
        ("rejected by reason", "rejected_by_reason"),
        ("held-out pairs checked / removed as contaminated", "contamination"),
        ("retries", "retries"),
        ("latency p50 / p95, s", None),
        ("synthesize stage, s", "synthesize_seconds"),
        ("whole `docqa run`, s", "seconds"),
    ]
    lines = ["| figure | healthy server (baseline) | fails every third request |", "|---|---|---|"]
    for label, key in rows:
        if key is None:
            cells = [f"{r['latency_p50_s']} / {r['latency_p95_s']}" for r in (healthy, flaky)]
        elif key == "contamination":
            cells = [
                f"{r[key]['eval_pairs_checked']} / {r[key]['eval_pairs_removed']}" for r in (healthy, flaky)
            ]
        else:
            cells = [str(r[key]) for r in (healthy, flaky)]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    ratio = flaky["synthesize_seconds"] / healthy["synthesize_seconds"]
    lines.append(f"| synthesize time vs baseline | 1.00 | {ratio:.2f} |")
    return "\n".join(lines)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="docqa-flaky-") as tmp:
        healthy = measure(healthy_responder, Path(tmp) / "healthy")
        flaky = measure(failing_responder(), Path(tmp) / "flaky")
    body = (
        "## Synthesis against a failing server (`bench/flaky_server_run.py`)\n\n"
        "`docqa run` on the bundled sample corpus (tiny-cpu recipe, `synthesize.backend=openai`, "
        f"concurrency 8, 4 attempts, {SETTINGS['synthesize.request_timeout_s']} s timeout) against "
        f"`tests/openai_stub.py`: a test double with a {SERVICE_S:g} s service time whose pairs are built "
        "from each passage's first sentences. The failing server answers every third request it receives "
        "with HTTP 500, HTTP 429 "
        f"(`Retry-After: 1`) or a connection that hangs {HANG_S:g} s, in turn. Baseline: the same server "
        "without failures, in the same session.\n\n" + table(healthy, flaky)
    )
    write_section("flaky_server_run", body)
    record_figures(
        "flaky_server_run",
        command_line("bench/flaky_server_run.py"),
        figures(healthy),
        device=f"{machine()}; the server on the same machine",
    )
    print(body)


def figures(healthy: dict) -> dict[str, dict]:
    """The healthy baseline's acceptance and synthesis requests/s (the stub is a test double, not a model)."""
    common = {
        "stage": "synthesize",
        "device_kind": "server",
        "model": SETTINGS["synthesize.model"],
        "backend": "openai",
    }
    pairs_asked = healthy["chunks"] * SETTINGS["synthesize.pairs_per_chunk"]
    return {
        "synthesize.acceptance.flaky-stub": {
            **common,
            "metric": "acceptance_rate",
            "value": round(healthy["pairs_accepted"] / pairs_asked, 4),
            "conditions": {
                "chunks": healthy["chunks"],
                "pairs_asked": pairs_asked,
                "pairs_raw": healthy["pairs_raw"],
                "pairs_accepted": healthy["pairs_accepted"],
            },
            "note": "tests/openai_stub.py's pairs are the passage's first sentences: a test double",
        },
        "synthesize.flaky-stub.c8": {
            **common,
            "metric": "requests_per_s",
            "value": round(healthy["requests"] / healthy["synthesize_seconds"], 3),
            "conditions": {
                "concurrency": 8,
                "requests": healthy["requests"],
                "service_s": SERVICE_S,
                "stage_seconds": healthy["synthesize_seconds"],
            },
            "note": "synthesize stage of the healthy baseline, reply filters included",
        },
    }


if __name__ == "__main__":
    main()
