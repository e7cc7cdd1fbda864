"""Ingest throughput per process, and how it grows with processes (``ingest.workers``).

The documents are the sample corpus's PDFs, each in several byte-distinct copies (a comment after
``%%EOF``, which readers ignore) so that every copy is a store miss and is extracted: the same pages,
parsed again. Baseline: one process, measured in the same run on the same files. Each measurement
starts from an empty store; the best of ``--repeats`` counts (the machines are noisy).

    python bench/ingest_scaling.py [--copies 12] [--repeats 3] [--max-processes N]

Writes its table to docs/benchmarks.md and, to docqa/data/throughputs.json (read by `docqa estimate`), the
one-process rate and the parallel efficiency at the most processes measured.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import command_line, record_figures, write_section


def corpus(root: Path, copies: int) -> list[Path]:
    from docqa.sample_corpus import write_sample_corpus
    from docqa.settings import IngestSettings
    from docqa.stages.ingest import list_documents

    originals = root / "originals"
    write_sample_corpus(originals)
    pdfs = [p for p in list_documents(originals, IngestSettings()) if p.suffix == ".pdf"]
    out = root / "docs"
    out.mkdir()
    paths = []
    for copy in range(copies):
        for pdf in pdfs:
            path = out / f"{pdf.stem}-{copy:03d}.pdf"
            path.write_bytes(pdf.read_bytes() + f"\n%docqa-bench copy {copy}\n".encode())
            paths.append(path)
    return paths


def measure(paths: list[Path], processes: int, repeats: int, root: Path) -> tuple[float, int]:
    """(best seconds, pages) of ingesting ``paths`` with ``processes`` from an empty store."""
    from docqa.settings import IngestSettings
    from docqa.stages.ingest import ingest_documents

    best, pages = float("inf"), 0
    for attempt in range(repeats):
        work = root / f"run-{processes}-{attempt}"
        started = time.perf_counter()
        output = ingest_documents(paths, work / "ingest", work / "store", IngestSettings(workers=processes))
        best = min(best, time.perf_counter() - started)
        assert output.extracted == len(paths), "every copy must be extracted"
        pages = output.pages
        shutil.rmtree(work)
    return best, pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=12, help="byte-distinct copies of each sample PDF")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-processes", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="docqa-bench-ingest-"))
    try:
        paths = corpus(root, args.copies)
        counts = sorted({1, *(n for n in (2, 4, 8, 16) if n <= args.max_processes), args.max_processes})
        results = {n: measure(paths, n, args.repeats, root) for n in counts}
    finally:
        shutil.rmtree(root)

    base_seconds, pages = results[1]
    base_rate = pages / base_seconds
    table = [
        "| processes | wall s | pages/s | ratio vs 1 process | pages/s per process | parallel efficiency |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n, (seconds, _) in results.items():
        rate = pages / seconds
        label = f"{n} (baseline)" if n == 1 else str(n)
        table.append(
            f"| {label} | {seconds:.2f} | {rate:.1f} | {rate / base_rate:.2f} | {rate / n:.1f} | "
            f"{rate / n / base_rate:.2f} |"
        )
    body = (
        "## Ingest: pages/s per process, and with more processes (`bench/ingest_scaling.py`)\n\n"
        f"{len(paths)} PDFs ({pages} pages): the sample corpus's PDFs in {args.copies} byte-distinct copies "
        "each, extracted from an empty store (pypdf, plain mode, header/footer cleaning). Processes are "
        "spawned by `ingest.workers`; their start-up is included. Baseline: one process, same run. "
        f"Best of {args.repeats}.\n\n"
        + "\n".join(table)
        + f"\n\nCommand: `{command_line('bench/ingest_scaling.py')}`"
    )
    write_section("ingest_scaling", body)
    most = max(results)
    conditions = {"documents": len(paths), "pages": pages, "repeats": args.repeats}
    figures = {
        "ingest.cpu.one-process": {
            "stage": "ingest",
            "metric": "pages_per_s",
            "value": round(base_rate, 1),
            "device_kind": "cpu",
            "model": "pypdf",
            "conditions": {**conditions, "processes": 1},
            "note": "ingest_documents in one process, empty store: pages per second per process",
        }
    }
    if most > 1:
        figures["ingest.cpu.parallel-efficiency"] = {
            "stage": "ingest",
            "metric": "parallel_efficiency",
            "value": round(pages / results[most][0] / most / base_rate, 3),
            "device_kind": "cpu",
            "model": "pypdf",
            "conditions": {**conditions, "processes": most},
            "note": f"pages/s with {most} processes ÷ ({most} × the one-process rate)",
        }
    record_figures("ingest_scaling", command_line("bench/ingest_scaling.py"), figures)
    print(body)


if __name__ == "__main__":
    main()
