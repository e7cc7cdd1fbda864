"""Question–answer pairs for every chunk, with lineage to the chunk and page, and yield figures.

Each chunk's backend result is kept in a per-chunk store keyed by the backend identity and the
settings that change replies, so a re-run, or a run after new documents arrive, asks the backend only
about chunks it has not answered yet. Replies that came (``ok`` or ``unparsed``) are stored; requests
that got no reply (``failed``) are not, so the next run retries them.

Pairs are filtered (too short, answer too long, question about "the passage", duplicate question) with
every rejection counted by reason; the output folder holds ``qa_train.parquet``, ``qa_eval.parquet``
(split inherited from the chunk's document), ``raw_replies.jsonl`` (every reply, readable or not) and
``summary.json`` (yield and coverage per document).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import datasets
import pandas as pd

from docqa.hashing import json_digest, rows_digest
from docqa.outputs import SynthesizeOutput, qa_file
from docqa.settings import SynthesizeSettings
from docqa.synthesis import Backend, ChunkRequest, ChunkResult, QAPair, make_backend
from docqa.workspace import (
    new_tmp_dir,
    publish_dir,
    read_json,
    write_json_atomic,
    write_text_atomic,
)

SPLITS = ("train", "eval")
CHUNK_COLUMNS = ("chunk_id", "doc_id", "doc_title", "page_start", "page_end", "text", "split")
QA_COLUMNS = (
    "question", "answer", "chunk_id", "doc_id", "doc_title", "page_start", "page_end", "split",
    "backend", "model", "prompt_version", "reply_id",
)  # fmt: skip
QA_FEATURES = datasets.Features(
    {name: datasets.Value("int64" if name in ("page_start", "page_end") else "string") for name in QA_COLUMNS}
)
# Left out of the store key: the timeout changes no reply, and the length minimums are the stage's
# own filters (a backend that applies them while generating puts them in its identity), so changing
# them does not send every chunk to an LLM server again.
UNKEYED_SETTINGS = {"request_timeout_s", "min_question_chars", "min_answer_chars"}
ANSWER_LENGTH_SLACK = 1.5  # answers up to max_answer_words × this are kept
ID_CHARS = 16
PASSAGE_REFERENCE = re.compile(
    r"\b(?:the|this|given|above) (?:passage|excerpt|snippet|text above)\b"
    r"|\baccording to the (?:text|author)\b|\bthe author\b",
    re.IGNORECASE,
)


class SynthesisError(RuntimeError):
    """Synthesis produced nothing usable; the message says what to check or change."""


def synthesize_qa(
    chunks_path: Path,
    out_root: Path,
    store_dir: Path,
    settings: SynthesizeSettings,
    backend: Backend | None = None,
) -> SynthesizeOutput:
    """Q&A for every chunk of ``chunks_path``; only chunks missing from the store reach the backend."""
    backend = backend or make_backend(settings)
    chunks = read_chunks(chunks_path)
    identity = backend.identity()
    key = store_key(identity, settings)
    results, requested = collect_results(chunks, backend, store_dir / key, identity)
    rows, rejected = accepted_rows(chunks, results, identity, key, settings)
    summary = summarize(chunks, results, rows, rejected, identity, key)
    check_usable(summary, results, settings)
    return publish(rows, results, summary, key, out_root, requested=requested)


def read_qa(path: Path, split: str) -> datasets.Dataset:
    """``qa_train`` or ``qa_eval`` of a published synthesis folder."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    frame = pd.read_parquet(qa_file(path, split))
    return datasets.Dataset.from_pandas(frame, features=QA_FEATURES, preserve_index=False)


# --- input --------------------------------------------------------------------------------------


def read_chunks(chunks_path: Path) -> list[dict]:
    frame = pd.read_parquet(chunks_path)
    missing = [name for name in CHUNK_COLUMNS if name not in frame.columns]
    if missing:
        raise SynthesisError(
            f"{chunks_path} lacks the chunk columns {missing}; is it the chunk stage's output?"
        )
    chunks = frame[list(CHUNK_COLUMNS)].to_dict("records")
    if not chunks:
        raise SynthesisError(f"{chunks_path} holds no chunk: nothing to synthesise from")
    bad_splits = sorted({str(c["split"]) for c in chunks} - set(SPLITS))
    if bad_splits:
        raise SynthesisError(f"{chunks_path}: unknown split values {bad_splits}; expected {SPLITS}")
    ids = Counter(c["chunk_id"] for c in chunks)
    repeated = [chunk_id for chunk_id, n in ids.items() if n > 1]
    if repeated:
        raise SynthesisError(f"{chunks_path}: chunk ids must be unique, repeated: {repeated[:5]}")
    return chunks


def store_key(identity: dict[str, str], settings: SynthesizeSettings) -> str:
    """Backend identity plus every setting that may change a reply."""
    keyed_settings = settings.model_dump(exclude=UNKEYED_SETTINGS)
    return json_digest({"identity": identity, "settings": keyed_settings})[:ID_CHARS]


# --- per-chunk store ----------------------------------------------------------------------------


def _request(chunk: dict) -> ChunkRequest:
    return ChunkRequest(chunk_id=chunk["chunk_id"], text=chunk["text"], doc_title=chunk["doc_title"] or "")


def load_stored(store: Path, request: ChunkRequest) -> ChunkResult | None:
    """The stored result for this exact request (same text and title), or None."""
    path = store / f"{request.chunk_id}.json"
    if not path.is_file():
        return None
    try:
        record = read_json(path)
        if record["request_digest"] != json_digest(request):
            return None  # same chunk id, other title: ask again
        return ChunkResult.model_validate(record["result"])
    except (KeyError, TypeError, ValueError) as err:  # JSON and pydantic errors are ValueErrors
        raise SynthesisError(f"store record {path} is unreadable ({err}); delete it to regenerate") from err


def save_stored(store: Path, request: ChunkRequest, result: ChunkResult, identity: dict[str, str]) -> None:
    record = {"request_digest": json_digest(request), "identity": identity, "result": result.model_dump()}
    write_json_atomic(store / f"{request.chunk_id}.json", record)


def collect_results(
    chunks: list[dict], backend: Backend, store: Path, identity: dict[str, str]
) -> tuple[dict[str, ChunkResult], int]:
    """Every chunk's result, from the store or the backend, in chunk order; and the requests made."""
    results: dict[str, ChunkResult] = {}
    pending: dict[str, ChunkRequest] = {}
    for chunk in chunks:
        request = _request(chunk)
        stored = load_stored(store, request)
        if stored is None:
            pending[request.chunk_id] = request
        else:
            results[request.chunk_id] = stored
    for result in backend.generate(list(pending.values())):
        request = pending.get(result.chunk_id)
        if request is None or result.chunk_id in results:
            raise SynthesisError(
                f"backend {identity} returned an unrequested or repeated chunk {result.chunk_id}"
            )
        results[result.chunk_id] = result
        if result.status != "failed":
            save_stored(store, request, result, identity)
    unanswered = [chunk_id for chunk_id in pending if chunk_id not in results]
    if unanswered:
        raise SynthesisError(f"backend {identity} returned no result for {len(unanswered)} chunk(s)")
    return {c["chunk_id"]: results[c["chunk_id"]] for c in chunks}, len(pending)


# --- filtering and rows -------------------------------------------------------------------------


def normalised_question(question: str) -> str:
    return " ".join(question.casefold().split())


def rejection(pair: QAPair, settings: SynthesizeSettings, seen: set[str]) -> str | None:
    """Why a pair is rejected, or None to keep it (``seen`` holds the questions kept so far)."""
    if len(pair.question.strip()) < settings.min_question_chars:
        return "question_too_short"
    if len(pair.answer.strip()) < settings.min_answer_chars:
        return "answer_too_short"
    if len(pair.answer.split()) > settings.max_answer_words * ANSWER_LENGTH_SLACK:
        return "answer_too_long"
    if PASSAGE_REFERENCE.search(pair.question):
        return "question_refers_to_passage"
    if normalised_question(pair.question) in seen:
        return "duplicate_question"
    return None


def reply_id(key: str, result: ChunkResult) -> str:
    """Id of a reply record in ``raw_replies.jsonl``; stable while the result comes from the store."""
    content = {
        "key": key,
        "chunk_id": result.chunk_id,
        "status": result.status,
        "raw_reply": result.raw_reply,
    }
    return json_digest(content)[:ID_CHARS]


def accepted_rows(
    chunks: list[dict],
    results: dict[str, ChunkResult],
    identity: dict[str, str],
    key: str,
    settings: SynthesizeSettings,
) -> tuple[list[dict], Counter]:
    """Q&A rows with lineage, in chunk order, and the rejections counted by reason."""
    rows: list[dict] = []
    rejected: Counter = Counter()
    seen: set[str] = set()
    for chunk in chunks:
        result = results[chunk["chunk_id"]]
        for pair in result.pairs:
            reason = rejection(pair, settings, seen)
            if reason is not None:
                rejected[reason] += 1
                continue
            seen.add(normalised_question(pair.question))
            rows.append(_row(pair, chunk, identity, reply_id(key, result)))
    return rows, rejected


def _row(pair: QAPair, chunk: dict, identity: dict[str, str], reply: str) -> dict:
    return {
        "question": pair.question.strip(),
        "answer": pair.answer.strip(),
        "chunk_id": chunk["chunk_id"],
        "doc_id": chunk["doc_id"],
        "doc_title": chunk["doc_title"] or "",
        "page_start": int(chunk["page_start"]),
        "page_end": int(chunk["page_end"]),
        "split": chunk["split"],
        "backend": identity.get("backend", ""),
        "model": identity.get("model", ""),
        "prompt_version": identity.get("prompt_version", ""),
        "reply_id": reply,
    }


# --- summary, checks, output --------------------------------------------------------------------


def summarize(
    chunks: list[dict],
    results: dict[str, ChunkResult],
    rows: list[dict],
    rejected: Counter,
    identity: dict[str, str],
    key: str,
) -> dict:
    """Counts, rejections by reason, and the coverage map: pairs per document, chunks with none."""
    statuses = Counter(results[c["chunk_id"]].status for c in chunks)
    if statuses["ok"] + statuses["unparsed"] + statuses["failed"] != len(chunks):
        raise AssertionError(f"chunk states {dict(statuses)} do not add up to {len(chunks)} chunks")
    pairs_by_chunk = Counter(row["chunk_id"] for row in rows)
    without_pairs = [c["chunk_id"] for c in chunks if not pairs_by_chunk[c["chunk_id"]]]
    pairs_raw = sum(len(results[c["chunk_id"]].pairs) for c in chunks)
    if pairs_raw != len(rows) + sum(rejected.values()):
        raise AssertionError(
            f"{pairs_raw} pairs read but {len(rows)} kept + {sum(rejected.values())} rejected"
        )
    return {
        "identity": identity,
        "store_key": key,
        "chunks": len(chunks),
        "chunks_ok": statuses["ok"],
        "chunks_unparsed": statuses["unparsed"],
        "chunks_failed": statuses["failed"],
        "chunks_without_pairs": len(without_pairs),
        "pairs_raw": pairs_raw,
        "pairs_rejected": sum(rejected.values()),
        "rejected_by_reason": dict(sorted(rejected.items())),
        "qa_train": sum(row["split"] == "train" for row in rows),
        "qa_eval": sum(row["split"] == "eval" for row in rows),
        "pairs_per_chunk": round(len(rows) / len(chunks), 3),
        "per_document": _per_document(chunks, pairs_by_chunk),
        "chunks_without_pairs_ids": without_pairs,
        "unparsed_reasons": dict(Counter(r.reason for r in results.values() if r.status == "unparsed")),
        "failed_reasons": dict(Counter(r.reason for r in results.values() if r.status == "failed")),
    }


def _per_document(chunks: list[dict], pairs_by_chunk: Counter) -> dict[str, dict]:
    documents: dict[str, dict] = {}
    for chunk in chunks:
        entry = documents.setdefault(
            chunk["doc_id"],
            {
                "doc_title": chunk["doc_title"],
                "split": chunk["split"],
                "chunks": 0,
                "chunks_with_pairs": 0,
                "pairs": 0,
            },
        )
        pairs = pairs_by_chunk[chunk["chunk_id"]]
        entry["chunks"] += 1
        entry["chunks_with_pairs"] += bool(pairs)
        entry["pairs"] += pairs
    return documents


def check_usable(summary: dict, results: dict[str, ChunkResult], settings: SynthesizeSettings) -> None:
    """Refuse to hand on nothing: every chunk failed, or a split has no pair."""
    if summary["chunks_failed"] == summary["chunks"]:
        first = next(iter(results.values())).reason
        raise SynthesisError(
            f"no chunk got a reply: the server at {settings.base_url} could not be reached or did not "
            f"answer ({summary['chunks']} chunk(s) failed; first reason: {first}). Check that the server "
            "is running and reachable from here, that synthesize.base_url is its OpenAI-compatible root "
            "(usually ending in /v1), that synthesize.model names a model it serves, and that "
            "DOCQA_LLM_API_KEY is set if it needs a key. Failed chunks are not stored: the next run "
            "retries them."
        )
    if not summary["qa_train"] or not summary["qa_eval"]:
        raise SynthesisError(
            f"synthesis kept {summary['qa_train']} training and {summary['qa_eval']} held-out Q&A pairs "
            f"from {summary['chunks']} chunks ({summary['chunks_unparsed']} unparsed, "
            f"{summary['chunks_failed']} failed, rejected: {summary['rejected_by_reason']}); both splits "
            "need pairs. Add documents (or more prose), raise split.eval_fraction or name held-out files in "
            "split.eval_documents, raise synthesize.pairs_per_chunk, or use an LLM backend "
            "(synthesize.backend=openai) if the extractive rules found few statements."
        )


def _reply_record(key: str, result: ChunkResult) -> dict:
    return {
        "reply_id": reply_id(key, result),
        "chunk_id": result.chunk_id,
        "status": result.status,
        "reason": result.reason,
        "attempts": result.attempts,
        "latency_s": round(result.latency_s, 4),
        "raw_reply": result.raw_reply,
    }


def publish(
    rows: list[dict],
    results: dict[str, ChunkResult],
    summary: dict,
    key: str,
    out_root: Path,
    requested: int,
) -> SynthesizeOutput:
    """Write the folder under a temporary name and publish it under its content digest."""
    digest = rows_digest(rows)
    tmp = new_tmp_dir(out_root)
    for split in SPLITS:
        split_rows = [row for row in rows if row["split"] == split]
        dataset = datasets.Dataset.from_list(split_rows, features=QA_FEATURES)
        dataset.to_parquet(str(qa_file(tmp, split)))
    replies = "".join(json.dumps(_reply_record(key, r), ensure_ascii=False) + "\n" for r in results.values())
    write_text_atomic(tmp / "raw_replies.jsonl", replies)
    write_json_atomic(tmp / "summary.json", {"digest": digest, **summary})
    final = publish_dir(tmp, out_root / digest[:ID_CHARS])
    counts = {name: summary[name] for name in SynthesizeOutput.model_fields if name in summary}
    return SynthesizeOutput(
        path=str(final), digest=digest, requests=requested, reused=summary["chunks"] - requested, **counts
    )
