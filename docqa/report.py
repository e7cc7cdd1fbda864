"""The run report: a machine-readable contract that automation relies on.

Written to ``WORKSPACE/reports/<flow-run-name>.json`` and ``WORKSPACE/reports/latest.json``, also when a
stage fails (then with that stage's error and the later stages ``not_run``). Every document is listed
with its fate, so nothing is lost silently.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from docqa.figures import EvaluationFigures, RegistryRecord
from docqa.outputs import BaseModelRef, ContaminationFigures, SynthesisFigures
from docqa.secrets import redact
from docqa.settings import STAGES
from docqa.workspace import write_text_atomic


class StageReport(BaseModel):
    status: Literal["completed", "failed", "not_run"] = "not_run"
    cached: bool = False
    seconds: float = 0.0
    figures: dict[str, int | float | str | None] = Field(default_factory=dict)  # the stage's key_figures()
    error: str | None = None
    mlflow_run_id: str | None = None
    resumed_from_step: int | None = None  # training stages: went on from this checkpoint's step
    selected_step: int | None = None  # training stages: the step whose adapter was published


class DocumentReport(BaseModel):
    path: str
    doc_id: str  # content id: what chunks and Q&A rows name the document by
    sha256: str
    status: Literal["ok", "failed"]
    reason: str | None
    pages: int
    chunks: int
    split: Literal["train", "eval"] | None
    duplicate_of: str | None = None
    title: str | None = None
    hidden_text: dict[str, int] = Field(default_factory=dict)  # characters per reason: dropped or kept
    hidden_text_kept: bool = False


class FlaggedChunk(BaseModel):
    """A chunk that reads like instructions to a model (``docqa.injection``), for a person to judge."""

    chunk_id: str
    doc_id: str
    doc_title: str | None
    page_start: int
    page_end: int
    markers: list[str]
    excerpt: str
    dropped: bool  # chunk.drop_instruction_like


class BaseModelReport(BaseModelRef):
    """The base the run trained on, and whether this run had to prepare it."""

    built_now: bool  # converted or built by this run (an embedded or bootstrap base's first use)
    seconds: float  # resolving (and preparing) it


class RunMetrics(BaseModel):
    trainable_parameters: int | None = None  # of the final model (the SFT stage's trainable weights)


class RunReport(BaseModel):
    flow_run_id: str
    flow_run_name: str
    mlflow_run_id: str | None = None
    recipe: str
    workspace: str
    docs: str
    status: Literal["running", "completed", "stopped", "failed"] = "running"
    error: str | None = None
    stopped_after: str | None = None  # the stage a run asked to stop after (`docqa run --until`)
    started_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    finished_at: str | None = None
    base_model: BaseModelReport | None = None
    stages: dict[str, StageReport] = Field(default_factory=lambda: {s: StageReport() for s in STAGES})
    documents: list[DocumentReport] = Field(default_factory=list)
    instruction_like_chunks: list[FlaggedChunk] = Field(default_factory=list)
    counts: dict[str, int] = Field(default_factory=dict)
    metrics: RunMetrics = Field(default_factory=lambda: RunMetrics())
    evaluation: EvaluationFigures | None = None  # knowledge, memorisation, control; knowledge_gain
    synthesis: SynthesisFigures | None = None  # every chunk and pair accounted for (None: not run)
    contamination: ContaminationFigures | None = None  # what decontamination checked and removed
    outputs: dict[str, str] = Field(default_factory=dict)
    links: dict[str, str] = Field(default_factory=dict)
    # lineage: the document set by content, and what changed since the last completed run here
    corpus_fingerprint: str | None = None
    documents_changed: dict[str, list[str]] | None = None  # added, changed, removed (paths)
    registry: RegistryRecord | None = None  # model version, alias, verdict, data diff (None: not registered)
    # MLflow runs of this workspace left RUNNING by a process that died (kill -9), marked KILLED now
    stale_runs_killed: list[str] = Field(default_factory=list)

    def write(self, workspace: Path) -> Path:
        reports = workspace / "reports"
        path = reports / f"{self.flow_run_name}.json"
        text = redact(self.model_dump_json(indent=2)) + "\n"
        write_text_atomic(path, text)
        write_text_atomic(reports / "latest.json", text)
        return path

    def finish(self, error: str | None = None, stopped_after: str | None = None) -> None:
        self.status = "failed" if error else "stopped" if stopped_after else "completed"
        self.stopped_after = stopped_after
        self.error = error
        self.finished_at = datetime.now(UTC).isoformat()
