"""A sweep: the pipeline once per variant (a list of recipe overrides), as child flow runs of one flow.

All variants run in one workspace, so ingest, chunk and synthesis come from the Prefect cache after the
first variant (unless a variant changes them); only what a variant changes is trained again. The sweep
ends with a comparison table (held-out figures side by side) and the variants' loss curves overlaid,
both in a parent MLflow run of its own and as Prefect artifacts. The seed project's own comparison was
LoRA on all linear layers vs q/k only, and 1 vs 3 epochs:

    docqa sweep --variant all-linear= --variant qk-only="pretrain.lora.target_modules=[q_proj,k_proj]" ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from docqa.figures import EvaluationFigures, stage_figures
from docqa.outputs import read_log_history
from docqa.settings import STAGES, Recipe, load_recipe
from docqa.tracking import Tracker
from flows.pipeline import docqa_pipeline

TRAINING_STAGES = ("pretrain", "sft")


def variant_recipe(recipe: Recipe, variant: str) -> Recipe:
    """The recipe a variant runs: named after it, and never promoted (variants are compared here, none
    of them becomes the champion on its own)."""
    return recipe.model_copy(
        update={
            "name": f"{recipe.name}+{variant}",
            "registry": recipe.registry.model_copy(update={"enabled": False}),
        }
    )


def comparison_row(name: str, overrides: list[str], report: dict[str, Any]) -> dict[str, Any]:
    """One variant's figures, flat, for the table: every variant answers the same questions."""
    figures = EvaluationFigures.model_validate(report["evaluation"])
    stages = report["stages"]
    return {
        "variant": name,
        "flow_run": report["flow_run_name"],
        "overrides": " ".join(overrides) or "(recipe as is)",
        "pretrain_eval_loss": stages["pretrain"]["figures"].get("eval_loss"),
        "sft_eval_loss": stages["sft"]["figures"].get("eval_loss"),
        **stage_figures(figures).model_dump(),
        "trainable": report["metrics"]["trainable_parameters"],
        "cached_stages": ",".join(s for s in STAGES if stages[s]["cached"]) or "-",
        "mlflow_run_id": report["mlflow_run_id"],
    }


def overlaid_losses(histories: dict[str, dict[str, list[dict]]]) -> Figure:
    """Training loss (lines) and held-out eval loss (dots) per step, one panel per training stage, one
    colour per variant."""
    figure = Figure(figsize=(11, 4))
    axes = figure.subplots(1, len(TRAINING_STAGES))
    for axis, stage in zip(axes, TRAINING_STAGES, strict=True):
        for index, (variant, stage_histories) in enumerate(histories.items()):
            colour = f"C{index}"
            for key, style in (("loss", "-"), ("eval_loss", "o--")):
                points = [(row["step"], row[key]) for row in stage_histories[stage] if key in row]
                if points:
                    steps, values = zip(*points, strict=True)
                    label = f"{variant} ({'train' if key == 'loss' else 'held-out'})"
                    axis.plot(steps, values, style, color=colour, label=label, markersize=3)
        axis.set_title(stage)
        axis.set_xlabel("step")
        axis.set_ylabel("loss")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


@flow(name="docqa-sweep", description=__doc__.splitlines()[0])
def docqa_sweep(
    variants: dict[str, list[str]],
    docs: str | None = None,
    workspace: str = "workspace",
    recipe: str | None = None,
) -> list[dict[str, Any]]:
    """``variants``: name → ``--set``-style overrides on ``recipe`` (an empty list: the recipe as is)."""
    if not variants:
        raise ValueError("a sweep needs at least one variant")
    logger = get_run_logger()
    recipes = {
        name: load_recipe(recipe, overrides) for name, overrides in variants.items()
    }  # all checked first
    rows, histories = [], {}
    for name, settings in recipes.items():
        logger.info("sweep: variant %s (%s)", name, " ".join(variants[name]) or "recipe as is")
        report = docqa_pipeline.with_options(flow_run_name=f"sweep-{name}")(
            docs=docs,
            workspace=workspace,
            recipe=variant_recipe(settings, name),
        )
        rows.append(comparison_row(name, variants[name], report))
        histories[name] = {
            stage: read_log_history(Path(report["outputs"][f"{stage}_adapter"]).parent)
            for stage in TRAINING_STAGES
        }
    experiment = next(iter(recipes.values())).experiment
    tracker = Tracker(Path(workspace).resolve(), experiment)
    run_id = tracker.start_parent("sweep", {"docqa.sweep": ",".join(variants)})
    tracker.log_table(run_id, rows, "sweep_comparison.json")
    tracker.log_figure(run_id, overlaid_losses(histories), "sweep_losses.png")
    tracker.end(run_id)
    create_table_artifact(key="docqa-sweep", table=rows, description="Sweep: held-out figures per variant")
    return rows
