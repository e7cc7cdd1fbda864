"""Chunking sized in tokens of the model's tokenizer, the train/eval split by document, and dedup.

The output holds content only (documents by their content id, never by path), so moving or renaming
the documents' folder leaves its digest, and everything trained from it, unchanged.

Each chunk keeps its document id, page span and a stable id derived from its content. Documents with
identical bytes and chunks with identical text are counted once and reported as duplicates (the seed
project trained on one book four times without noticing). Chunking is cached per document, so a new
document costs only its own chunks.
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path

from datasets import Dataset
from langchain_text_splitters import RecursiveCharacterTextSplitter

from docqa.hashing import json_digest, rows_digest, sha256_bytes, sha256_file
from docqa.injection import instruction_markers
from docqa.outputs import CHUNK_DOCUMENTS_FILE, ChunkOutput, DocumentRecord, chunks_file, read_documents
from docqa.settings import ChunkSettings, SplitSettings
from docqa.split import chunk_sides, document_sides
from docqa.workspace import (
    new_tmp_dir,
    publish_dir,
    read_json,
    write_json_atomic,
    write_text_atomic,
)

PAGE_SEPARATOR = "\n\n"
CHUNK_ID_CHARS = 16
EXCERPT_CHARS = 240  # of a flagged chunk, in the report


class EmptySplitError(ValueError):
    """The split left no training chunk."""


def chunk_id(text: str) -> str:
    return sha256_bytes(" ".join(text.split()).encode())[:CHUNK_ID_CHARS]


def make_splitter(tokenizer, settings: ChunkSettings) -> RecursiveCharacterTextSplitter:
    return RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
        tokenizer,
        chunk_size=settings.chunk_tokens,
        chunk_overlap=settings.overlap_tokens,
        add_start_index=True,
    )


def chunk_document(doc: DocumentRecord, tokenizer, settings: ChunkSettings) -> tuple[list[dict], int]:
    """Chunks of one document with their page spans; returns (chunks, short pieces dropped)."""
    texts = [page.text for page in doc.pages]
    full_text = PAGE_SEPARATOR.join(texts)
    page_starts, offset = [], 0
    for text in texts:
        page_starts.append(offset)
        offset += len(text) + len(PAGE_SEPARATOR)
    chunks, dropped = [], 0
    for piece in make_splitter(tokenizer, settings).create_documents([full_text]):
        text = piece.page_content
        n_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if n_tokens < settings.min_chunk_tokens:
            dropped += 1
            continue
        start = piece.metadata["start_index"]
        first = bisect.bisect_right(page_starts, start) - 1
        last = bisect.bisect_right(page_starts, start + len(text) - 1) - 1
        chunks.append(
            {
                "chunk_id": chunk_id(text),
                "text": text,
                "n_tokens": n_tokens,
                "page_start": doc.pages[first].page,
                "page_end": doc.pages[last].page,
            }
        )
    return chunks, dropped


def _store_key(settings: ChunkSettings, tokenizer_digest: str) -> str:
    return json_digest(
        {"settings": settings, "tokenizer": tokenizer_digest, "code": sha256_file(Path(__file__))}
    )[:12]


def _chunks_of(doc: DocumentRecord, tokenizer, settings: ChunkSettings, store: Path) -> tuple[dict, bool]:
    """Per-document store lookup; returns ({chunks, dropped}, computed_now)."""
    if store.is_file():
        return read_json(store), False
    chunks, dropped = chunk_document(doc, tokenizer, settings)
    entry = {"chunks": chunks, "dropped": dropped}
    write_json_atomic(store, entry)
    return entry, True


def chunk_documents(
    ingest_path: Path,
    tokenizer,
    tokenizer_digest: str,
    out_root: Path,
    store_dir: Path,
    settings: ChunkSettings,
    split: SplitSettings,
) -> ChunkOutput:
    """Chunk every ingested document (new ones only; the rest come from the store), dedup, split.

    Each chunk's ``split``: ``eval`` (a held-out document: the control), ``knowledge`` (a training
    document's chunk whose Q&A is held out of SFT) or ``train`` (see :mod:`docqa.split`)."""
    documents = [d for d in read_documents(ingest_path) if d.status == "ok"]
    distinct = [d for d in documents if d.duplicate_of is None]
    sides = document_sides([(d.name, d.sha256) for d in distinct], split)
    key = _store_key(settings, tokenizer_digest)
    rows: list[dict] = []
    seen: set[str] = set()
    counts = {
        "duplicate_documents": len(documents) - len(distinct),
        "duplicate_chunks": 0,
        "short_chunks_dropped": 0,
        "chunked": 0,
    }
    per_document: dict[str, dict] = {}
    for doc in distinct:
        entry, computed = _chunks_of(doc, tokenizer, settings, store_dir / f"{doc.sha256}-{key}.json")
        counts["chunked"] += computed
        counts["short_chunks_dropped"] += entry["dropped"]
        doc_split = sides[doc.sha256]
        kept = 0
        for chunk in entry["chunks"]:
            if chunk["chunk_id"] in seen:
                counts["duplicate_chunks"] += 1
                continue
            seen.add(chunk["chunk_id"])
            kept += 1
            rows.append(
                {
                    "chunk_id": chunk["chunk_id"],
                    "doc_id": doc.doc_id,
                    "doc_title": doc.title,
                    "page_start": chunk["page_start"],
                    "page_end": chunk["page_end"],
                    "index": kept - 1,
                    "text": chunk["text"],
                    "n_tokens": chunk["n_tokens"],
                    "split": doc_split,
                }
            )
        per_document[doc.doc_id] = {"split": doc_split, "chunks": kept, "knowledge_chunks": 0}
    rows, flagged = flag_instruction_like(rows, settings.drop_instruction_like)
    counts["instruction_like_dropped"] = sum(f["dropped"] for f in flagged)
    for entry in flagged:
        if entry["dropped"]:
            per_document[entry["doc_id"]]["chunks"] -= 1
    knowledge = chunk_sides([r["chunk_id"] for r in rows if r["split"] == "train"], split)
    for row in rows:
        if knowledge.get(row["chunk_id"]) == "knowledge":
            row["split"] = "knowledge"
            per_document[row["doc_id"]]["knowledge_chunks"] += 1
    _check_split(rows, per_document, split)
    return _publish(rows, per_document, counts, out_root, len(per_document), flagged)


def flag_instruction_like(rows: list[dict], drop: bool) -> tuple[list[dict], list[dict]]:
    """Each row with its ``instruction_markers`` (``docqa.injection``); the flagged chunks listed, and
    left out when ``drop``."""
    kept, flagged = [], []
    for row in rows:
        markers = instruction_markers(row["text"])
        row["instruction_markers"] = markers
        if markers:
            flagged.append(
                {
                    "chunk_id": row["chunk_id"],
                    "doc_id": row["doc_id"],
                    "doc_title": row["doc_title"],
                    "page_start": row["page_start"],
                    "page_end": row["page_end"],
                    "markers": markers,
                    "excerpt": " ".join(row["text"].split())[:EXCERPT_CHARS],
                    "dropped": drop,
                }
            )
        if not (markers and drop):
            kept.append(row)
    return kept, flagged


def _check_split(rows: list[dict], per_document: dict[str, dict], split: SplitSettings) -> None:
    if not any(row["split"] == "train" for row in rows):
        raise EmptySplitError(
            f"no training chunk: of {len(per_document)} document(s) with text, none is left for training "
            f"(split.eval_documents={split.eval_documents}, eval_fraction={split.eval_fraction}). Name fewer "
            "held-out files in split.eval_documents, or add documents with text."
        )


def _publish(
    rows: list[dict],
    per_document: dict[str, dict],
    counts: dict[str, int],
    out_root: Path,
    chunked_documents: int,
    flagged: list[dict] = (),
) -> ChunkOutput:
    digest = rows_digest(rows)
    tmp = new_tmp_dir(out_root)
    Dataset.from_list(rows).to_parquet(str(chunks_file(tmp)))
    summary = {
        "documents": chunked_documents,
        "chunks": len(rows),
        "train_chunks": sum(r["split"] == "train" for r in rows),
        "knowledge_chunks": sum(r["split"] == "knowledge" for r in rows),
        "eval_chunks": sum(r["split"] == "eval" for r in rows),
        "train_documents": sum(d["split"] == "train" for d in per_document.values()),
        "eval_documents": sum(d["split"] == "eval" for d in per_document.values()),
        "duplicate_documents": counts["duplicate_documents"],
        "duplicate_chunks": counts["duplicate_chunks"],
        "short_chunks_dropped": counts["short_chunks_dropped"],
        "instruction_like_chunks": len(flagged),
        "instruction_like_dropped": counts.get("instruction_like_dropped", 0),
    }
    write_json_atomic(tmp / "summary.json", {**summary, "instruction_like": list(flagged)})
    write_text_atomic(tmp / CHUNK_DOCUMENTS_FILE, json.dumps(per_document, indent=2))
    final = publish_dir(tmp, out_root / digest[:16])
    return ChunkOutput(
        path=str(final),
        digest=digest,
        chunked=counts["chunked"],
        reused=chunked_documents - counts["chunked"],
        **summary,
    )
