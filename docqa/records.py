"""After each stage: its key figures for the report table, its part of the run report, and its MLflow
record (metrics, datasets, artifacts). A cached stage is recorded too, from its saved outputs, so every
parent run in MLflow is complete on its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from docqa.outputs import (
    LOG_HISTORY_FILE,
    ChunkOutput,
    EvalOutput,
    SynthesizeOutput,
    TrainOutput,
    chunks_file,
    qa_file,
    read_document_chunks,
    read_generations,
    read_log_history,
)
from docqa.report import DocumentReport, RunReport
from docqa.stages.ingest import IngestOutput, read_documents
from docqa.tracking import Tracker, loss_figure

SYNTHESIS_ARTIFACTS = (
    "summary.json",
    "raw_replies.jsonl",
    "judge_replies.jsonl",
    "chunk_accounting.jsonl",
    "contamination.json",
    "coverage.png",
)


class StageRecorder:
    """Records stage outputs into the report and MLflow for one pipeline run."""

    def __init__(self, tracker: Tracker, report: RunReport):
        self.tracker = tracker
        self.report = report

    def record(self, stage: str, run_id: str, output: Any, cached: bool) -> dict[str, Any]:
        return getattr(self, f"_{stage}")(run_id, output, cached)

    def _ingest(self, run_id: str, output: IngestOutput, cached: bool) -> dict[str, Any]:
        documents = read_documents(Path(output.path))
        self.report.documents = [
            DocumentReport(
                path=d.path,
                doc_id=d.doc_id,
                sha256=d.sha256,
                status=d.status,
                reason=d.reason,
                pages=d.n_pages,
                chunks=0,
                split=None,
                duplicate_of=d.duplicate_of,
                title=d.title,
            )
            for d in documents
        ]
        self.report.counts.update(
            documents_ok=output.documents_ok,
            documents_failed=output.documents_failed,
            documents_duplicate=output.documents_duplicate,
            pages=output.pages,
        )
        figures = {
            "documents": output.documents,
            "ok": output.documents_ok,
            "failed": output.documents_failed,
            "duplicates": output.documents_duplicate,
            "pages": output.pages,
            "extracted_now": 0 if cached else output.extracted,
        }
        self.tracker.log_metrics(run_id, figures)
        rows = [
            d.model_dump(include={"path", "sha256", "status", "reason", "pages", "title"})
            for d in self.report.documents
        ]
        self.tracker.log_table(run_id, rows, "documents.json")
        return figures

    def _chunk(self, run_id: str, output: ChunkOutput, cached: bool) -> dict[str, Any]:
        per_document = read_document_chunks(Path(output.path))
        for document in self.report.documents:
            info = per_document.get(document.doc_id)
            if info is not None and document.duplicate_of is None:  # a duplicate's chunks count once
                document.chunks, document.split = info["chunks"], info["split"]
        self.report.counts.update(
            chunks=output.chunks,
            chunks_train=output.train_chunks,
            chunks_eval=output.eval_chunks,
            chunks_duplicate=output.duplicate_chunks,
        )
        figures = {
            "chunks": output.chunks,
            "train_docs": output.train_documents,
            "eval_docs": output.eval_documents,
            "duplicate_chunks": output.duplicate_chunks,
            "short_dropped": output.short_chunks_dropped,
            "chunked_now": 0 if cached else output.chunked,
        }
        self.tracker.log_metrics(run_id, figures)
        frame = pd.read_parquet(chunks_file(Path(output.path)))
        for target in (run_id, self.report.mlflow_run_id):
            self.tracker.log_dataset(
                target, frame, "chunks", output.digest, chunks_file(Path(output.path)), "pretraining"
            )
        return figures

    def _synthesize(self, run_id: str, output: SynthesizeOutput, cached: bool) -> dict[str, Any]:
        requests = 0 if cached else output.requests
        self.report.counts.update(
            qa_train=output.qa_train, qa_eval=output.qa_eval, synthesis_requests=requests
        )
        self.report.synthesis = output.report_figures()
        self.report.outputs["synthesis"] = output.path
        self.report.contamination = {
            "eval_pairs_checked": output.eval_pairs_checked,
            "eval_pairs_removed": output.eval_pairs_removed,
        }
        figures = {
            "qa_train": output.qa_train,
            "qa_eval": output.qa_eval,
            "requests": requests,
            "failed": output.chunks_failed,
            "unparsed": output.replies_unparsed,
            "rejected": output.pairs_rejected,
            "contaminated": output.eval_pairs_removed,
        }
        metrics = {
            **{k: v for k, v in self.report.synthesis.items() if k != "rejected_by_reason"},
            **{f"rejected_{reason}": n for reason, n in output.rejected_by_reason.items()},
            **self.report.contamination,
            "requests": requests,
            "chunks_near_duplicate": output.chunks_near_duplicate,
            "chunks_without_pairs": output.chunks_without_pairs,
            "judge_failed": output.judge_failed,
        }
        self.tracker.log_metrics(run_id, metrics)
        folder = Path(output.path)
        for split, context in (("train", "training"), ("eval", "evaluation")):
            file = qa_file(folder, split)
            frame = pd.read_parquet(file)
            for target in (run_id, self.report.mlflow_run_id):
                self.tracker.log_dataset(target, frame, f"qa_{split}", output.qa_digest, file, context)
        for name in SYNTHESIS_ARTIFACTS:
            if (folder / name).is_file():
                self.tracker.log_artifact(run_id, folder / name, "synthesis")
        return figures

    def _train(self, stage: str, run_id: str, output: TrainOutput, cached: bool) -> dict[str, Any]:
        history = read_log_history(Path(output.path))
        if cached:  # a run that trained logged its curves live
            self.tracker.log_history(run_id, history)
        figures = {
            "steps": output.steps,
            "train_loss": round(output.train_loss, 4),
            "eval_loss": None if output.eval_loss is None else round(output.eval_loss, 4),
            "trainable": output.trainable_parameters,
            "tokens": output.train_tokens,
            "selected_step": output.selected_step,
        }
        self.tracker.log_metrics(run_id, {f"final_{k}": v for k, v in figures.items()})
        self.tracker.log_figure(run_id, loss_figure({stage: history}), f"{stage}_loss.png")
        self.tracker.log_artifact(run_id, Path(output.path) / LOG_HISTORY_FILE)
        self.report.outputs[f"{stage}_adapter"] = output.adapter_path
        # a cached output was trained (and maybe resumed) by an earlier run, not by this one
        self.report.stages[stage].resumed_from_step = None if cached else output.resumed_from_step
        self.report.stages[stage].selected_step = output.selected_step
        if output.resumed_from_step is not None and not cached:
            self.tracker.set_tags(run_id, {"docqa.resumed_from_step": output.resumed_from_step})
        return figures

    def _pretrain(self, run_id: str, output: TrainOutput, cached: bool) -> dict[str, Any]:
        return self._train("pretrain", run_id, output, cached)

    def _sft(self, run_id: str, output: TrainOutput, cached: bool) -> dict[str, Any]:
        self.report.metrics["trainable_parameters"] = output.trainable_parameters
        return self._train("sft", run_id, output, cached)

    def _evaluate(self, run_id: str, output: EvalOutput, cached: bool) -> dict[str, Any]:
        self.report.metrics["perplexity"] = output.perplexity
        self.report.metrics["rouge"] = output.rouge
        self.report.metrics["forgetting"] = output.forgetting
        if output.llm_judge is not None:
            self.report.metrics["llm_judge"] = output.llm_judge
        self.report.metrics["semantic_similarity"] = output.semantic_similarity
        self.report.metrics["recall"] = output.recall
        self.report.metrics["errors"] = {
            name: {kind: entry["count"] for kind, entry in kinds.items()}
            for name, kinds in output.errors.items()
        }
        self.report.metrics["eval_questions"] = output.eval_questions
        self.report.metrics["eval_tokens"] = output.eval_tokens
        metrics = evaluation_metrics(output)
        self.tracker.log_metrics(run_id, metrics)
        rows = [g.model_dump() for g in read_generations(Path(output.path))]
        self.tracker.log_table(run_id, rows, "generations.json")
        self.tracker.log_artifact(run_id, Path(output.path) / "metrics.json")  # with error examples
        self.tracker.set_tags(
            run_id, {"docqa.forgetting_gate": "passed" if output.forgetting["passed"] else "failed"}
        )
        self.report.outputs["evaluation"] = output.path
        return {
            "ppl_base": round(output.perplexity["base"], 2),
            "ppl_sft": round(output.perplexity["sft"], 2),
            "rougeL_base": round(output.rouge["base"]["rougeL"], 4),
            "rougeL_sft": round(output.rouge["sft"]["rougeL"], 4),
            "recall_base": round(output.recall["base"]["recalled"], 4),
            "recall_sft": round(output.recall["sft"]["recalled"], 4),
            "forgetting_ratio": round(output.forgetting["ratio"], 3),
            "forgetting_gate": "passed" if output.forgetting["passed"] else "FAILED",
        }


def evaluation_metrics(output: EvalOutput) -> dict[str, float]:
    metrics = {f"perplexity_{state}": value for state, value in output.perplexity.items()}
    for state, scores in output.rouge.items():
        metrics.update({f"{name}_{state}": value for name, value in scores.items()})
    for state in ("base", "tuned"):
        metrics[f"general_perplexity_{state}"] = output.forgetting[state]
    metrics["forgetting_ratio"] = output.forgetting["ratio"]
    if output.llm_judge is not None:
        metrics.update(
            {f"llm_judge_{s}": output.llm_judge[s] for s in ("base", "sft") if output.llm_judge[s]}
        )
    for state in output.recall:
        metrics[f"fact_recall_{state}"] = output.recall[state]["recalled"]
        metrics[f"mean_fact_recall_{state}"] = output.recall[state]["mean_recall"]
        metrics[f"semantic_similarity_{state}"] = output.semantic_similarity[state]
        metrics.update({f"errors_{kind}_{state}": e["count"] for kind, e in output.errors[state].items()})
    return metrics


def record_parent(
    tracker: Tracker,
    report: RunReport,
    pretrained: TrainOutput,
    tuned: TrainOutput,
    evaluation: EvalOutput,
) -> None:
    """The parent run: the headline metrics and the combined loss curves (both adapters and the
    tokenizer go into the run's model package, logged as ``model``)."""
    run_id = report.mlflow_run_id
    tracker.log_metrics(run_id, evaluation_metrics(evaluation))
    tracker.log_metrics(run_id, {"trainable_parameters": tuned.trainable_parameters})
    histories = {
        "pretrain": read_log_history(Path(pretrained.path)),
        "sft": read_log_history(Path(tuned.path)),
    }
    tracker.log_figure(run_id, loss_figure(histories), "loss_curves.png")
