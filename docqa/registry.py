"""The MLflow model registry and the promotion gate.

Every successful run registers its model package (``docqa.package``) as a version of ``docqa-<name>``.
The alias ``champion`` moves to the new version only if it passes the forgetting gate, its
``knowledge_gain`` exceeds ``registry.min_knowledge_gain`` and, when there is a champion, beats the
champion's on the *same* questions; otherwise the version gets ``challenger`` and the verdict says why.
When the questions changed since the champion was measured (new documents, other evaluation settings),
the champion is scored again on today's questions before the comparison: figures measured on different
questions are not compared.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from docqa.figures import DataDiff, Verdict
from docqa.hashing import json_digest
from docqa.outputs import EvalOutput, read_generations
from docqa.package import PackagedDocument
from docqa.settings import EvaluateSettings, RegistrySettings

CHAMPION, CHALLENGER = "champion", "challenger"
TAG_PREFIX = "docqa."


def headline_metrics(evaluation: EvalOutput) -> dict[str, float]:
    """The figures the gate compares (``knowledge_gain``, forgetting) and the registry shows."""
    figures = evaluation.figures
    sets = figures.sets
    values = {
        "knowledge_gain": figures.knowledge_gain.value,
        "knowledge_gain_controlled": float(figures.knowledge_gain.controlled),
        "knowledge_recall": sets["knowledge"].recall("final") if "knowledge" in sets else None,
        "control_recall": sets["control"].recall("final") if "control" in sets else None,
        "memorisation_recall": sets["memorisation"].recall("final") if "memorisation" in sets else None,
        "rag_recovery": figures.rag_recovery,
        "rougeL_control": sets["control"].answers["final"].rouge.rougeL if "control" in sets else None,
        "forgetting_ratio": figures.forgetting.ratio,
        "forgetting_passed": float(figures.forgetting.passed),
    }
    return {key: float(value) for key, value in values.items() if value is not None}


def heldout_digest(evaluation: EvalOutput, eval_documents: list[str], settings: EvaluateSettings) -> str:
    """What the figures were measured on: the held-out documents (by content), the questions and
    references asked in every set, and the evaluation settings that shape the scores."""
    questions = [(g.set, g.question, g.reference) for g in read_generations(Path(evaluation.path))]
    scoring = settings.model_dump(mode="json", exclude={"sample_generations", "batch_size", "llm_judge"})
    return json_digest({"documents": sorted(eval_documents), "questions": questions, "settings": scoring})


def decide(
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    settings: RegistrySettings,
    champion_version: str | None = None,
    compared_on: Literal["same-heldout", "rescored", "none"] = "none",
) -> Verdict:
    """The gate, as a pure function of the figures: every failed condition is a reason."""
    reasons: list[str] = []
    if settings.require_forgetting_pass and not candidate["forgetting_passed"]:
        reasons.append(
            f"forgetting gate failed: general-text perplexity ratio {candidate['forgetting_ratio']:.3f}"
        )
    gain = candidate.get("knowledge_gain")
    if gain is None:
        reasons.append("no knowledge_gain was measured (no knowledge question)")
    elif not gain > settings.min_knowledge_gain:
        reasons.append(
            f"knowledge_gain {gain:+.4f} does not exceed registry.min_knowledge_gain "
            f"{settings.min_knowledge_gain:+.4f}: it taught nothing measurable about the documents"
        )
    if champion is not None and gain is not None:
        needed = champion.get("knowledge_gain", float("-inf")) + settings.min_gain_over_champion
        if not gain > needed:
            reasons.append(
                f"knowledge_gain {gain:+.4f} does not beat the champion's "
                f"{champion.get('knowledge_gain', float('nan')):+.4f} (+{settings.min_gain_over_champion} "
                "required) on the same questions"
            )
    alias = CHALLENGER if reasons else CHAMPION
    if not reasons:
        reasons.append(
            "first version that passes the gate"
            if champion is None
            else "beats the champion's knowledge_gain on the same questions and passes the forgetting gate"
        )
    return Verdict(
        alias=alias,
        reasons=reasons,
        champion_version=champion_version,
        compared_on=compared_on if champion is not None else "none",
        candidate=candidate,
        champion=champion,
    )


def data_diff(
    candidate_docs: list[PackagedDocument],
    champion_docs: list[PackagedDocument] | None,
    candidate_qa: dict[str, int],
    champion_qa: dict[str, int] | None,
    champion_version: str | None,
) -> DataDiff:
    """Documents by content: a renamed file is unchanged, an edited one is removed and added."""
    old = {d.sha256: d.path for d in champion_docs or []}
    new = {d.sha256: d.path for d in candidate_docs}
    return DataDiff(
        champion_version=champion_version,
        documents_added=sorted(new[h] for h in new.keys() - old.keys()),
        documents_removed=sorted(old[h] for h in old.keys() - new.keys()),
        documents_unchanged=len(new.keys() & old.keys()),
        qa={
            split: {"candidate": candidate_qa.get(split, 0), "champion": (champion_qa or {}).get(split, 0)}
            for split in ("train", "knowledge", "eval")
        },
    )


def model_name(settings: RegistrySettings, recipe_name: str) -> str:
    return settings.model_name or f"docqa-{recipe_name}"


def current_champion(client: MlflowClient, name: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def register_version(
    client: MlflowClient, name: str, run_id: str, artifact_path: str, tags: dict[str, Any]
) -> ModelVersion:
    """A new version of ``name`` from the run's package artifact (the registered model made if new)."""
    try:
        client.create_registered_model(
            name, description="docqa: LoRA adapters trained on a document corpus (see each version's tags)"
        )
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    return client.create_model_version(
        name,
        source=f"runs:/{run_id}/{artifact_path}",
        run_id=run_id,
        tags={f"{TAG_PREFIX}{k}": str(v) for k, v in tags.items()},
    )


def version_metrics(version: ModelVersion) -> dict[str, float]:
    return {
        k.removeprefix(f"{TAG_PREFIX}metric."): float(v)
        for k, v in version.tags.items()
        if k.startswith(f"{TAG_PREFIX}metric.")
    }


def apply_verdict(client: MlflowClient, name: str, version: ModelVersion, verdict: Verdict) -> None:
    client.set_registered_model_alias(name, verdict.alias, version.version)
    client.set_model_version_tag(name, version.version, f"{TAG_PREFIX}promotion", verdict.alias)
    client.set_model_version_tag(name, version.version, f"{TAG_PREFIX}reasons", "; ".join(verdict.reasons))


def judge_against_champion(
    client: MlflowClient,
    name: str,
    candidate: dict[str, float],
    candidate_heldout: str,
    settings: RegistrySettings,
    rescore: Callable[[ModelVersion], dict[str, float]],
    exclude_version: str | None = None,
) -> Verdict:
    """Compare with the champion on the same held-out data: its registered figures when they were
    measured on exactly today's held-out data, else ``rescore(champion)`` (today's data, its model)."""
    champion = current_champion(client, name)
    if champion is None or str(champion.version) == exclude_version:
        return decide(candidate, None, settings)
    if champion.tags.get(f"{TAG_PREFIX}heldout_digest") == candidate_heldout:
        figures, compared_on = version_metrics(champion), "same-heldout"
    else:
        figures, compared_on = rescore(champion), "rescored"
    return decide(candidate, figures, settings, str(champion.version), compared_on)
