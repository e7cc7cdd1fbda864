"""The last step of a successful run: package the model, register it, and let the gate decide its alias.

The verdict, the figures compared and a data diff against the champion go to the run report
(``registry``), to the parent MLflow run (``promotion.json`` and tags) and to the version's tags.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from docqa.figures import RegistryRecord
from docqa.outputs import (
    PRETRAIN_ADAPTER,
    SFT_ADAPTER,
    BaseModelRef,
    EvalOutput,
    SynthesizeOutput,
    TrainOutput,
)
from docqa.package import (
    ModelManifest,
    corpus_fingerprint,
    read_documents,
    read_manifest,
    resolve_model,
    write_package,
)
from docqa.registry import (
    apply_verdict,
    data_diff,
    headline_metrics,
    heldout_digest,
    judge_against_champion,
    model_name,
    register_version,
)
from docqa.report import RunReport
from docqa.settings import Recipe
from docqa.tracking import Tracker
from docqa.workspace import write_json_atomic

PACKAGE_ARTIFACT = "model"


def package_run(
    workspace: Path,
    report: RunReport,
    recipe: Recipe,
    base: BaseModelRef,
    qa: SynthesizeOutput,
    pretrained: TrainOutput,
    tuned: TrainOutput,
    evaluation: EvalOutput,
    tokenizer_dir: Path | None,
) -> Path:
    """The run's model package under ``workspace/packages`` (see :mod:`docqa.package`)."""
    documents = [d.model_dump() for d in report.documents]
    trained = [d for d in documents if d["status"] == "ok" and d["duplicate_of"] is None]
    held_out = [d["sha256"] for d in trained if d["split"] == "eval"]
    manifest = ModelManifest(
        recipe=recipe.name,
        base=base,
        base_packaged=base.source == "bootstrap",  # small and rebuilt per machine otherwise: ship it
        model=recipe.model,
        corpus_fingerprint=corpus_fingerprint(trained),
        heldout_digest=heldout_digest(evaluation, held_out, recipe.evaluate),
        metrics=headline_metrics(evaluation),
        qa_counts={"train": qa.qa_train, "knowledge": qa.qa_knowledge, "eval": qa.qa_eval},
    )
    adapters = {PRETRAIN_ADAPTER: Path(pretrained.adapter_path), SFT_ADAPTER: Path(tuned.adapter_path)}
    # the report as it stands once every stage has completed; the promotion verdict is not known yet
    # (the model version's tags and registry/promotion-*.json hold it), nor the run's end
    snapshot = report.model_dump(mode="json", exclude={"status", "error", "finished_at", "registry"})
    return write_package(workspace / "packages", manifest, adapters, tokenizer_dir, recipe, snapshot)


def register_and_promote(
    tracker: Tracker,
    report: RunReport,
    recipe: Recipe,
    package: Path,
    rescore: Callable[[Path], dict[str, float]],
) -> RegistryRecord:
    """Register the package (logged to the parent run as ``model``) as a new version and move
    ``champion`` or ``challenger`` to it.

    ``rescore(champion_package)``: the champion's headline figures on this run's held-out data (called
    only when the champion was measured on other held-out data)."""
    manifest = read_manifest(package)
    run_id = report.mlflow_run_id
    name = model_name(recipe.registry, recipe.name)
    tags = {
        **{f"metric.{k}": v for k, v in manifest.metrics.items()},
        "heldout_digest": manifest.heldout_digest,
        "corpus_fingerprint": manifest.corpus_fingerprint,
        "recipe": recipe.name,
        "prefect.flow_run_id": report.flow_run_id,
    }
    version = register_version(tracker.client, name, run_id, PACKAGE_ARTIFACT, tags)

    def fetch(champion_version: str) -> Path:  # downloaded once per version (resolve_model's cache)
        return resolve_model(f"models:/{name}/{champion_version}", tracker.uri)

    verdict = judge_against_champion(
        tracker.client,
        name,
        manifest.metrics,
        manifest.heldout_digest,
        recipe.registry,
        rescore=lambda champion: rescore(fetch(str(champion.version))),
        exclude_version=str(version.version),
    )
    champion_dir = fetch(verdict.champion_version) if verdict.champion_version is not None else None
    diff = data_diff(
        read_documents(package),
        read_documents(champion_dir) if champion_dir else None,
        manifest.qa_counts,
        read_manifest(champion_dir).qa_counts if champion_dir else None,
        verdict.champion_version,
    )
    apply_verdict(tracker.client, name, version, verdict)
    record = RegistryRecord(
        model_name=name,
        version=str(version.version),
        alias=verdict.alias,
        model_uri=f"models:/{name}/{version.version}",
        verdict=verdict,
        data_diff=diff,
    )
    path = package.parent / f"promotion-{name}-v{version.version}.json"
    write_json_atomic(path, record.model_dump(mode="json"))
    tracker.log_artifact(run_id, path, "registry")
    tracker.set_tags(
        run_id,
        {"docqa.model_version": f"{name}/{version.version}", "docqa.promotion": verdict.alias},
    )
    return record
