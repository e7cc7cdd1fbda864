"""What the two training stages share: trainer arguments from settings, step logging, saved outputs."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import Trainer, TrainerCallback

from docqa.hashing import tree_digest
from docqa.outputs import ADAPTER_DIR, LOG_HISTORY_FILE
from docqa.settings import TrainSettings
from docqa.workspace import new_tmp_dir, publish_dir, write_json_atomic

StepLogger = Callable[[dict[str, float], int], None]


def trainer_arguments(settings: TrainSettings, output_dir: Path, has_eval: bool) -> dict[str, Any]:
    """Keyword arguments for ``TrainingArguments``/``SFTConfig`` from a stage's settings."""
    return {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": settings.batch_size,
        "per_device_eval_batch_size": settings.batch_size,
        "gradient_accumulation_steps": settings.gradient_accumulation_steps,
        "gradient_checkpointing": settings.gradient_checkpointing,
        "learning_rate": settings.learning_rate,
        "lr_scheduler_type": settings.lr_scheduler,
        "warmup_steps": settings.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of all steps
        "weight_decay": settings.weight_decay,
        "num_train_epochs": settings.epochs,
        "max_steps": settings.max_steps,
        "max_grad_norm": settings.max_grad_norm,
        "optim": settings.optim,
        "logging_steps": settings.logging_steps,
        "eval_strategy": "steps" if has_eval else "no",
        "eval_steps": settings.eval_steps,
        "save_strategy": "no",
        "seed": settings.seed,
        "report_to": "none",
        "use_cpu": not torch.cuda.is_available(),
        "bf16": torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        "dataloader_num_workers": 0,
        "remove_unused_columns": False,
    }


class StepLogCallback(TrainerCallback):
    """Hands every log line (loss, eval_loss, learning rate) to a logger as it happens."""

    def __init__(self, step_logger: StepLogger):
        self.step_logger = step_logger

    def on_log(self, args, state, control, logs=None, **kwargs):
        numeric = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, int | float)}
        if numeric:
            self.step_logger(numeric, state.global_step)


@contextmanager
def scratch_dir(parent: Path) -> Iterator[Path]:
    """The trainer's working folder, removed afterwards (outputs are published separately)."""
    path = new_tmp_dir(parent)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def final_eval_loss(history: list[dict]) -> float | None:
    evals = [row["eval_loss"] for row in history if "eval_loss" in row]
    return evals[-1] if evals else None


def run_training(trainer: Trainer, on_log: StepLogger | None) -> tuple[list[dict], float, float]:
    """Train (and evaluate once more at the end); returns (log history, mean train loss, seconds)."""
    if on_log is not None:
        trainer.add_callback(StepLogCallback(on_log))
    started = time.perf_counter()
    result = trainer.train()
    if trainer.eval_dataset is not None:
        trainer.evaluate()
    return trainer.state.log_history, result.training_loss, time.perf_counter() - started


def publish_adapter(
    model: PeftModel,
    adapter_name: str,
    out_root: Path,
    history: list[dict],
    metrics: dict[str, Any],
) -> tuple[Path, str]:
    """Save one named adapter with the training record, atomically; returns (folder, digest)."""
    tmp = new_tmp_dir(out_root)
    model.save_pretrained(str(tmp / "save"), selected_adapters=[adapter_name])
    saved = tmp / "save" / adapter_name if adapter_name != "default" else tmp / "save"
    saved.rename(tmp / ADAPTER_DIR)
    shutil.rmtree(tmp / "save", ignore_errors=True)
    (tmp / LOG_HISTORY_FILE).write_text(json.dumps(history, indent=1))
    write_json_atomic(tmp / "metrics.json", metrics)
    digest = tree_digest(tmp / ADAPTER_DIR)
    final = publish_dir(tmp, out_root / digest[:16])
    return final, digest
