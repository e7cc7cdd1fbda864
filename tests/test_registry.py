"""The promotion gate and the registry: the champion moves only to a version that taught more about the
documents (knowledge_gain) than it on the same questions and passes the forgetting gate; a champion
measured on other questions is scored again first. Against a real MLflow store (SQLite), with packages
written by the real writer."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from docqa.figures import RegistryRecord
from docqa.outputs import BaseModelRef
from docqa.package import ModelManifest, PackagedDocument, read_manifest, resolve_model, write_package
from docqa.promotion import register_and_promote
from docqa.registry import data_diff, decide
from docqa.report import DocumentReport, RunReport
from docqa.settings import ModelSettings, Recipe, RegistrySettings
from docqa.tracking import Tracker

GATE = RegistrySettings()


def figures(gain: float | None, forgetting_passed: bool = True) -> dict[str, float]:
    values = {
        "knowledge_gain": gain,
        "knowledge_recall": 0.3,
        "control_recall": 0.1,
        "forgetting_ratio": 1.0 if forgetting_passed else 2.0,
        "forgetting_passed": float(forgetting_passed),
    }
    return {key: value for key, value in values.items() if value is not None}


def test_first_version_becomes_champion_only_if_it_taught_something_and_passes_the_forgetting_gate():
    assert decide(figures(0.1), None, GATE).alias == "champion"
    failed = decide(figures(0.1, forgetting_passed=False), None, GATE)
    assert failed.alias == "challenger" and "forgetting" in failed.reasons[0]
    lenient = RegistrySettings(require_forgetting_pass=False)
    assert decide(figures(0.1, forgetting_passed=False), None, lenient).alias == "champion"
    nothing = decide(figures(0.0), None, GATE)
    assert nothing.alias == "challenger" and "taught nothing" in nothing.reasons[0]
    unmeasured = decide(figures(None), None, GATE)
    assert unmeasured.alias == "challenger" and "no knowledge_gain" in unmeasured.reasons[0]


@pytest.mark.parametrize(
    ("candidate", "alias", "failed"),
    [
        (figures(0.30), "champion", []),
        (figures(0.20), "challenger", ["champion's"]),  # a tie is not a win
        (figures(0.10), "challenger", ["champion's"]),
        (figures(-0.10), "challenger", ["min_knowledge_gain", "champion's"]),
        (figures(0.30, forgetting_passed=False), "challenger", ["forgetting"]),
    ],
)
def test_a_challenger_must_beat_the_champions_knowledge_gain(candidate, alias, failed):
    verdict = decide(candidate, figures(0.20), GATE, champion_version="3", compared_on="same-heldout")
    assert verdict.alias == alias
    if failed:
        assert len(verdict.reasons) == len(failed)
        assert all(word in reason for word, reason in zip(failed, verdict.reasons, strict=True))
    assert verdict.champion_version == "3"


def test_the_gate_thresholds_come_from_settings():
    champion = figures(0.20)
    demanding = RegistrySettings(min_gain_over_champion=0.05)
    assert decide(figures(0.24), champion, demanding).alias == "challenger"
    assert decide(figures(0.26), champion, demanding).alias == "champion"
    first = RegistrySettings(min_knowledge_gain=0.1)
    assert decide(figures(0.08), None, first).alias == "challenger"
    assert decide(figures(0.12), None, first).alias == "champion"


def test_data_diff_compares_documents_by_content():
    def doc(path: str, sha: str) -> PackagedDocument:
        return PackagedDocument(path=path, sha256=sha, split="train", chunks=3)

    champion = [doc("a.pdf", "1"), doc("b.pdf", "2"), doc("c.pdf", "3")]
    candidate = [doc("renamed-a.pdf", "1"), doc("b.pdf", "22"), doc("d.pdf", "4")]
    diff = data_diff(
        candidate, champion, {"train": 40, "knowledge": 8, "eval": 9}, {"train": 30, "eval": 9}, "2"
    )
    assert diff.documents_added == ["b.pdf", "d.pdf"]  # b.pdf was edited: its new content is new
    assert diff.documents_removed == ["b.pdf", "c.pdf"]
    assert diff.documents_unchanged == 1
    assert diff.qa == {
        "train": {"candidate": 40, "champion": 30},
        "knowledge": {"candidate": 8, "champion": 0},
        "eval": {"candidate": 9, "champion": 9},
    }


class Runs:
    """Registers runs with hand-set figures: each is a real package, logged and registered."""

    def __init__(self, workspace: Path):
        self.workspace = workspace
        self.tracker = Tracker(workspace, "registry-test")
        self.recipe = Recipe(name="gate")
        self.rescored: list[str] = []
        self.rescore_figures = figures(0.0)

    def rescore(self, champion: Path) -> dict[str, float]:
        self.rescored.append(read_manifest(champion).metrics["knowledge_gain"])
        return self.rescore_figures

    def register(self, metrics: dict[str, float], heldout: str, documents: dict[str, str]) -> RegistryRecord:
        report = RunReport(flow_run_id="f", flow_run_name="r", recipe="gate", workspace="w", docs="d")
        report.documents = [
            DocumentReport(
                path=p, doc_id=s, sha256=s, status="ok", reason=None, pages=1, chunks=2, split="train"
            )
            for p, s in documents.items()
        ]
        report.mlflow_run_id = self.tracker.start_parent("r", {})
        adapters = {}
        for name in ("pretrain", "sft"):  # the registry never loads them: any files stand in
            adapters[name] = self.workspace / "adapters" / f"{heldout}-{metrics['knowledge_gain']}-{name}"
            adapters[name].mkdir(parents=True)
            (adapters[name] / "adapter_config.json").write_text("{}")
        base = BaseModelRef(path="org/model", digest="b", tokenizer_digest="t", source="hub")
        manifest = ModelManifest(
            recipe="gate", base=base, base_packaged=False, model=ModelSettings(), corpus_fingerprint="c",
            heldout_digest=heldout, metrics=metrics, qa_counts={"train": 10, "eval": 4},
        )  # fmt: skip
        package = write_package(
            self.workspace / "packages", manifest, adapters, None, self.recipe, report.model_dump(mode="json")
        )
        self.tracker.log_artifacts(report.mlflow_run_id, package, "model")
        record = register_and_promote(self.tracker, report, self.recipe, package, self.rescore)
        self.tracker.end(report.mlflow_run_id)
        return record


def test_the_champion_moves_only_when_beaten_on_the_same_heldout_data(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCQA_CACHE_DIR", str(tmp_path / "cache"))
    runs = Runs(tmp_path)
    client = MlflowClient(runs.tracker.uri)
    docs = {"a.pdf": "1", "b.pdf": "2"}

    first = runs.register(figures(0.20), "heldout-A", docs)
    assert (first.version, first.alias) == ("1", "champion")

    worse = runs.register(figures(0.15), "heldout-A", docs)
    assert worse.alias == "challenger" and worse.verdict.compared_on == "same-heldout"
    assert client.get_model_version_by_alias("docqa-gate", "champion").version == 1
    assert runs.rescored == []  # same questions: the registered figures are compared

    better = runs.register(figures(0.25), "heldout-A", {**docs, "c.pdf": "3"})
    assert better.alias == "champion" and better.verdict.champion["knowledge_gain"] == 0.20
    assert better.data_diff.documents_added == ["c.pdf"]
    assert client.get_model_version_by_alias("docqa-gate", "champion").version == 3
    assert client.get_model_version_by_alias("docqa-gate", "challenger").version == 2

    # new questions: the champion (v3) is scored again on them instead of comparing unlike figures
    runs.rescore_figures = figures(0.05)
    moved = runs.register(figures(0.10), "heldout-B", docs)
    assert runs.rescored == [0.25]  # the champion's package was fetched and scored
    assert moved.verdict.compared_on == "rescored" and moved.alias == "champion"
    assert moved.data_diff.documents_removed == ["c.pdf"]

    version = client.get_model_version("docqa-gate", moved.version)
    assert version.tags["docqa.promotion"] == "champion"
    assert float(version.tags["docqa.metric.knowledge_gain"]) == 0.10
    champion = resolve_model("models:/docqa-gate@champion", runs.tracker.uri)
    assert read_manifest(champion).heldout_digest == "heldout-B"
    artifacts = {a.path for a in client.list_artifacts(version.run_id, "registry")}
    assert artifacts == {f"registry/promotion-docqa-gate-v{moved.version}.json"}


def test_each_tracking_store_s_version_1_resolves_to_its_own_package(tmp_path, monkeypatch):
    """Every store numbers its versions from 1; one machine-wide download cache must not hand one
    workspace's v1 to another."""
    monkeypatch.setenv("DOCQA_CACHE_DIR", str(tmp_path / "cache"))
    first, second = Runs(tmp_path / "first"), Runs(tmp_path / "second")
    assert first.register(figures(0.20), "heldout-first", {"a.pdf": "1"}).version == "1"
    assert second.register(figures(0.30), "heldout-second", {"b.pdf": "2"}).version == "1"
    folders = [resolve_model("models:/docqa-gate/1", runs.tracker.uri) for runs in (first, second, first)]
    held_out = [read_manifest(folder).heldout_digest for folder in folders]
    assert held_out == ["heldout-first", "heldout-second", "heldout-first"]
    assert folders[0] == folders[2] != folders[1]  # each store's download is kept and reused
