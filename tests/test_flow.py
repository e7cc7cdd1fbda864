"""The whole pipeline as a Prefect flow against a real (test) Prefect server and a real MLflow store:
the report contract, the MLflow record, and the three caching behaviours."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from pydoc_data.topics import topics

import pytest
import torch
from conftest import tiny_recipe, write_topic_documents
from mlflow.tracking import MlflowClient
from pdf_factory import write_encrypted_pdf, write_report_pdf, write_truncated_pdf

from docqa.modeling import load_adapted_model
from docqa.settings import STAGES, Recipe

pytestmark = pytest.mark.slow

RECIPE = tiny_recipe(split={"eval_documents": ["names.txt"], "eval_fraction": 0.01})


def run_pipeline(docs: Path, workspace: Path, recipe: Recipe = RECIPE) -> dict:
    from flows.pipeline import docqa_pipeline

    sections = {name: getattr(recipe, name) for name in ("model", "split", *STAGES)}
    return docqa_pipeline(
        docs=str(docs), workspace=str(workspace), recipe_name=recipe.name, experiment="docqa-test", **sections
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    docs = write_topic_documents(tmp_path_factory.mktemp("corpus") / "docs")
    report = write_report_pdf(docs / "inspection-report.pdf", pages=4)
    write_truncated_pdf(report, docs / "broken.pdf")
    write_encrypted_pdf(report, docs / "locked.pdf")
    return docs


@pytest.fixture(scope="module")
def cold(prefect_harness, corpus, tmp_path_factory):
    workspace = tmp_path_factory.mktemp("workspace")
    return run_pipeline(corpus, workspace), workspace


def test_report_contract(cold):
    report, workspace = cold
    assert report["status"] == "completed"
    assert json.loads((workspace / "reports" / "latest.json").read_text()) == report
    assert json.loads((workspace / "reports" / f"{report['flow_run_name']}.json").read_text()) == report
    for stage in STAGES:
        entry = report["stages"][stage]
        assert entry["status"] == "completed" and entry["cached"] is False and entry["seconds"] >= 0
        assert entry["figures"], f"{stage} reports key figures"
    documents = {Path(d["path"]).name: d for d in report["documents"]}
    assert set(documents) == {
        "statements.txt", "expressions.txt", "functions.txt", "names.txt",
        "inspection-report.pdf", "broken.pdf", "locked.pdf",
    }  # fmt: skip
    assert documents["broken.pdf"]["status"] == "failed" and "truncated" in documents["broken.pdf"]["reason"]
    assert documents["locked.pdf"]["status"] == "failed" and "encrypted" in documents["locked.pdf"]["reason"]
    assert documents["names.txt"]["split"] == "eval" and documents["statements.txt"]["split"] == "train"
    assert documents["inspection-report.pdf"]["pages"] == 4
    ok = [d for d in report["documents"] if d["status"] == "ok"]
    assert all(d["chunks"] > 0 and len(d["sha256"]) == 64 for d in ok)
    assert all(d["sha256"].startswith(d["doc_id"]) for d in report["documents"])  # the id chunks name
    counts = report["counts"]
    assert (counts["documents_ok"], counts["documents_failed"]) == (5, 2)
    assert counts["chunks"] == sum(d["chunks"] for d in ok)  # every chunk is accounted to a document
    assert counts["synthesis_requests"] == counts["chunks"]
    assert counts["qa_train"] > 0 and counts["qa_eval"] > 0
    metrics = report["metrics"]
    assert set(metrics["perplexity"]) == {"base", "pretrained", "sft"}
    assert set(metrics["rouge"]) == {"base", "sft"}
    assert metrics["trainable_parameters"] > 0


def test_mlflow_holds_the_run_its_stages_datasets_and_loadable_adapters(cold, tiny_base):
    report, workspace = cold
    client = MlflowClient(tracking_uri=f"sqlite:///{workspace / 'mlflow.db'}")
    parent = client.get_run(report["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["prefect.flow_run_id"] == report["flow_run_id"]
    assert parent.data.params["pretrain.lora.r"] == str(RECIPE.pretrain.lora.r)
    assert parent.data.metrics["perplexity_sft"] == pytest.approx(report["metrics"]["perplexity"]["sft"])
    assert parent.data.metrics["rougeL_base"] == pytest.approx(report["metrics"]["rouge"]["base"]["rougeL"])
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(r.info.run_name for r in children) == sorted(STAGES)
    pretrain_run = next(r for r in children if r.info.run_name == "pretrain")
    losses = client.get_metric_history(pretrain_run.info.run_id, "loss")
    assert len(losses) >= 2 and len({m.step for m in losses}) == len(losses)  # a curve, step by step
    assert client.get_metric_history(pretrain_run.info.run_id, "eval_loss")
    inputs = {d.dataset.name: d.dataset.digest for d in parent.inputs.dataset_inputs}
    assert set(inputs) == {"chunks", "qa_train", "qa_eval"}
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"adapters", "loss_curves.png", "report", "tokenizer"} <= artifacts
    assert "pretrain_loss.png" in {a.path for a in client.list_artifacts(pretrain_run.info.run_id)}
    # the logged adapters load again and give the same logits as the workspace's
    downloaded = Path(client.download_artifacts(parent.info.run_id, "adapters", str(workspace / "download")))
    outputs = report["outputs"]
    batch = torch.randint(0, 500, (1, 16))
    with torch.no_grad():
        local = load_adapted_model(
            tiny_base,
            RECIPE.model,
            {"pretrain": Path(outputs["pretrain_adapter"]), "sft": Path(outputs["sft_adapter"])},
        )(input_ids=batch).logits
        logged = load_adapted_model(
            tiny_base, RECIPE.model, {"pretrain": downloaded / "pretrain", "sft": downloaded / "sft"}
        )(input_ids=batch).logits
    assert torch.equal(local, logged)


def test_prefect_holds_link_and_metrics_artifacts(cold):
    from prefect.client.orchestration import get_client

    report, _ = cold
    # the REST filter the UI uses (prefect 3.8's sync read_artifacts sends nulls the server refuses)
    query = {"artifacts": {"flow_run_id": {"any_": [report["flow_run_id"]]}}, "limit": 50}
    with get_client(sync_client=True) as client:
        artifacts = client.request("POST", "/artifacts/filter", json=query).json()
    by_key = {a["key"]: a for a in artifacts}
    assert {"mlflow-run", "docqa-metrics", "docqa-generations"} <= set(by_key)
    assert report["mlflow_run_id"] in by_key["mlflow-run"]["data"]


def test_second_run_trains_nothing(cold, corpus):
    first, workspace = cold
    second = run_pipeline(corpus, workspace)
    assert all(second["stages"][s]["cached"] for s in STAGES)
    assert second["counts"]["synthesis_requests"] == 0
    assert second["metrics"] == first["metrics"]
    assert second["mlflow_run_id"] != first["mlflow_run_id"]  # a parent run of its own, complete on its own


def test_changing_a_training_setting_retrains_but_reuses_the_data(cold, corpus):
    _, workspace = cold
    changed = RECIPE.model_copy(
        update={"pretrain": RECIPE.pretrain.model_copy(update={"learning_rate": 1e-3})}
    )
    report = run_pipeline(corpus, workspace, changed)
    cached = {s: report["stages"][s]["cached"] for s in STAGES}
    assert cached == {
        "ingest": True, "chunk": True, "synthesize": True, "pretrain": False, "sft": False, "evaluate": False,
    }  # fmt: skip
    assert report["counts"]["synthesis_requests"] == 0


def test_moving_the_documents_folder_trains_nothing(cold, corpus, tmp_path):
    first, workspace = cold
    moved = tmp_path / "elsewhere"
    shutil.copytree(corpus, moved)
    report = run_pipeline(moved, workspace)
    # the new paths are re-fingerprinted and reported, everything after ingest is served from cache
    assert report["stages"]["ingest"]["cached"] is False
    assert report["stages"]["ingest"]["figures"]["extracted_now"] == 0
    assert all(report["stages"][s]["cached"] for s in ("chunk", "synthesize", "pretrain", "sft", "evaluate"))
    assert all(d["path"].startswith(str(moved)) for d in report["documents"])
    assert [d["chunks"] for d in report["documents"]] == [d["chunks"] for d in first["documents"]]
    assert report["metrics"] == first["metrics"]


def test_adding_a_document_processes_only_that_document(cold, corpus, tmp_path):
    first, workspace = cold
    docs = tmp_path / "docs"
    shutil.copytree(corpus, docs)
    (docs / "operators.txt").write_text("\n\n".join(topics[k] for k in ("binary", "unary", "power")))
    # the same workspace, documents moved: content, not paths, decides what is reused
    report = run_pipeline(docs, workspace)
    assert report["stages"]["ingest"]["cached"] is False
    assert report["stages"]["ingest"]["figures"]["extracted_now"] == 1
    assert report["stages"]["chunk"]["figures"]["chunked_now"] == 1
    new = next(d for d in report["documents"] if d["path"].endswith("operators.txt"))
    assert new["chunks"] > 0
    assert report["counts"]["synthesis_requests"] == new["chunks"]
    assert not any(report["stages"][s]["cached"] for s in ("pretrain", "sft", "evaluate"))
    before = {Path(d["path"]).name: d["split"] for d in first["documents"]}
    after = {Path(d["path"]).name: d["split"] for d in report["documents"]}
    assert {name: after[name] for name in before} == before  # nobody moved between train and eval


def test_a_failing_stage_fails_the_run_with_its_reason(prefect_harness, corpus, tmp_path):
    from flows.pipeline import StageFailed

    no_held_out = tiny_recipe(split={"eval_fraction": 1e-9, "eval_documents": []})
    with pytest.raises(StageFailed, match="stage chunk failed"):
        run_pipeline(corpus, tmp_path / "ws", no_held_out)
    report = json.loads((tmp_path / "ws" / "reports" / "latest.json").read_text())
    assert report["status"] == "failed" and "no eval document" in report["error"]
    assert report["stages"]["ingest"]["status"] == "completed"
    assert (
        report["stages"]["chunk"]["status"] == "failed"
        and "split.eval_documents" in report["stages"]["chunk"]["error"]
    )
    assert all(
        report["stages"][s]["status"] == "not_run" for s in ("synthesize", "pretrain", "sft", "evaluate")
    )
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'ws' / 'mlflow.db'}")
    assert client.get_run(report["mlflow_run_id"]).info.status == "FAILED"
