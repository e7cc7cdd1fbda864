"""MLflow: one parent run per flow run, one nested run per stage, datasets with our own digests,
adapters as artifacts, loss curves as PNG. Plain functions over explicit run ids (no global active run),
so the flow can log from any thread or process. Params and tags pass through
:func:`docqa.secrets.redact`."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from matplotlib.figure import Figure
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

import docqa
from docqa.outputs import with_perplexity
from docqa.secrets import redact

PARENT_TAG = "mlflow.parentRunId"
PARAM_VALUE_LIMIT = 6000
BATCH_LIMIT = 900  # MLflow accepts at most 1000 metrics / 100 params per batch
PARAM_BATCH_LIMIT = 90
DEFAULT_UI_URL = "http://127.0.0.1:5000"


def code_version() -> str:
    """The git commit docqa runs from (``+dirty`` with uncommitted changes), else the package version."""
    root = Path(__file__).resolve().parent.parent
    git = shutil.which("git")
    if git and (root / ".git").exists():
        head = subprocess.run([git, "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
        if head.returncode == 0:
            status = subprocess.run(
                [git, "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
            )
            return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")
    return f"docqa {docqa.__version__}"


def tracking_uri(workspace: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{workspace / 'mlflow.db'}"


def ui_url(uri: str) -> str:
    """Where the MLflow UI for ``uri`` is: the server itself, or a local ``mlflow ui`` on a file store."""
    return (
        uri.rstrip("/") if uri.startswith("http") else os.environ.get("DOCQA_MLFLOW_UI_URL", DEFAULT_UI_URL)
    )


def ui_command(uri: str) -> str | None:
    if uri.startswith("http"):
        return None
    return f"mlflow ui --backend-store-uri {uri} --port 5000"


# MLflow 3's UI opens an untagged experiment in its GenAI view (traces, judges); tagged as fine-tuning it
# opens on runs, metrics and models (docs/pitfalls.md). MLflow 3.17's UI also has a global GenAI / Model
# training switch (default GenAI) that overrides the tag: links docqa prints select the training view in
# the URL.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "finetuning"
TRAINING_VIEW = "workflowType=machine_learning"
WORKSPACE_TAG = "docqa.workspace"


class Tracker:
    """The MLflow side of one pipeline run."""

    def __init__(self, workspace: Path, experiment: str, location: str | None = None):
        """``workspace``: the local folder (its default MLflow store); ``location``: the workspace as runs
        are tagged with it (its URL for a remote workspace), the folder by default."""
        self.uri = tracking_uri(workspace)
        self.client = MlflowClient(tracking_uri=self.uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
        else:
            artifacts = (
                None if self.uri.startswith("http") else (workspace / "mlartifacts").resolve().as_uri()
            )
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifacts)
        if (found.tags if found else {}).get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        self.parent_id: str | None = None
        self.workspace_location = location or str(workspace)

    def start_parent(self, name: str, tags: dict[str, str]) -> str:
        tags = {**tags, WORKSPACE_TAG: self.workspace_location}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        self.parent_id = run.info.run_id
        return self.parent_id

    def start_stage(self, stage: str, tags: dict[str, str] | None = None) -> str:
        all_tags = {PARENT_TAG: self.parent_id, "docqa.stage": stage, WORKSPACE_TAG: self.workspace_location,
                    **(tags or {})}  # fmt: skip
        return self.client.create_run(self.experiment_id, run_name=stage, tags=all_tags).info.run_id

    def end_dead_runs(self, by: str) -> list[str]:
        """Runs of this workspace still RUNNING, which only a process that died can have left: the
        caller holds the workspace (``docqa.workspace.workspace_lock``), so no live run owns them. They
        are ended as KILLED and tagged with who found them; returns their ids."""
        running = self.client.search_runs([self.experiment_id], filter_string="attributes.status = 'RUNNING'")
        found = [run for run in running if run.data.tags.get(WORKSPACE_TAG) == self.workspace_location]
        for run in found:
            self.client.set_tag(run.info.run_id, "docqa.killed", f"its process died; ended by run {by}")
            self.client.set_terminated(run.info.run_id, status="KILLED")
        return [run.info.run_id for run in found]

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, redact(str(v))) for k, v in tags.items()])

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        items = [Param(k, redact(str(v))[:PARAM_VALUE_LIMIT]) for k, v in params.items()]
        for start in range(0, len(items), PARAM_BATCH_LIMIT):
            self.client.log_batch(run_id, params=items[start : start + PARAM_BATCH_LIMIT])

    def log_metrics(self, run_id: str, metrics: dict[str, float | None], step: int = 0) -> None:
        items = [
            Metric(k, float(v), timestamp=_now_ms(), step=step)
            for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))
        ]
        for start in range(0, len(items), BATCH_LIMIT):
            self.client.log_batch(run_id, metrics=items[start : start + BATCH_LIMIT])

    def log_history(self, run_id: str, history: list[dict]) -> None:
        """Replay a saved trainer log history (a cached stage's curves)."""
        for row in history:
            numeric = {k: v for k, v in row.items() if isinstance(v, int | float) and k != "step"}
            self.log_metrics(run_id, with_perplexity(numeric), step=int(row.get("step", 0)))

    def log_artifacts(self, run_id: str, folder: Path, artifact_path: str) -> None:
        self.client.log_artifacts(run_id, str(folder), artifact_path)

    def log_artifact(self, run_id: str, file: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(file), artifact_path)

    def log_dataset(
        self, run_id: str, frame: pd.DataFrame, name: str, digest: str, source: Path, context: str
    ):
        """A dataset input named by *our* content digest (MLflow's own digests only the first 10k rows)."""
        dataset = mlflow.data.from_pandas(frame, source=str(source), name=name, digest=digest[:36])
        self.client.log_inputs(
            run_id,
            datasets=[
                mlflow.entities.DatasetInput(
                    dataset._to_mlflow_entity(),
                    tags=[mlflow.entities.InputTag("mlflow.data.context", context)],
                )
            ],
        )

    def log_table(self, run_id: str, rows: list[dict], artifact_file: str) -> None:
        self.client.log_table(run_id, data=pd.DataFrame(rows), artifact_file=artifact_file)

    def log_figure(self, run_id: str, figure: Figure, artifact_file: str) -> None:
        self.client.log_figure(run_id, figure, artifact_file)

    def run_url(self, run_id: str) -> str:
        return f"{ui_url(self.uri)}/#/experiments/{self.experiment_id}/runs/{run_id}?{TRAINING_VIEW}"


def step_logger(uri: str, run_id: str):
    """A training callback: every log line becomes metrics of ``run_id`` at its step, as it happens."""
    client = MlflowClient(tracking_uri=uri)

    def log(values: dict[str, float], step: int) -> None:
        metrics = [Metric(k, float(v), _now_ms(), step) for k, v in values.items() if math.isfinite(float(v))]
        client.log_batch(run_id, metrics=metrics)

    return log


def loss_figure(histories: dict[str, list[dict]]) -> Figure:
    """Training and eval loss per step, one panel per stage."""
    figure = Figure(figsize=(5.5 * len(histories), 3.8))
    axes = figure.subplots(1, len(histories), squeeze=False)
    for axis, (stage, history) in zip(axes[0], histories.items(), strict=True):
        for key, style in (("loss", "-"), ("eval_loss", "o--")):
            points = [(row["step"], row[key]) for row in history if key in row]
            if points:
                steps, values = zip(*points, strict=True)
                axis.plot(steps, values, style, label=key.replace("_", " "))
        axis.set_title(f"{stage}")
        axis.set_xlabel("step")
        axis.set_ylabel("loss")
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def _now_ms() -> int:
    return int(time.time() * 1000)
