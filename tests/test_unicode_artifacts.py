"""Any text a PDF can carry survives every artifact docqa writes and reads back: document records, chunk and
Q&A tables, raw replies, accounting, generations, reports and store records. Property-based: hypothesis
pushes arbitrary text, every line-break class that ``str.splitlines`` knows among it, through each writer
and its reader."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from docqa.figures import (
    EvaluationFigures,
    Forgetting,
    KnowledgeGain,
    Perplexities,
)
from docqa.outputs import DocumentRecord, Generation, PageText, chunks_file, read_documents, read_generations
from docqa.report import DocumentReport, RunReport
from docqa.settings import SynthesizeSettings
from docqa.stages import chunk, evaluate, ingest
from docqa.stages.synthesize import Checkers, read_qa, synthesize_qa
from docqa.synthesis import ChunkRequest, ChunkResult, QAPair
from docqa.workspace import jsonl_line, read_json, read_jsonl, write_json_atomic, write_jsonl_atomic

# every character str.splitlines() breaks on; JSON escapes the control ones, not U+0085, U+2028, U+2029
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
TEXT = st.text(
    alphabet=st.one_of(st.characters(blacklist_categories=("Cs",)), st.sampled_from(LINE_BREAKS)),
    max_size=40,
)
EXAMPLES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="docqa-unicode-"))


@EXAMPLES
@given(st.lists(TEXT, min_size=1, max_size=5))
def test_json_lines_round_trip_and_stay_one_record_a_line(texts):
    records = [{"text": text, "n": i} for i, text in enumerate(texts)]
    path = folder() / "records.jsonl"
    write_jsonl_atomic(path, records)
    assert read_jsonl(path) == records
    written = path.read_text(encoding="utf-8")
    assert written.splitlines() == written.split("\n")[:-1]  # a splitlines-based reader splits right too
    assert all(jsonl_line(r).count("\n") == 1 for r in records)


@EXAMPLES
@given(TEXT, st.lists(TEXT, min_size=1, max_size=3))
def test_store_records_and_reports_round_trip(title, pages):
    root = folder()
    write_json_atomic(root / "record.json", {"title": title, "pages": pages})
    assert read_json(root / "record.json") == {"title": title, "pages": pages}
    report = RunReport(flow_run_id="f", flow_run_name="r", recipe="x", workspace=str(root), docs=title)
    report.documents = [
        DocumentReport(path=title, doc_id="d", sha256="s", status="failed", reason=pages[0], pages=1,
                       chunks=0, split=None, title=title)
    ]  # fmt: skip
    written = report.write(root)
    assert RunReport.model_validate_json(written.read_text(encoding="utf-8")) == report


def _document(title: str, pages: list[str]) -> DocumentRecord:
    return DocumentRecord(
        doc_id="0" * 16, path=f"/docs/{len(title)}.pdf", name="a.pdf", sha256="0" * 64, title=title,
        status="ok", reason=None, n_pages=len(pages),
        pages=[PageText(page=i + 1, text=text) for i, text in enumerate(pages)], low_text_pages=0,
    )  # fmt: skip


@EXAMPLES
@given(TEXT, st.lists(TEXT, min_size=1, max_size=3))
def test_ingested_documents_round_trip(title, pages):
    records = [_document(title, pages), _document(title[::-1], pages[::-1])]
    out = ingest._publish(records, folder(), extracted=2, reused=0)
    assert read_documents(Path(out.path)) == records


@EXAMPLES
@given(st.lists(TEXT, min_size=1, max_size=4))
def test_chunk_tables_round_trip(texts):
    rows = [
        {"chunk_id": f"c{i}", "doc_id": "d", "doc_title": text, "page_start": 1, "page_end": 1, "index": i,
         "text": text, "n_tokens": len(text), "split": "train"}
        for i, text in enumerate(texts)
    ]  # fmt: skip
    counts = dict.fromkeys(("duplicate_documents", "duplicate_chunks", "short_chunks_dropped", "chunked"), 0)
    out = chunk._publish(rows, {"d": {"split": "train", "chunks": len(rows)}}, counts, folder(), 1)
    back = pd.read_parquet(chunks_file(Path(out.path)))
    assert list(back["text"]) == texts and list(back["doc_title"]) == texts


class EchoBackend:
    """A test double: each chunk's text comes back as the reply, the question and the answer."""

    def identity(self) -> dict[str, str]:
        return {"backend": "echo", "model": "echo", "prompt_version": "1"}

    def generate(self, requests: list[ChunkRequest]):
        for request in requests:
            pair = QAPair(question=f"What is {request.text}?", answer=request.text)
            yield ChunkResult(chunk_id=request.chunk_id, status="ok", pairs=[pair], raw_reply=request.text,
                              attempts=1, latency_s=0.0)  # fmt: skip


LENIENT = SynthesizeSettings(
    min_question_chars=1, min_answer_chars=1, min_answer_overlap=0, max_repetition=1, check_language=False,
    near_duplicate_threshold=1.0, chunk_near_duplicate_threshold=1.0,
)  # fmt: skip


@EXAMPLES
@given(st.lists(TEXT, min_size=2, max_size=4))
def test_synthesis_outputs_round_trip(texts):
    root = folder()
    texts = [f"Term {i} {text}" for i, text in enumerate(texts)]  # every chunk distinct, none empty
    rows = [
        {"chunk_id": f"c{i}", "doc_id": "d", "doc_title": text, "page_start": 1, "page_end": 1, "text": text,
         "split": ("train", "knowledge", "eval")[i % 3]}
        for i, text in enumerate(texts)
    ]  # fmt: skip
    pd.DataFrame(rows).to_parquet(root / "chunks.parquet")
    checkers = Checkers(embedder=None, language=None)
    out = synthesize_qa(
        root / "chunks.parquet",
        root / "out",
        root / "store",
        LENIENT,
        backend=EchoBackend(),
        checkers=checkers,
    )
    published = Path(out.path)
    assert sorted(r["raw_reply"] for r in read_jsonl(published / "raw_replies.jsonl")) == sorted(texts)
    assert len(read_jsonl(published / "chunk_accounting.jsonl")) == len(texts)
    kept = [row for split in ("train", "knowledge", "eval") for row in read_qa(published, split).to_list()]
    assert kept and all(
        row["answer"] in {t.strip() for t in texts} and row["doc_title"] in texts for row in kept
    )


@EXAMPLES
@given(st.lists(st.tuples(TEXT, TEXT, TEXT), min_size=1, max_size=4))
def test_generations_round_trip(triples):
    generations = [
        Generation(set="knowledge", question=q, reference=r, answers={"base": a, "final": a[::-1]},
                   doc_title=q, chunk_id="c")
        for q, r, a in triples
    ]  # fmt: skip
    figures = EvaluationFigures(
        sets={}, omitted={}, open_book={}, rag_top_k=1, rag_recovery=None, decontamination={},
        knowledge_gain=KnowledgeGain(
            value=None, controlled=False, knowledge=None, control=None, after_pretraining=None,
            standard_error=None, interval_95=None, label="x",
        ),
        perplexity=Perplexities(trained_text={}, heldout_text=None, trained_tokens=0, heldout_tokens=0),
        forgetting=Forgetting(base=1, pretrained=1, tuned=1, ratio=1, max_ratio=1, passed=True, source="s",
                              tokens=2),
    )  # fmt: skip
    out = evaluate._publish(figures, {}, generations, folder(), 0.0)
    assert read_generations(Path(out.path)) == generations
    assert json.loads((Path(out.path) / "metrics.json").read_text())["rag_top_k"] == 1
