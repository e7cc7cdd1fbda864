"""After each stage: its key figures for the report table, its part of the run report, and its MLflow
record (metrics, datasets, artifacts). A cached stage is recorded too, from its saved outputs, so every
parent run in MLflow is complete on its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from docqa.outputs import (
    AUGMENT_TEXTS_FILE,
    LOG_HISTORY_FILE,
    AugmentOutput,
    ChunkOutput,
    EvalOutput,
    IngestOutput,
    SynthesizeOutput,
    TrainOutput,
    chunks_file,
    qa_file,
    read_document_chunks,
    read_documents,
    read_flagged_chunks,
    read_generations,
    read_log_history,
)
from docqa.report import DocumentReport, FlaggedChunk, RunReport
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
        self.report.outputs["ingest"] = output.path
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
                hidden_text=d.hidden_text,
                hidden_text_kept=d.hidden_text_kept,
            )
            for d in documents
        ]
        self.report.counts.update(
            documents_ok=output.documents_ok,
            documents_failed=output.documents_failed,
            documents_duplicate=output.documents_duplicate,
            pages=output.pages,
            documents_with_hidden_text=output.documents_with_hidden_text,
            hidden_text_chars=output.hidden_text_chars,
        )
        self.tracker.log_metrics(run_id, output.metrics(cached))
        rows = [
            d.model_dump(include={"path", "sha256", "status", "reason", "pages", "title", "hidden_text"})
            for d in self.report.documents
        ]
        self.tracker.log_table(run_id, rows, "documents.json")
        return output.key_figures(cached).model_dump()

    def _chunk(self, run_id: str, output: ChunkOutput, cached: bool) -> dict[str, Any]:
        per_document = read_document_chunks(Path(output.path))
        self.report.outputs["chunks"] = output.path
        for document in self.report.documents:
            info = per_document.get(document.doc_id)
            if info is not None and document.duplicate_of is None:  # a duplicate's chunks count once
                document.chunks, document.split = info["chunks"], info["split"]
        self.report.counts.update(
            chunks=output.chunks,
            chunks_train=output.train_chunks,
            chunks_knowledge=output.knowledge_chunks,
            chunks_eval=output.eval_chunks,
            chunks_duplicate=output.duplicate_chunks,
            chunks_short_dropped=output.short_chunks_dropped,
            chunks_instruction_like=output.instruction_like_chunks,
            chunks_instruction_like_dropped=output.instruction_like_dropped,
        )
        self.report.instruction_like_chunks = [
            FlaggedChunk.model_validate(entry) for entry in read_flagged_chunks(Path(output.path))
        ]
        self.tracker.log_metrics(run_id, output.metrics(cached))
        frame = pd.read_parquet(chunks_file(Path(output.path)))
        for target in (run_id, self.report.mlflow_run_id):
            self.tracker.log_dataset(
                target, frame, "chunks", output.digest, chunks_file(Path(output.path)), "pretraining"
            )
        return output.key_figures(cached).model_dump()

    def _synthesize(self, run_id: str, output: SynthesizeOutput, cached: bool) -> dict[str, Any]:
        self.report.counts.update(
            qa_train=output.qa_train,
            qa_knowledge=output.qa_knowledge,
            qa_eval=output.qa_eval,
            synthesis_requests=output.requests_now(cached),
        )
        self.report.synthesis = output.report_figures()
        self.report.outputs["synthesis"] = output.path
        self.report.contamination = output.contamination_figures()
        self.tracker.log_metrics(run_id, output.metrics(cached))
        folder = Path(output.path)
        for split, context in (("train", "training"), ("knowledge", "evaluation"), ("eval", "evaluation")):
            file = qa_file(folder, split)
            frame = pd.read_parquet(file)
            for target in (run_id, self.report.mlflow_run_id):
                self.tracker.log_dataset(target, frame, f"qa_{split}", output.qa_digest, file, context)
        for name in SYNTHESIS_ARTIFACTS:
            if (folder / name).is_file():
                self.tracker.log_artifact(run_id, folder / name, "synthesis")
        return output.key_figures(cached).model_dump()

    def _augment(self, run_id: str, output: AugmentOutput, cached: bool) -> dict[str, Any]:
        self.report.counts.update(
            augment_rewrites=output.rewrites_kept,
            augment_rewrites_contaminated=output.rewrites_contaminated,
            augment_qa_texts=output.qa_texts,
        )
        self.report.outputs["augment"] = output.path
        if self.report.contamination is not None:  # synthesis's block, which augmentation completes
            self.report.contamination.rewrites_checked = output.rewrites_made
            self.report.contamination.rewrites_removed = output.rewrites_contaminated
        self.tracker.log_metrics(run_id, output.metrics(cached))
        folder = Path(output.path)
        file = folder / AUGMENT_TEXTS_FILE
        frame = pd.read_parquet(file)
        for target in (run_id, self.report.mlflow_run_id):
            self.tracker.log_dataset(target, frame, "augmented", output.texts_digest, file, "pretraining")
        for name in ("chunk_accounting.jsonl", "contamination.json", "summary.json"):
            self.tracker.log_artifact(run_id, folder / name, "augment")
        return output.key_figures(cached).model_dump()

    def _train(self, stage: str, run_id: str, output: TrainOutput, cached: bool) -> dict[str, Any]:
        history = read_log_history(Path(output.path))
        if cached:  # a run that trained logged its curves live
            self.tracker.log_history(run_id, history)
        self.tracker.log_metrics(run_id, output.metrics())
        self.tracker.log_figure(run_id, loss_figure({stage: history}), f"{stage}_loss.png")
        self.tracker.log_artifact(run_id, Path(output.path) / LOG_HISTORY_FILE)
        self.report.outputs[f"{stage}_adapter"] = output.adapter_path
        # a cached output was trained (and maybe resumed) by an earlier run, not by this one
        self.report.stages[stage].resumed_from_step = None if cached else output.resumed_from_step
        self.report.stages[stage].selected_step = output.selected_step
        if output.resumed_from_step is not None and not cached:
            self.tracker.set_tags(run_id, {"docqa.resumed_from_step": output.resumed_from_step})
        return output.key_figures().model_dump()

    def _pretrain(self, run_id: str, output: TrainOutput, cached: bool) -> dict[str, Any]:
        return self._train("pretrain", run_id, output, cached)

    def _sft(self, run_id: str, output: TrainOutput, cached: bool) -> dict[str, Any]:
        self.report.metrics.trainable_parameters = output.trainable_parameters
        return self._train("sft", run_id, output, cached)

    def _evaluate(self, run_id: str, output: EvalOutput, cached: bool) -> dict[str, Any]:
        figures = output.figures
        self.report.evaluation = figures
        self.tracker.log_metrics(run_id, output.metrics())
        rows = [g.model_dump() for g in read_generations(Path(output.path))]
        self.tracker.log_table(run_id, rows, "generations.json")
        self.tracker.log_artifact(run_id, Path(output.path) / "metrics.json")  # with error examples
        self.tracker.set_tags(
            run_id, {"docqa.forgetting_gate": "passed" if figures.forgetting.passed else "failed"}
        )
        self.report.outputs["evaluation"] = output.path
        return output.key_figures().model_dump()


def record_parent(
    tracker: Tracker,
    report: RunReport,
    pretrained: TrainOutput,
    tuned: TrainOutput,
    evaluation: EvalOutput,
) -> None:
    """The parent run: the evaluation's metrics and the combined loss curves (both adapters and the
    tokenizer go into the run's model package, logged as ``model``)."""
    run_id = report.mlflow_run_id
    tracker.log_metrics(run_id, evaluation.metrics())
    tracker.log_metrics(run_id, {"trainable_parameters": tuned.trainable_parameters})
    histories = {
        "pretrain": read_log_history(Path(pretrained.path)),
        "sft": read_log_history(Path(tuned.path)),
    }
    tracker.log_figure(run_id, loss_figure(histories), "loss_curves.png")
