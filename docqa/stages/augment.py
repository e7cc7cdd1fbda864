"""Knowledge augmentation: the text pretraining reads besides the chunks, made per chunk and accounted for.

For every pretrained chunk (training and knowledge chunks alike: pretraining reads both), up to
``augment.versions_per_chunk`` rewrites, the kinds taken in turn, by the rules (offline) or by the
synthesis LLM (:mod:`docqa.augmentation`). With ``augment.mix_qa`` the SFT pairs are added too (mixed
training), which pretraining writes as SFT shows them (:func:`read_augmented`). Knowledge and control
pairs never are.

Rewrites are stored per chunk under a key of what makes them (backend identity, kinds, versions, seed),
so a new document costs only its own chunks' rewrites. Every rewrite is checked against the held-out
pairs (:func:`docqa.synthesis.contamination.contaminated_rewrites`): one that carries a knowledge or
control question, or wording of its answer that its own chunk does not hold, is removed, so the
questions stay the same whatever the recipe, and the removals are reported.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

from docqa.augmentation import llm as llm_prompts
from docqa.augmentation.rules import RULES_VERSION, rewrite
from docqa.hashing import json_digest, rows_digest
from docqa.outputs import AUGMENT_TEXTS_FILE, AugmentOutput, chunks_file, qa_file
from docqa.progress import Progress
from docqa.prompting import qa_text
from docqa.settings import AugmentSettings, ModelSettings, SynthesizeSettings
from docqa.split import PRETRAIN_SIDES
from docqa.synthesis import ChatClient, make_chat_client
from docqa.synthesis.contamination import contaminated_rewrites
from docqa.workspace import new_tmp_dir, publish_dir, read_json, write_json_atomic, write_jsonl_atomic

ID_CHARS = 16
RULE_ONLY_KINDS = ("shuffled",)
TEXT_COLUMNS = ("text_id", "chunk_id", "doc_id", "source", "kind", "version", "text", "question", "answer",
                "backend", "model", "prompt_version")  # fmt: skip
FAILED, EMPTY, CONTAMINATED = "failed", "empty", "contaminated"


class AugmentError(RuntimeError):
    """The augmentation cannot proceed; the message says why and what to do."""


def planned(settings: AugmentSettings) -> list[tuple[int, str]]:
    """``(version, kind)`` of every rewrite a chunk gets: the kinds taken in turn."""
    return [(v, settings.kinds[v % len(settings.kinds)]) for v in range(settings.versions_per_chunk)]


def maker(kind: str, settings: AugmentSettings) -> str:
    """Who makes this kind: ``rules`` or ``llm``."""
    return "rules" if settings.backend == "rules" or kind in RULE_ONLY_KINDS else "llm"


def identity(settings: AugmentSettings, client: ChatClient | None) -> dict[str, str]:
    """What the per-chunk store key and each rewrite's lineage name: the rules' and the prompts' versions."""
    found = {"rules": RULES_VERSION, "seed": str(settings.seed)}
    if client is not None:
        found.update({f"llm_{k}": v for k, v in client.identity().items()})
        found["prompt_version"] = llm_prompts.PROMPT_VERSION
    return found


def augment(
    chunks_path: Path,
    qa_path: Path,
    out_root: Path,
    store_dir: Path,
    settings: AugmentSettings,
    synthesize: SynthesizeSettings,
    client: ChatClient | None = None,
) -> AugmentOutput:
    """Rewrites of every pretrained chunk and the SFT pairs as text, checked against the held-out pairs."""
    uses_llm = any(maker(kind, settings) == "llm" for _, kind in planned(settings))
    if uses_llm and client is None:
        client = make_chat_client(synthesize)
    who = identity(settings, client if uses_llm else None)
    key = json_digest({"identity": who, "language": synthesize.language})[:ID_CHARS]
    frame = pd.read_parquet(chunks_file(chunks_path))
    chunks = frame[frame["split"].isin(PRETRAIN_SIDES)].to_dict("records")
    made, requested, failed_reasons = _rewrites(chunks, settings, synthesize, client, store_dir / key, who)

    rows, accounting = [], []
    for chunk in chunks:
        record = {"chunk_id": chunk["chunk_id"], "doc_id": chunk["doc_id"], "split": chunk["split"],
                  "planned": settings.versions_per_chunk, "made": 0, FAILED: 0, EMPTY: 0, CONTAMINATED: 0,
                  "kept": 0}  # fmt: skip
        for version, kind in planned(settings):
            text = made.get((chunk["chunk_id"], version))
            if text is None:
                record[FAILED] += 1
            elif not text:
                record[EMPTY] += 1
            else:
                record["made"] += 1
                rows.append(_row(chunk, "rewrite", kind, version, text, maker(kind, settings), who))
        accounting.append(record)

    held_out = [
        (split, q, a)
        for split in ("knowledge", "eval")
        for q, a in pd.read_parquet(qa_file(qa_path, split))[["question", "answer"]].itertuples(index=False)
    ]
    source_text = {chunk["chunk_id"]: chunk["text"] for chunk in chunks}
    check = contaminated_rewrites(
        [(row["text_id"], row["text"], source_text[row["chunk_id"]]) for row in rows],
        held_out,
        synthesize.decontamination_ngram,
    )
    removed = set(check.removed_indices)
    by_chunk = {record["chunk_id"]: record for record in accounting}
    for index in removed:
        by_chunk[rows[index]["chunk_id"]][CONTAMINATED] += 1
    rows = [row for i, row in enumerate(rows) if i not in removed]
    for row in rows:
        by_chunk[row["chunk_id"]]["kept"] += 1
    if settings.mix_qa:
        train = pd.read_parquet(qa_file(qa_path, "train"))
        for index, pair in enumerate(train.to_dict("records")):
            text = f"Question: {pair['question']}\nAnswer: {pair['answer']}"  # how people read it
            chunk = {"chunk_id": pair["chunk_id"], "doc_id": pair["doc_id"]}
            row = _row(chunk, "qa", "qa", index, text, "synthesis", who)
            rows.append({**row, "question": pair["question"], "answer": pair["answer"]})

    summary = {
        "chunks": len(chunks),
        "rewrites_planned": len(chunks) * settings.versions_per_chunk,
        "rewrites_made": sum(r["made"] for r in accounting),
        "rewrites_failed": sum(r[FAILED] for r in accounting),
        "rewrites_empty": sum(r[EMPTY] for r in accounting),
        "rewrites_contaminated": len(removed),
        "rewrites_kept": sum(r["kept"] for r in accounting),
        "qa_texts": sum(row["source"] == "qa" for row in rows),
        "kept_by_kind": dict(Counter(row["kind"] for row in rows)),
        "requests": requested,
        "failure_reasons": dict(Counter(failed_reasons)),
        "identity": who,
        "store_key": key,
    }
    return _publish(rows, accounting, summary, check.model_dump(), out_root)


def _rewrites(
    chunks: list[dict],
    settings: AugmentSettings,
    synthesize: SynthesizeSettings,
    client: ChatClient | None,
    store: Path,
    who: dict[str, str],
) -> tuple[dict[tuple[str, int], str], int, list[str]]:
    """Every rewrite, from the store or made now: ``{(chunk_id, version): text}`` (absent: failed)."""
    made: dict[tuple[str, int], str] = {}
    from_store: set[tuple[str, int]] = set()
    pending: list[tuple[dict, int, str]] = []
    for chunk in chunks:
        stored = _load(store, chunk)
        for version, kind in planned(settings):
            if stored is not None and str(version) in stored:
                made[(chunk["chunk_id"], version)] = stored[str(version)]
                from_store.add((chunk["chunk_id"], version))
            elif maker(kind, settings) == "rules":
                seed = settings.seed * 1000 + version
                made[(chunk["chunk_id"], version)] = rewrite(
                    kind, chunk["text"], chunk["doc_title"] or "", seed
                )
            else:
                pending.append((chunk, version, kind))
    reasons: list[str] = []
    if pending:
        assert client is not None
        progress = Progress("augment · rewrites", len(pending), "rewrites")
        requests = [
            llm_prompts.rewrite_request(
                f"{chunk['chunk_id']}:{version}",
                kind,
                chunk["text"],
                chunk["doc_title"] or "",
                synthesize.language,
            )
            for chunk, version, kind in pending
        ]
        for reply in client.complete(requests):
            progress.advance()
            chunk_id, version = reply.request_id.rsplit(":", 1)
            if reply.status == "ok" and reply.content is not None:
                made[(chunk_id, int(version))] = llm_prompts.read_rewrite(reply.content)
            else:
                reasons.append(reply.reason or "no reply")
        progress.close(f"{len(reasons)} failed")
    for chunk in chunks:  # only the chunks that got a rewrite now: the rest are stored already
        done = [v for v, _ in planned(settings) if (chunk["chunk_id"], v) in made]
        if any((chunk["chunk_id"], v) not in from_store for v in done):
            _save(store, chunk, {str(v): made[(chunk["chunk_id"], v)] for v in done}, who)
    return made, len(pending), reasons


def _load(store: Path, chunk: dict) -> dict[str, str] | None:
    path = store / f"{chunk['chunk_id']}.json"
    if not path.is_file():
        return None
    try:
        record = read_json(path)
    except ValueError as err:
        raise AugmentError(f"store record {path} is unreadable ({err}); delete it to make it again") from err
    return record["rewrites"] if record.get("text_digest") == json_digest(chunk["text"]) else None


def _save(store: Path, chunk: dict, texts: dict[str, str], who: dict[str, str]) -> None:
    record = {"text_digest": json_digest(chunk["text"]), "identity": who, "rewrites": texts}
    write_json_atomic(store / f"{chunk['chunk_id']}.json", record)


def _row(chunk: dict, source: str, kind: str, version: int, text: str, by: str, who: dict[str, str]) -> dict:
    return {
        "text_id": f"{chunk['chunk_id']}:{source}:{version}",
        "chunk_id": chunk["chunk_id"],
        "doc_id": chunk["doc_id"],
        "source": source,
        "kind": kind,
        "version": version,
        "text": text,
        "question": None,  # SFT pairs only: pretraining writes them as SFT shows them (docqa.prompting)
        "answer": None,
        "backend": by,
        "model": who.get("llm_model", "rules") if by == "llm" else ("rules" if by == "rules" else "pairs"),
        "prompt_version": who.get("prompt_version", "") if by == "llm" else who["rules"],
    }


def _publish(
    rows: list[dict], accounting: list[dict], summary: dict, contamination: dict, out_root: Path
) -> AugmentOutput:
    texts_digest = rows_digest(rows)
    digest = json_digest({"texts": texts_digest, "accounting": accounting})
    tmp = new_tmp_dir(out_root)
    frame = pd.DataFrame({name: [row[name] for row in rows] for name in TEXT_COLUMNS})
    frame.to_parquet(tmp / AUGMENT_TEXTS_FILE, index=False)
    write_jsonl_atomic(tmp / "chunk_accounting.jsonl", accounting)
    write_json_atomic(tmp / "contamination.json", contamination)
    write_json_atomic(tmp / "summary.json", {"digest": digest, "texts_digest": texts_digest, **summary})
    final = publish_dir(tmp, out_root / digest[:ID_CHARS])
    return AugmentOutput(
        path=str(final),
        digest=digest,
        texts_digest=texts_digest,
        **{name: summary[name] for name in AugmentOutput.model_fields if name in summary},
    )


def read_augmented(path: Path | str | None, tokenizer, model: ModelSettings) -> tuple[list[str], list[str]]:
    """What an augmentation folder adds to pretraining (nothing for no folder): (rewrites, SFT pairs).

    The pairs are written as SFT and evaluation give them (the chat template's turns), so that mixed
    training teaches the very format the knowledge questions are asked in."""
    if path is None:
        return [], []
    frame = pd.read_parquet(Path(path) / AUGMENT_TEXTS_FILE)
    rewrites = list(frame.loc[frame["source"] == "rewrite", "text"])
    pairs = frame[frame["source"] == "qa"]
    return rewrites, [
        qa_text(tokenizer, q, a, model) for q, a in zip(pairs.question, pairs.answer, strict=True)
    ]
