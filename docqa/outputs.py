"""What stages hand each other, and readers of their published folders.

Kept free of heavy imports (torch, transformers, datasets) on purpose: a fully cached run only reads
these, and should not pay seconds of imports for libraries it never calls.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel

from docqa.figures import EvaluateKeyFigures, EvaluationFigures, metric_values, stage_figures
from docqa.hashing import json_digest, sha256_file, tree_digest
from docqa.settings import BootstrapSettings
from docqa.split import ChunkSide
from docqa.workspace import StageOutput, cache_root, jsonl_records, read_json

TOKENIZER_FILES = (
    "tokenizer*",
    "special_tokens_map.json",
    "vocab*",
    "merges.txt",
    "*.model",
    "chat_template*",
)
CHUNKS_FILE = "chunks.parquet"
CHUNK_DOCUMENTS_FILE = "documents.json"
ADAPTER_DIR = "adapter"
LOG_HISTORY_FILE = "log_history.json"
GENERATIONS_FILE = "generations.jsonl"
# the two adapters' names, in the order they stack on the base: in the PEFT model, the package's
# adapters/ folder, the evaluation's model states and MLflow
PRETRAIN_ADAPTER, SFT_ADAPTER = "pretrain", "sft"
ADAPTER_ORDER = (PRETRAIN_ADAPTER, SFT_ADAPTER)


# --- ingest ----------------------------------------------------------------------------------------

DOCUMENTS_FILE = "documents.jsonl"


class PageText(BaseModel):
    page: int  # 1-based
    text: str


class DocumentRecord(BaseModel):
    doc_id: str  # first 16 hex characters of the sha256 of the file's bytes
    path: str
    name: str
    sha256: str
    title: str  # PDF metadata title, else first heading line for .md/.txt, else the file stem
    status: Literal["ok", "failed"]
    reason: str | None  # why it failed, for a user (None when ok)
    n_pages: int  # pages in the file (1 for text files, 0 if unreadable)
    pages: list[PageText]  # cleaned text per page (empty when failed)
    low_text_pages: int  # pages below settings.min_chars_per_page
    hidden_text: dict[str, int] = {}  # characters a reader cannot see, per reason; dropped unless kept
    hidden_text_kept: bool = False
    duplicate_of: str | None = None  # path of an earlier file with identical bytes


class IngestOutput(StageOutput):
    documents: int
    documents_ok: int  # status ok, duplicates included
    documents_failed: int
    documents_duplicate: int
    pages: int  # pages of the ok documents, each duplicate counted once
    documents_with_hidden_text: int  # of the ok documents, each duplicate counted once
    hidden_text_chars: int  # characters a reader cannot see, dropped unless ingest.keep_hidden_text
    extracted: int  # documents extracted in this call
    reused: int  # documents taken from the per-document store
    content_digest: str  # the records without where the files lie: what downstream caches key on

    @property
    def cache_digest(self) -> str:
        return self.content_digest

    def key_figures(self, cached: bool) -> IngestFigures:
        """The report table's figures (a cached stage extracted nothing now)."""
        return IngestFigures(
            documents=self.documents, ok=self.documents_ok, failed=self.documents_failed,
            duplicates=self.documents_duplicate, pages=self.pages, hidden_chars=self.hidden_text_chars,
            extracted_now=0 if cached else self.extracted,
        )  # fmt: skip

    def metrics(self, cached: bool) -> dict[str, float]:
        """The stage run's MLflow metrics."""
        return self.key_figures(cached).model_dump()


class IngestFigures(BaseModel):
    documents: int
    ok: int
    failed: int
    duplicates: int
    pages: int
    hidden_chars: int
    extracted_now: int


def read_documents(path: Path) -> list[DocumentRecord]:
    """The records of a published ingest folder, in input order."""
    text = (path / DOCUMENTS_FILE).read_text(encoding="utf-8")
    return [DocumentRecord.model_validate_json(line) for line in jsonl_records(text)]


# --- the base model ---------------------------------------------------------------------------------


class BaseModelRef(BaseModel):
    """Where the base model is and what it holds (digests feed the cache keys)."""

    path: str  # local folder, or a hub id
    digest: str  # weights + config + tokenizer
    tokenizer_digest: str
    source: str  # "embedded" | "gguf" | "bootstrap" | "local" | "hub"
    embedded: str | None = None  # the model.embedded name of an embedded base
    name: str | None = None  # what the model is called, where known (embedded and GGUF bases)
    license: str | None = None


def describe_base(path_or_id: str, revision: str | None = None, source: str | None = None) -> BaseModelRef:
    """Fingerprint a local folder by content; a hub id by its name and revision."""
    folder = Path(path_or_id)
    if folder.is_dir():
        return BaseModelRef(
            path=str(folder.resolve()),
            digest=tree_digest(folder),
            tokenizer_digest=tree_digest(folder, TOKENIZER_FILES),
            source=source or "local",
        )
    identity = json_digest({"hub": path_or_id, "revision": revision})
    return BaseModelRef(path=path_or_id, digest=identity, tokenizer_digest=identity, source="hub")


def bootstrap_dir(settings: BootstrapSettings) -> Path:
    """Where the bootstrap base for these settings lives, keyed by them and by the builder's source
    (read as a file, so that finding a built base imports no torch)."""
    builder = Path(importlib.util.find_spec("docqa.bootstrap").origin)
    key = json_digest({"settings": settings, "code": sha256_file(builder)})[:16]
    return cache_root() / "bases" / f"tiny-llama-{key}"


# --- chunk ------------------------------------------------------------------------------------------


class ChunkOutput(StageOutput):
    documents: int  # documents that were chunked (ok and not duplicates)
    chunks: int
    train_chunks: int  # pretrained on, Q&A trained on in SFT
    knowledge_chunks: int  # pretrained on, Q&A held out of SFT (the knowledge questions)
    eval_chunks: int  # of held-out documents (the control)
    train_documents: int
    eval_documents: int
    duplicate_documents: int
    duplicate_chunks: int
    short_chunks_dropped: int
    instruction_like_chunks: int  # chunks that read like instructions to a model (docqa.injection)
    instruction_like_dropped: int  # of those, left out (chunk.drop_instruction_like)
    chunked: int  # documents chunked in this call
    reused: int  # documents taken from the per-document store

    def key_figures(self, cached: bool) -> ChunkFigures:
        """The report table's figures (a cached stage chunked nothing now)."""
        return ChunkFigures(
            chunks=self.chunks, train_docs=self.train_documents, eval_docs=self.eval_documents,
            duplicate_chunks=self.duplicate_chunks, short_dropped=self.short_chunks_dropped,
            instruction_like=self.instruction_like_chunks, chunked_now=0 if cached else self.chunked,
        )  # fmt: skip

    def metrics(self, cached: bool) -> dict[str, float]:
        """The stage run's MLflow metrics."""
        return self.key_figures(cached).model_dump()


class ChunkFigures(BaseModel):
    chunks: int
    train_docs: int
    eval_docs: int
    duplicate_chunks: int
    short_dropped: int
    instruction_like: int
    chunked_now: int


def chunks_file(chunk_path: Path) -> Path:
    return Path(chunk_path) / CHUNKS_FILE


CHUNK_COLUMNS = ("chunk_id", "doc_id", "doc_title", "page_start", "page_end", "text", "split")
CHUNK_SIDES = get_args(ChunkSide)  # SFT chunks; knowledge chunks; held-out documents' chunks


def read_chunks(path: Path, splits: tuple[str, ...] | None = None):
    """The chunk stage's chunks as a ``datasets.Dataset`` (a published folder, or its parquet file), or
    those of the given sides (``docqa.split.PRETRAIN_SIDES``: every chunk pretraining reads). Checked
    first: the columns the stages read, known sides, unique ids; an error names what is wrong."""
    import pandas as pd
    from datasets import Dataset

    path = Path(path)
    file = chunks_file(path) if path.is_dir() else path
    frame = pd.read_parquet(file)
    missing = [name for name in CHUNK_COLUMNS if name not in frame.columns]
    if missing:
        raise ValueError(f"{file} lacks the chunk columns {missing}; is it the chunk stage's output?")
    unknown = sorted(set(frame["split"].astype(str)) - set(CHUNK_SIDES))
    if unknown:
        raise ValueError(f"{file}: unknown split values {unknown}; expected {CHUNK_SIDES}")
    repeated = frame["chunk_id"][frame["chunk_id"].duplicated()].tolist()
    if repeated:
        raise ValueError(f"{file}: chunk ids must be unique, repeated: {repeated[:5]}")
    if splits is not None:
        frame = frame[frame["split"].isin(splits)]
    return Dataset.from_pandas(frame, preserve_index=False)


def read_flagged_chunks(chunk_path: Path) -> list[dict]:
    """The chunks that read like instructions to a model, with their markers and an excerpt."""
    return read_json(Path(chunk_path) / "summary.json").get("instruction_like", [])


def read_document_chunks(chunk_path: Path) -> dict[str, dict]:
    """Per document id (content hash): its split and number of chunks kept."""
    return read_json(Path(chunk_path) / CHUNK_DOCUMENTS_FILE)


# --- synthesize -------------------------------------------------------------------------------------


class SynthesisFigures(BaseModel):
    """The run report's ``synthesis`` block: what happened to every chunk and pair."""

    chunks: int
    chunks_failed: int
    chunks_near_duplicate: int
    replies_unparsed: int
    pairs_raw: int
    pairs_accepted: int
    rejected_by_reason: dict[str, int]
    retries: int
    latency_p50_s: float | None
    latency_p95_s: float | None


class ContaminationFigures(BaseModel):
    """The run report's ``contamination`` block: what decontamination checked and removed (held-out
    pairs in synthesis; rewrites in augmentation, 0 until that stage has run)."""

    eval_pairs_checked: int
    eval_pairs_removed: int
    knowledge_pairs_checked: int
    knowledge_pairs_removed: int
    rewrites_checked: int = 0
    rewrites_removed: int = 0


class SynthesizeOutput(StageOutput):
    """Counts of one synthesis; ``summary.json`` in ``path`` holds the rest (coverage, reasons)."""

    qa_digest: str  # of the Q&A rows alone: what training depends on
    qa_train: int  # SFT pairs
    qa_knowledge: int  # knowledge questions: from pretrained chunks, held out of SFT
    qa_eval: int  # control questions: from held-out documents
    chunks: int
    chunks_failed: int  # no reply (HTTP error, timeout, refused connection); retried next run
    chunks_near_duplicate: int  # not sent: a near-twin of an earlier chunk was
    chunks_without_pairs: int  # chunks with no accepted pair, whatever their state
    replies_unparsed: int  # a reply came, no pair could be read from it
    requests: int  # backend generations made in this call (0 when every chunk came from the store)
    reused: int  # chunks whose result came from the store
    pairs_raw: int
    pairs_accepted: int
    pairs_rejected: int
    rejected_by_reason: dict[str, int]
    retries: int
    latency_p50_s: float | None
    latency_p95_s: float | None
    judge_failed: int  # pairs whose judge request got no reply; retried next run
    eval_pairs_checked: int
    eval_pairs_removed: int
    knowledge_pairs_checked: int
    knowledge_pairs_removed: int

    @property
    def cache_digest(self) -> str:
        return self.qa_digest

    @property
    def complete(self) -> bool:
        return self.chunks_failed == 0 and self.judge_failed == 0

    def report_figures(self) -> SynthesisFigures:
        """The run report's ``synthesis`` block."""
        return SynthesisFigures.model_validate(self.model_dump(include=set(SynthesisFigures.model_fields)))

    def contamination_figures(self) -> ContaminationFigures:
        """The run report's ``contamination`` block, as synthesis leaves it."""
        return ContaminationFigures.model_validate(self.model_dump(include=SYNTHESIS_CONTAMINATION))

    def requests_now(self, cached: bool) -> int:
        return 0 if cached else self.requests

    def key_figures(self, cached: bool) -> SynthesizeKeyFigures:
        """The report table's figures."""
        return SynthesizeKeyFigures(
            qa_train=self.qa_train, qa_knowledge=self.qa_knowledge, qa_eval=self.qa_eval,
            requests=self.requests_now(cached), failed=self.chunks_failed, unparsed=self.replies_unparsed,
            rejected=self.pairs_rejected, contaminated=self.eval_pairs_removed + self.knowledge_pairs_removed,
        )  # fmt: skip

    def metrics(self, cached: bool) -> dict[str, float]:
        """The stage run's MLflow metrics: the report's blocks, rejections by reason, requests."""
        return {
            **self.report_figures().model_dump(exclude={"rejected_by_reason"}),
            **{f"rejected_{reason}": n for reason, n in self.rejected_by_reason.items()},
            **self.model_dump(include=SYNTHESIS_CONTAMINATION),
            "requests": self.requests_now(cached),
            "chunks_near_duplicate": self.chunks_near_duplicate,
            "chunks_without_pairs": self.chunks_without_pairs,
            "judge_failed": self.judge_failed,
        }


SYNTHESIS_CONTAMINATION = {
    "eval_pairs_checked", "eval_pairs_removed", "knowledge_pairs_checked", "knowledge_pairs_removed",
}  # fmt: skip


class SynthesizeKeyFigures(BaseModel):
    qa_train: int
    qa_knowledge: int
    qa_eval: int
    requests: int
    failed: int
    unparsed: int
    rejected: int
    contaminated: int


# --- augment ----------------------------------------------------------------------------------------

AUGMENT_TEXTS_FILE = "texts.parquet"


class AugmentOutput(StageOutput):
    """Counts of one augmentation; ``texts.parquet`` in ``path`` holds the texts, ``summary.json`` the
    rest (failure reasons, the store key, the makers' identity)."""

    texts_digest: str  # of the texts alone: what pretraining depends on
    chunks: int  # pretrained chunks rewritten
    rewrites_planned: int
    rewrites_made: int
    rewrites_failed: int  # no reply from the LLM; retried next run
    rewrites_empty: int  # the kind found nothing to say (rules) or the reply was empty
    rewrites_contaminated: int  # removed: they carried a held-out question or its answer's wording
    rewrites_kept: int
    qa_texts: int  # SFT pairs written as text (mix_qa)
    kept_by_kind: dict[str, int]
    requests: int  # LLM requests made in this call

    @property
    def cache_digest(self) -> str:
        return self.texts_digest

    @property
    def complete(self) -> bool:
        return self.rewrites_failed == 0

    def key_figures(self, cached: bool) -> AugmentFigures:
        """The report table's figures (a cached stage made no request now)."""
        return AugmentFigures(
            rewrites=self.rewrites_kept, qa_texts=self.qa_texts, failed=self.rewrites_failed,
            empty=self.rewrites_empty, contaminated=self.rewrites_contaminated,
            requests=0 if cached else self.requests,
        )  # fmt: skip

    def metrics(self, cached: bool) -> dict[str, float]:
        """The stage run's MLflow metrics: every count, and the rewrites kept per kind."""
        return {
            **self.model_dump(include=AUGMENT_COUNTS),
            **{f"kept_{kind}": n for kind, n in self.kept_by_kind.items()},
            "requests": 0 if cached else self.requests,
        }


class AugmentFigures(BaseModel):
    rewrites: int
    qa_texts: int
    failed: int
    empty: int
    contaminated: int
    requests: int


AUGMENT_COUNTS = {"chunks", "rewrites_planned", "rewrites_made", "rewrites_failed", "rewrites_empty",
                  "rewrites_contaminated", "rewrites_kept", "qa_texts"}  # fmt: skip


QA_SPLITS = ("train", "knowledge", "eval")  # SFT pairs; knowledge questions; control questions


def qa_file(qa_path: Path, split: str) -> Path:
    return Path(qa_path) / f"qa_{split}.parquet"


# --- training ---------------------------------------------------------------------------------------


class TrainOutput(StageOutput):
    adapter_path: str
    trainable_parameters: int
    steps: int
    train_tokens: int
    train_loss: float
    eval_loss: float | None
    seconds: float
    resumed_from_step: int | None = None  # training went on from this checkpoint (a killed run)
    selected_step: int | None = None  # the step whose weights were published (train.select_checkpoint)
    processes: int = 1  # training processes (DDP ranks), whose weights were checked equal

    @classmethod
    def from_metrics(cls, folder: Path, digest: str, metrics: dict[str, Any]) -> TrainOutput:
        fields = {k: metrics[k] for k in cls.model_fields if k in metrics}
        return cls(path=str(folder), digest=digest, adapter_path=str(folder / ADAPTER_DIR), **fields)

    def key_figures(self) -> TrainFigures:
        """The report table's figures."""
        return TrainFigures(
            steps=self.steps, train_loss=round(self.train_loss, 4),
            eval_loss=None if self.eval_loss is None else round(self.eval_loss, 4),
            trainable=self.trainable_parameters, tokens=self.train_tokens, selected_step=self.selected_step,
        )  # fmt: skip

    def metrics(self) -> dict[str, float | None]:
        """The stage run's MLflow metrics: the key figures, as the final values of the run."""
        return {f"final_{k}": v for k, v in self.key_figures().model_dump().items()}


class TrainFigures(BaseModel):
    steps: int
    train_loss: float
    eval_loss: float | None
    trainable: int
    tokens: int
    selected_step: int | None


def with_perplexity(values: dict[str, float]) -> dict[str, float]:
    """Adds ``eval_perplexity`` (exp of the held-out eval loss) to a log line that has ``eval_loss``."""
    if "eval_loss" in values:
        values = {**values, "eval_perplexity": math.exp(min(values["eval_loss"], 50.0))}
    return values


def read_log_history(stage_path: Path) -> list[dict]:
    return json.loads((Path(stage_path) / LOG_HISTORY_FILE).read_text())


# --- evaluate ---------------------------------------------------------------------------------------


class EvalOutput(StageOutput):
    figures: EvaluationFigures
    seconds: float

    @property
    def forgetting_passed(self) -> bool:
        return self.figures.forgetting.passed

    def key_figures(self) -> EvaluateKeyFigures:
        """The report table's figures: the headline of :func:`docqa.figures.stage_figures`."""
        return stage_figures(self.figures)

    def metrics(self) -> dict[str, float]:
        """The MLflow metrics of the stage run and the parent run (:func:`docqa.figures.metric_values`)."""
        return metric_values(self.figures)


class Generation(BaseModel):
    """One question of one set, with every answer given to it (model states; open-book references on
    the knowledge set)."""

    set: str
    question: str
    reference: str
    answers: dict[str, str]
    doc_title: str
    chunk_id: str


def read_generations(eval_path: Path) -> list[Generation]:
    text = (Path(eval_path) / GENERATIONS_FILE).read_text(encoding="utf-8")
    return [Generation.model_validate_json(line) for line in jsonl_records(text)]
