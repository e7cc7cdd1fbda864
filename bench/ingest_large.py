"""One very large PDF, and one hostile one: pages/s and peak memory of docqa's ingest against plain pypdf.

The large document is a 2,000-page book of dense text (52 lines of about 90 characters a page, 10 MB of
text), written with fpdf2. Baseline: plain pypdf (``PdfReader`` and ``page.extract_text()`` page after
page, nothing kept but the text), measured in the same run, each side in a fresh process of its own so
that its peak resident memory is its own. docqa's side is ``ingest_documents`` with its default settings:
an extraction process under the time and memory limits, the hidden-text scan, cleaning, normalisation,
the store entry and the published records. Memory is also measured at a tenth of the pages, to show how
it grows with the document.

The hostile document is a few kilobytes: every page draws the same compressed content stream, which
expands to about a megabyte of text operators, so extraction costs seconds a page. It is ingested with
``ingest.document_time_limit_s`` set by ``--hostile-limit``; the time it would take unstopped is
extrapolated from its first pages.

    python bench/ingest_large.py [--pages 2000] [--hostile-pages 1000] [--hostile-limit 30]

Writes its section of docs/benchmarks.md and its figures to docqa/data/throughputs.json.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "tests"))
from pdf_factory import write_slow_pdf  # the hostile PDF the tests use

from bench.report import command_line, record_figures, write_section

LINES_PER_PAGE, WORDS_PER_LINE = 52, 14
WORDS = [
    "inspection", "widget", "torque", "calibration", "bearing", "tolerance", "humidity", "sensor", "measured",
    "recorded", "quarterly", "rig", "alloy", "fatigue", "crack", "threshold", "the", "of", "and", "with",
    "under", "before", "after", "each", "every",
]  # fmt: skip


def write_book(path: Path, pages: int) -> Path:
    from fpdf import FPDF

    rng = random.Random(0)
    pdf = FPDF(format="A4", unit="mm")
    pdf.set_auto_page_break(False)
    pdf.set_font("Helvetica", size=10)
    for _ in range(pages):
        pdf.add_page()
        for line in range(LINES_PER_PAGE):
            pdf.text(15, 15 + line * 5.2, " ".join(rng.choice(WORDS) for _ in range(WORDS_PER_LINE)))
    pdf.output(str(path))
    return path


def _peak_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux: KiB


def plain_pypdf(path: Path, pages: int | None = None) -> dict:
    from pypdf import PdfReader

    started = time.perf_counter()
    reader = PdfReader(path)
    texts = [page.extract_text() for page in reader.pages[:pages]]
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "pages": len(texts), "chars": sum(map(len, texts)),
            "peak_mb": _peak_mb(resource.RUSAGE_SELF)}  # fmt: skip


def docqa_ingest(paths: list[Path], work: Path, time_limit_s: float | None = None) -> dict:
    """docqa's ingest of ``paths`` (each in its own extraction process), measured on the first."""
    from docqa.outputs import read_documents
    from docqa.settings import IngestSettings
    from docqa.stages.ingest import ingest_documents

    limits = {"document_time_limit_s": time_limit_s} if time_limit_s else {}
    settings = IngestSettings(workers=len(paths), **limits)
    started = time.perf_counter()
    output = ingest_documents(paths, work / "ingest", work / "store", settings)
    seconds = time.perf_counter() - started
    record = read_documents(Path(output.path))[0]
    return {
        "seconds": seconds,
        "pages": record.n_pages,
        "chars": sum(len(page.text) for page in record.pages),
        "reason": record.reason,
        "peak_mb": _peak_mb(resource.RUSAGE_CHILDREN),  # the extraction processes
        "parent_peak_mb": _peak_mb(resource.RUSAGE_SELF),  # the records, in the calling process
    }


def _call(function, queue, *args) -> None:
    queue.put(function(*args))


def in_fresh_process(function, *args) -> dict:
    """``function(*args)`` in a spawned process of its own, so that its peak memory is its alone."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_call, args=(function, queue, *args))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--hostile-pages", type=int, default=1000)
    parser.add_argument("--hostile-limit", type=float, default=30.0, help="ingest.document_time_limit_s")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="docqa-bench-large-"))
    try:
        book = write_book(root / "book.pdf", args.pages)
        tenth = write_book(root / "tenth.pdf", args.pages // 10)
        baseline = in_fresh_process(plain_pypdf, book)
        ours = in_fresh_process(docqa_ingest, [book], root / "ours")
        ours_tenth = in_fresh_process(docqa_ingest, [tenth], root / "tenth")
        hostile = write_slow_pdf(root / "hostile.pdf", args.hostile_pages)
        probe = in_fresh_process(plain_pypdf, hostile, 3)
        # beside a good document, in its own process: a run whose only document fails stops at ingest
        stopped = in_fresh_process(docqa_ingest, [hostile, tenth], root / "hostile", args.hostile_limit)
        sizes = {name: (root / name).stat().st_size for name in ("book.pdf", "hostile.pdf")}
    finally:
        shutil.rmtree(root)

    assert ours["pages"] == baseline["pages"] == args.pages, (ours, baseline)
    rate, base_rate = ours["pages"] / ours["seconds"], baseline["pages"] / baseline["seconds"]
    per_1000 = (ours["peak_mb"] - ours_tenth["peak_mb"]) / (args.pages - args.pages // 10) * 1000
    unstopped_s = probe["seconds"] / probe["pages"] * args.hostile_pages
    table = [
        f"| {args.pages:,}-page book | wall s | pages/s | ratio vs baseline | peak MB | memory ratio |",
        "|---|---:|---:|---:|---:|---:|",
        f"| plain pypdf (baseline) | {baseline['seconds']:.1f} | {base_rate:.1f} | 1.00 | "
        f"{baseline['peak_mb']:.0f} | 1.00 |",
        f"| docqa ingest, extraction process | {ours['seconds']:.1f} | {rate:.1f} | {rate / base_rate:.2f} | "
        f"{ours['peak_mb']:.0f} | {ours['peak_mb'] / baseline['peak_mb']:.2f} |",
        f"| docqa ingest, calling process (records) | | | | {ours['parent_peak_mb']:.0f} | "
        f"{ours['parent_peak_mb'] / baseline['peak_mb']:.2f} |",
    ]
    body = (
        f"## Ingest: a {args.pages:,}-page PDF and a hostile one (`bench/ingest_large.py`)\n\n"
        f"The book: {args.pages} pages of dense text ({ours['chars'] / 1e6:.1f} M characters extracted, "
        f"{sizes['book.pdf'] / 2**20:.1f} MB file). Baseline: plain pypdf extracting every page in a fresh "
        "process, same run. docqa: `ingest_documents` with default settings (an extraction process under "
        "the time and memory limits, hidden-text scan, cleaning, normalisation, store entry, records).\n\n"
        + "\n".join(table)
        + "\n\n"
        f"Memory grows with the text, not without bound: the extraction process peaked at "
        f"{ours_tenth['peak_mb']:.0f} MB on {args.pages // 10} pages and {ours['peak_mb']:.0f} MB on "
        f"{args.pages}, about {per_1000:.0f} MB per 1,000 dense pages; `ingest.document_memory_limit_mb` "
        "caps it (a document over the cap fails alone).\n\n"
        f"The hostile PDF: {sizes['hostile.pdf'] / 1024:.0f} KB, {args.hostile_pages} pages sharing one "
        f"compressed content stream, {probe['seconds'] / probe['pages']:.1f} s a page for plain pypdf, so "
        f"about {unstopped_s / 60:.0f} minutes unstopped. With `ingest.document_time_limit_s="
        f"{args.hostile_limit:g}` docqa stopped it after {stopped['seconds']:.1f} s (process start "
        f'included), while a good document beside it was ingested; reason: "{stopped["reason"]}".\n\n'
        f"Command: `{command_line('bench/ingest_large.py')}`"
    )
    write_section("ingest_large", body)
    conditions = {"pages": args.pages, "chars_per_page": round(ours["chars"] / ours["pages"])}
    record_figures(
        "ingest_large",
        command_line("bench/ingest_large.py"),
        {
            "ingest.cpu.large-document": {
                "stage": "ingest",
                "metric": "pages_per_s",
                "value": round(rate, 1),
                "device_kind": "cpu",
                "model": "pypdf",
                "conditions": {**conditions, "processes": 1},
                "note": "one 2,000-page document of dense text, ingest_documents with default settings",
            }
        },
    )
    print(body)


if __name__ == "__main__":
    main()
