"""The docqa pipeline: ingest → chunk → synthesize → pretrain → sft → evaluate, as one Prefect flow.

The recipe is one parameter, a pydantic model, so "Run" in the Prefect UI shows it as one form with a
section per stage, and the run, its MLflow params and its model package all hold the very value that
was passed (nothing is rebuilt from parts). Tasks pass
paths and content digests; cache keys are content hashes, so a re-run with the same documents and
recipe trains nothing, and a new document costs only its own ingest, chunks and synthesis.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.deployments import run_deployment
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import deployment, flow_run
from pydantic import BaseModel, Field

from docqa.figures import headline_lines, recall_rows
from docqa.hashing import file_digest, fingerprint_files
from docqa.outputs import BaseModelRef, EvalOutput, SynthesizeOutput, read_generations
from docqa.package import read_manifest
from docqa.promotion import PACKAGE_ARTIFACT, package_run, register_and_promote
from docqa.records import StageRecorder, record_parent
from docqa.registry import headline_metrics
from docqa.report import BaseModelReport, RunReport
from docqa.review import markdown_cell, review_markdown
from docqa.sample_corpus import ensure_sample_corpus
from docqa.secrets import redact
from docqa.settings import ExecutionSettings, Recipe, StageName, SynthesizeSettings, flatten
from docqa.sources import canonical_location, local_folder
from docqa.stages.ingest import list_documents
from docqa.tracking import Tracker, code_version
from docqa.watch import changes_since_trained, fingerprint, write_state
from docqa.workspace import StageOutput, Workspace, workspace_lock
from flows.stages import GPU_STAGES, OUTPUT_TYPES, stage_result_name
from tasks.caching import run_cached
from tasks.stages import (
    augment_task,
    base_model_task,
    chunk_task,
    evaluate_task,
    fetch_documents_task,
    ingest_task,
    pretrain_task,
    rescore_champion_task,
    sft_task,
    synthesize_task,
)

DEFAULTS = Recipe()
SAMPLE_GENERATION_CHARS = 300
REVIEW_POLL_S = 2  # how often a paused run checks whether it was resumed


class DatasetReview(RunInput):
    """The reviewer's verdict on the synthesized dataset (the form shown when resuming the run)."""

    approve: bool = Field(description="start training on this dataset")
    comment: str = Field("", description="why; kept as an MLflow tag and, on rejection, in the report")


class StageFailed(RuntimeError):
    """A stage failed; the message names it and says why."""


class StoppedAfter(Exception):
    """The run reached the stage it was asked to stop after (``until``)."""

    def __init__(self, stage: str, output: Any) -> None:
        super().__init__(stage)
        self.stage, self.output = stage, output


class PipelineRun:
    """Bookkeeping for one flow run: times each stage, records it, writes the report even on failure."""

    def __init__(
        self,
        ws: Workspace,
        docs: str | None,
        recipe: Recipe,
        execution: ExecutionSettings,
        until: StageName | None = None,
    ):
        self.ws = ws
        self.execution = execution
        self.until = until
        self.tracker = Tracker(ws.local, recipe.experiment, location=ws.location)
        if ws.remote and execution.gpu_stages == "deployments" and self.tracker.uri.startswith("sqlite"):
            raise ValueError(
                f"workspace {ws.location} is shared through a store, but MLflow is a SQLite file on this "
                "machine that GPU workers cannot reach: set MLFLOW_TRACKING_URI to a tracking server"
            )
        self.report = RunReport(
            flow_run_id=str(flow_run.id or "local"),
            flow_run_name=str(flow_run.name or "local"),
            recipe=recipe.name,
            workspace=ws.location,
            docs=docs or "(arXiv only)",
        )
        self.report.stale_runs_killed = self.tracker.end_dead_runs(self.report.flow_run_name)
        self.report.mlflow_run_id = self.tracker.start_parent(
            self.report.flow_run_name,
            {
                "prefect.flow_run_id": self.report.flow_run_id,
                "prefect.flow_run_name": self.report.flow_run_name,
                "prefect.deployment": str(deployment.name or "none (run locally)"),
                "docqa.recipe": recipe.name,
                "docqa.docs": str(docs),
                "docqa.code_version": code_version(),
            },
        )
        self.report.links["mlflow_run"] = self.tracker.run_url(self.report.mlflow_run_id)
        self.tracker.log_params(self.report.mlflow_run_id, flatten(recipe))
        self.recorder = StageRecorder(self.tracker, self.report)
        self.logger = get_run_logger()

    def stage(self, name: str, task, live_metrics: bool = False, **kwargs: Any):
        """Run one stage task (or take it from the cache) and record it; raise StageFailed on failure.

        With ``live_metrics`` the task gets this stage's MLflow run and logs its steps as they happen.
        """
        record = self.report.stages[name]
        run_id = self.tracker.start_stage(name, {"prefect.flow_run_id": self.report.flow_run_id})
        record.mlflow_run_id = run_id
        self.tracker.log_params(run_id, _settings_params(kwargs))
        if live_metrics:
            kwargs.update(mlflow_uri=self.tracker.uri, mlflow_run_id=run_id)
        self.logger.info("stage %s: starting", name)
        started = time.perf_counter()
        if self.execution.gpu_stages == "deployments" and name in GPU_STAGES:
            error, output, cached = self._run_deployment(name, kwargs)
        else:
            state, output = run_cached(task, kwargs, self.logger)
            error = f"{type(output).__name__}: {output}" if state.is_failed() else None
            cached = state.name == "Cached"
        record.seconds = round(time.perf_counter() - started, 2)
        if error is not None:
            record.status, record.error = "failed", error
            self.tracker.end(run_id, "FAILED")
            raise StageFailed(f"stage {name} failed: {error}") from (
                output if isinstance(output, BaseException) else None
            )
        record.status, record.cached = "completed", cached
        self.tracker.set_tags(run_id, {"docqa.cached": record.cached})
        record.figures = self.recorder.record(name, run_id, output, record.cached)
        self.tracker.end(run_id)
        self.logger.info(
            "stage %s: completed%s in %.1fs %s",
            name,
            " (cached)" if record.cached else "",
            record.seconds,
            record.figures,
        )
        if name == self.until:
            raise StoppedAfter(name, output)
        return output

    def _run_deployment(self, name: str, kwargs: dict[str, Any]) -> tuple[str | None, Any, bool]:
        """(error, output, cached) of the stage run as a flow run of its deployment on the GPU pool."""
        target = f"docqa-{name}/{self.execution.deployment_prefix}-{name}"
        shared = {
            k: self.ws.share(v) if isinstance(v, StageOutput | BaseModelRef) else v for k, v in kwargs.items()
        }
        parameters = {
            k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v for k, v in shared.items()
        }
        parameters["workspace"] = self.ws.location
        child = run_deployment(
            target,
            parameters=parameters,
            timeout=self.execution.timeout_s,
            poll_interval=self.execution.poll_s,  # Prefect's default, 5 s, adds seconds to every stage
        )
        self.logger.info("stage %s: flow run %s of %s ended %s", name, child.name, target, child.state.name)
        if not child.state.is_completed():  # a failed child leaves this run Completed unless checked
            return (
                f"flow run {child.name} ({child.id}) of {target} ended {child.state.name}: "
                f"{child.state.message}",
                None,
                False,
            )
        record = self.ws.read_record(stage_result_name(str(child.id)))
        if record is None:
            return (
                f"flow run {child.name} of {target} completed but left no result on {self.ws.location}",
                None,
                False,
            )
        output = self.ws.fetch(OUTPUT_TYPES[name].model_validate(record["output"]))
        return None, output, record["cached"]

    def review_dataset(self, qa: SynthesizeOutput, settings: SynthesizeSettings) -> None:
        """Pause until a person approves the dataset in the Prefect UI; stop the run if they reject it."""
        create_markdown_artifact(
            key="docqa-dataset-review",
            markdown=review_markdown(Path(qa.path), settings.review_sample),
            description="Synthesized Q&A awaiting approval",
        )
        self.logger.info("synthesize: paused for review; resume the flow run in the Prefect UI to decide")
        record = self.report.stages["synthesize"]
        record.figures["review"] = "waiting"
        self.write_report()
        decision = pause_flow_run(
            wait_for_input=DatasetReview, timeout=settings.review_timeout_s, poll_interval=REVIEW_POLL_S
        )
        record.figures["review"] = "approved" if decision.approve else "rejected"
        self.tracker.set_tags(
            self.report.mlflow_run_id,
            {"docqa.review": record.figures["review"], "docqa.review_comment": decision.comment},
        )
        if not decision.approve:
            raise StageFailed(
                f"the reviewer rejected the synthesized dataset: {decision.comment or '(no comment)'}"
            )

    def fail(self, error: BaseException) -> None:
        self.report.finish(str(error))
        self.write_report()
        self.tracker.set_tags(self.report.mlflow_run_id, {"docqa.error": str(error)[:5000]})
        self.tracker.end(self.report.mlflow_run_id, "FAILED")

    def stop(self, stopped: StoppedAfter) -> None:
        """The run ends after the stage it was asked to stop after: a finished run, not a failed one."""
        where = getattr(stopped.output, "path", None)
        self.report.finish(stopped_after=stopped.stage)
        path = self.write_report()
        self.tracker.set_tags(self.report.mlflow_run_id, {"docqa.stopped_after": stopped.stage})
        self.tracker.log_artifact(self.report.mlflow_run_id, path, "report")
        self.tracker.end(self.report.mlflow_run_id)
        create_markdown_artifact(
            key="docqa-stopped",
            markdown=f"Stopped after **{stopped.stage}**, as asked (`until`). Its output: `{where}`. "
            "A run without `until` takes every stage up to here from the cache.",
            description=f"Stopped after {stopped.stage}",
        )
        self.logger.info(
            "stopped after %s, as asked (until); its output: %s. A run without until takes it from the cache",
            stopped.stage,
            where,
        )

    def complete(self) -> None:
        self.report.finish()
        path = self.write_report()
        self.tracker.log_artifact(self.report.mlflow_run_id, path, "report")
        self.tracker.end(self.report.mlflow_run_id)

    def write_report(self) -> Path:
        """The report, in the workspace (on its store too, for a URL workspace)."""
        path = self.report.write(self.ws.local)
        for name in (path.name, "latest.json"):
            self.ws.sync_file(f"reports/{name}")
        return path


def _settings_params(kwargs: dict[str, Any]) -> dict[str, Any]:
    params = {}
    for key in ("settings", "split", "model"):
        if key in kwargs:
            params.update(flatten(kwargs[key], prefix=f"{key}."))
    return params


@flow(name="docqa-pipeline", description=__doc__.splitlines()[0])
def docqa_pipeline(
    docs: str | None = None,
    workspace: str = "workspace",
    recipe: Recipe = DEFAULTS,
    until: StageName | None = None,
    skip_if_unchanged: bool = False,
    execution: ExecutionSettings = ExecutionSettings(),  # noqa: B008 (a frozen default, as the recipe)
) -> dict[str, Any]:
    """PDFs in, held-out-evaluated LoRA adapters out, registered in MLflow behind a promotion gate.

    Args:
        docs: documents: a folder or any fsspec URL (s3://bucket/prefix); empty: the bundled sample
            corpus (or only source.arxiv_ids when those are set)
        workspace: where stage outputs, reports and the local MLflow store go: a path every worker
            mounts, or an fsspec URL (s3://bucket/prefix) that workers exchange outputs through
        recipe: every setting of the run, one section per stage (a recipe YAML, validated as a whole):
            the name names the run and the registered model (docqa-<name>), the experiment is MLflow's;
            the model package's recipe.yaml is this value
        until: stop after this stage, e.g. synthesize to read the Q&A before paying for training; the
            report, MLflow and this flow run say where it stopped, and a later run without it takes
            every stage up to there from the cache
        skip_if_unchanged: do nothing when the documents are those the last completed run trained on
            (what the scheduled safety-net run sets)
        execution: where the GPU stages run: in this process, or as deployments on the GPU pool
    """
    ws = Workspace(workspace)
    holder = {
        "flow run": str(flow_run.name or "local"),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with workspace_lock(ws.local, holder):
        return _run_pipeline(ws, docs, recipe, execution, skip_if_unchanged, until)


def _run_pipeline(
    ws: Workspace,
    docs: str | None,
    recipe: Recipe,
    execution: ExecutionSettings,
    skip_if_unchanged: bool,
    until: StageName | None,
) -> dict[str, Any]:
    root = ws.local
    if not docs and not recipe.source.arxiv_ids:
        docs = str(ensure_sample_corpus(root / "sample-corpus"))
    seen = fingerprint(docs, recipe.ingest.extensions) if docs else None
    changed = changes_since_trained(ws, docs, seen) if docs else None
    if skip_if_unchanged and changed is not None and changed.empty:
        get_run_logger().info("documents at %s unchanged since the last completed run: nothing to do", docs)
        return {"status": "unchanged", "docs": docs}
    run = PipelineRun(ws, docs, recipe, execution, until)
    run.report.documents_changed = changed.model_dump() if changed is not None else None
    try:
        _run_stages(run, root, docs, recipe, seen)
    except StoppedAfter as stopped:  # what the watcher compares with stays the last complete run's
        run.stop(stopped)
        return run.report.model_dump(mode="json")
    except BaseException as error:
        run.fail(error)
        raise
    run.complete()
    if docs:  # what the watcher compares the location with from now on
        write_state(ws, "trained", docs, seen)
    return run.report.model_dump(mode="json")


def _run_stages(
    run: PipelineRun, root: Path, docs: str | None, recipe: Recipe, seen: dict[str, str] | None
) -> None:
    docs_dir = fetch_documents_task(docs, recipe.source, recipe.ingest.extensions)
    ws = str(root)
    files = fingerprint_files(list_documents(docs_dir, recipe.ingest), local_digests(docs, seen))
    started = time.perf_counter()
    base, built = base_model_task(recipe.model)
    run.report.base_model = BaseModelReport(
        **base.model_dump(), built_now=built, seconds=round(time.perf_counter() - started, 2)
    )
    run.tracker.set_tags(
        run.report.mlflow_run_id, {"docqa.base_model": base.path, "docqa.base_digest": base.digest}
    )

    ingested = run.stage("ingest", ingest_task, files=files, workspace=ws, settings=recipe.ingest)
    chunks = run.stage(
        "chunk",
        chunk_task,
        ingest=ingested,
        tokenizer_path=base.path,
        tokenizer_digest=base.tokenizer_digest,
        workspace=ws,
        settings=recipe.chunk,
        split=recipe.split,
    )
    qa = run.stage("synthesize", synthesize_task, chunks=chunks, workspace=ws, settings=recipe.synthesize)
    if recipe.synthesize.review:
        run.review_dataset(qa, recipe.synthesize)
    augmented = run.stage(
        "augment", augment_task, chunks=chunks, qa=qa, workspace=ws, settings=recipe.augment,
        synthesize=recipe.synthesize,
    )  # fmt: skip
    pretrained = run.stage(
        "pretrain",
        pretrain_task,
        live_metrics=True,
        chunks=chunks,
        augmented=augmented,
        base=base,
        model=recipe.model,
        settings=recipe.pretrain,
        workspace=ws,
        mixed_in_digest=file_digest(recipe.pretrain.general_text),
    )
    tuned = run.stage(
        "sft",
        sft_task,
        live_metrics=True,
        qa=qa,
        pretrained=pretrained,
        base=base,
        model=recipe.model,
        settings=recipe.sft,
        workspace=ws,
        mixed_in_digest=file_digest(recipe.sft.general_instructions),
    )
    evaluation = run.stage(
        "evaluate",
        evaluate_task,
        chunks=chunks,
        qa=qa,
        pretrained=pretrained,
        tuned=tuned,
        base=base,
        model=recipe.model,
        settings=recipe.evaluate,
        workspace=ws,
        judge=recipe.synthesize if recipe.evaluate.llm_judge else None,
    )
    tokenizer_dir = Path(base.path) if base.source != "hub" else None
    record_parent(run.tracker, run.report, pretrained, tuned, evaluation)
    _prefect_artifacts(run, evaluation, recipe.evaluate.sample_generations)
    package = package_run(root, run.report, recipe, base, qa, pretrained, tuned, evaluation, tokenizer_dir)
    run.report.outputs["model_package"] = str(package)
    run.report.corpus_fingerprint = read_manifest(package).corpus_fingerprint
    run.tracker.set_tags(
        run.report.mlflow_run_id, {"docqa.corpus_fingerprint": run.report.corpus_fingerprint}
    )
    run.tracker.log_artifacts(run.report.mlflow_run_id, package, PACKAGE_ARTIFACT)
    if recipe.registry.enabled:

        def rescore(champion: Path) -> dict[str, float]:
            run.logger.info("registry: scoring the champion on this run's held-out data")
            scored = rescore_champion_task(chunks, qa, str(champion), recipe.evaluate, ws)
            return headline_metrics(scored)

        run.report.registry = register_and_promote(run.tracker, run.report, recipe, package, rescore)
        run.logger.info("registry: %s", run.report.registry.summary())
    if not evaluation.figures.forgetting.passed:
        run.logger.warning(
            "forgetting gate failed: general-text perplexity rose %.3f× (evaluate.max_forgetting_ratio %s); "
            "mix general text into training, lower the learning rate or train fewer steps",
            evaluation.figures.forgetting.ratio,
            evaluation.figures.forgetting.max_ratio,
        )


def local_digests(docs: str | None, seen: dict[str, str] | None) -> dict[str, str]:
    """Path → sha256 of the documents of a local folder, from the fingerprint the watcher's check took at
    the start of this run (remote locations are fingerprinted by their store's etags, not hashed)."""
    folder = local_folder(canonical_location(docs)) if docs else None
    if folder is None or not seen:
        return {}
    return {str(folder / name): digest.removeprefix("sha256:") for name, digest in seen.items()
            if digest.startswith("sha256:")}  # fmt: skip


def _prefect_artifacts(run: PipelineRun, evaluation: EvalOutput, sample_rows: int) -> None:
    report = run.report
    create_link_artifact(
        key="mlflow-run",
        link=report.links["mlflow_run"],
        link_text="MLflow run",
        description="docqa run in MLflow",
    )
    create_table_artifact(
        key="docqa-metrics",
        table=recall_rows(evaluation.figures),
        description="Does it know the documents? Strict recall (earlier recall in brackets) per question set "
        "and model; " + " · ".join(headline_lines(evaluation.figures)),
    )
    samples = read_generations(Path(evaluation.path))
    shown = [g for g in samples if g.set == "knowledge"][:sample_rows] or samples[:sample_rows]
    lines = ["| set | question | reference | base | final |", "|---|---|---|---|---|"]
    for g in shown:
        cells = [g.set, g.question, g.reference, g.answers["base"], g.answers["final"]]
        lines.append("| " + " | ".join(markdown_cell(c, SAMPLE_GENERATION_CHARS) for c in cells) + " |")
    create_markdown_artifact(
        key="docqa-generations", markdown=redact("\n".join(lines)), description="Sample generations"
    )
