"""The GPU stages as flows of their own, so that they can run as deployments on a GPU work pool.

With ``execution.gpu_stages=deployments`` the pipeline (on a CPU pool) starts these with
``run_deployment`` and waits: each is a flow run in the Prefect UI, linked to the pipeline run as its
parent. A stage flow runs the very task the pipeline runs locally (same cache keys, so a stage done in
either mode is not done again) and leaves its result in the shared workspace, where the pipeline reads
it: ``WORKSPACE/stage-results/<flow run id>.json``. A failing task fails the flow run, and the pipeline
fails with it (``run_deployment`` alone would leave the parent Completed: see docs/pitfalls.md).

With a workspace URL (``s3://…``) the inputs arrive as URLs on the store: the flow fetches them into
this machine's mirror, runs the task there and shares its output back (:class:`docqa.workspace.Workspace`).
"""

from __future__ import annotations

import inspect
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from docqa.outputs import BaseModelRef, EvalOutput, TrainOutput
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


def _stage_flow(stage: str, task, description: str):
    """The stage's flow: the task's own parameters (Prefect reads ``__signature__`` for the deployment's
    form and to validate a run's parameters), the task run as the pipeline runs it. The function stays
    this module's, so the deployment's entrypoint is ``flows/stages.py:<stage>_stage``."""

    signature = inspect.signature(task.fn, eval_str=True)  # the types, not their names in tasks/stages.py

    def run_stage(*args: Any, **kwargs: Any) -> dict[str, Any]:
        bound = signature.bind(*args, **kwargs)  # Prefect passes positional parameters positionally
        bound.apply_defaults()
        return _run(stage, task, dict(bound.arguments))

    run_stage.__signature__ = signature.replace(return_annotation=dict[str, Any])
    run_stage.__annotations__ = {name: p.annotation for name, p in signature.parameters.items()}
    run_stage.__doc__ = task.fn.__doc__
    run_stage.__name__ = run_stage.__qualname__ = f"{stage}_stage"
    return flow(name=f"docqa-{stage}", description=description)(run_stage)


# each signature is declared once, on its task in tasks/stages.py
pretrain_stage = _stage_flow(
    "pretrain", pretrain_task, "Domain-adaptive QLoRA pretraining (a GPU stage of docqa-pipeline)"
)
sft_stage = _stage_flow("sft", sft_task, "SFT with QLoRA on the Q&A (a GPU stage of docqa-pipeline)")
evaluate_stage = _stage_flow(
    "evaluate",
    evaluate_task,
    "Knowledge, memorisation and control questions for the base, pretrained and final models "
    "(a GPU stage of docqa-pipeline)",
)
STAGE_FLOWS = {"pretrain": pretrain_stage, "sft": sft_stage, "evaluate": evaluate_stage}
