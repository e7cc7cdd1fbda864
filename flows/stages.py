"""The GPU stages as flows of their own, so that they can run as deployments on a GPU work pool.

With ``execution.gpu_stages=deployments`` the pipeline (on a CPU pool) starts these with
``run_deployment`` and waits: each is a flow run in the Prefect UI, linked to the pipeline run as its
parent. A stage flow runs the very task the pipeline runs locally (same cache keys, so a stage done in
either mode is not done again) and leaves its result in the shared workspace, where the pipeline reads
it: ``WORKSPACE/stage-results/<flow run id>.json``. A failing task fails the flow run, and the pipeline
fails with it (``run_deployment`` alone would leave the parent Completed: see PITFALLS).

With a workspace URL (``s3://…``) the inputs arrive as URLs on the store: the flow fetches them into
this machine's mirror, runs the task there and shares its output back (:class:`docqa.workspace.Workspace`).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from docqa.outputs import AugmentOutput, BaseModelRef, ChunkOutput, EvalOutput, SynthesizeOutput, TrainOutput
from docqa.settings import EvaluateSettings, ModelSettings, PretrainSettings, SFTSettings, SynthesizeSettings
from docqa.workspace import StageOutput, Workspace
from tasks.caching import run_cached
from tasks.stages import evaluate_task, pretrain_task, sft_task

OUTPUT_TYPES = {"pretrain": TrainOutput, "sft": TrainOutput, "evaluate": EvalOutput}
GPU_STAGES = tuple(OUTPUT_TYPES)


def stage_result_name(flow_run_id: str) -> str:
    """The record a stage flow run leaves for the pipeline (:meth:`Workspace.read_record`)."""
    return f"stage-results/{flow_run_id}.json"


def _run(stage: str, task, kwargs: dict[str, Any]) -> dict[str, Any]:
    workspace = Workspace(kwargs["workspace"])
    kwargs = {
        k: workspace.fetch(v) if isinstance(v, StageOutput | BaseModelRef) else v for k, v in kwargs.items()
    }
    state, output = run_cached(task, {**kwargs, "workspace": str(workspace.local)}, get_run_logger())
    if state.is_failed():
        raise RuntimeError(f"stage {stage} failed: {type(output).__name__}: {output}") from output
    shared = workspace.share(output)
    record = {"stage": stage, "cached": state.name == "Cached", "output": shared.model_dump(mode="json")}
    workspace.write_record(stage_result_name(str(flow_run.id)), record)
    return record


@flow(name="docqa-pretrain", description="Domain-adaptive QLoRA pretraining (a GPU stage of docqa-pipeline)")
def pretrain_stage(
    chunks: ChunkOutput,
    augmented: AugmentOutput | None,
    base: BaseModelRef,
    model: ModelSettings,
    settings: PretrainSettings,
    workspace: str,
    mlflow_uri: str | None = None,
    mlflow_run_id: str | None = None,
    mixed_in_digest: str | None = None,
) -> dict[str, Any]:
    return _run("pretrain", pretrain_task, dict(locals()))  # the parameters, as the task takes them


@flow(name="docqa-sft", description="SFT with QLoRA on the Q&A (a GPU stage of docqa-pipeline)")
def sft_stage(
    qa: SynthesizeOutput,
    pretrained: TrainOutput,
    base: BaseModelRef,
    model: ModelSettings,
    settings: SFTSettings,
    workspace: str,
    mlflow_uri: str | None = None,
    mlflow_run_id: str | None = None,
    mixed_in_digest: str | None = None,
) -> dict[str, Any]:
    return _run("sft", sft_task, dict(locals()))  # the parameters, as the task takes them


@flow(
    name="docqa-evaluate",
    description="Knowledge, memorisation and control questions for the base, pretrained and final models "
    "(a GPU stage of docqa-pipeline)",
)
def evaluate_stage(
    chunks: ChunkOutput,
    qa: SynthesizeOutput,
    pretrained: TrainOutput,
    tuned: TrainOutput,
    base: BaseModelRef,
    model: ModelSettings,
    settings: EvaluateSettings,
    workspace: str,
    judge: SynthesizeSettings | None = None,
) -> dict[str, Any]:
    return _run("evaluate", evaluate_task, dict(locals()))  # the parameters, as the task takes them


STAGE_FLOWS = {"pretrain": pretrain_stage, "sft": sft_stage, "evaluate": evaluate_stage}
