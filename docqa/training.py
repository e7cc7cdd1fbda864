"""What the two training stages share: trainer arguments from settings, step logging, saved outputs."""

from __future__ import annotations

import json
import re
import shutil
import struct
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file
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
        "save_strategy": "steps",
        "save_steps": settings.save_steps,
        "save_total_limit": settings.save_total_limit,
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


CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
CHECKPOINT_STATE_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth")
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def checkpoint_adapter_dir(checkpoint: Path, adapter_name: str) -> Path:
    """Where ``Trainer`` puts a named adapter in a checkpoint (PEFT: non-default names in subfolders)."""
    return checkpoint / adapter_name if adapter_name != "default" else checkpoint


def _safetensors_whole(path: Path) -> bool:
    """The header parses and the file is exactly as long as the tensors it declares (not truncated)."""
    try:
        with path.open("rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        return bool(ends) and path.stat().st_size == 8 + header_len + max(ends)
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return False


def _loads(path: Path) -> bool:
    """JSON parses; a ``torch.save`` file (a zip archive) has its directory and every CRC intact."""
    try:
        if path.suffix == ".json":
            json.loads(path.read_text())
            return True
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, ValueError, zipfile.BadZipFile):
        return False


def checkpoint_complete(checkpoint: Path, adapter_name: str) -> bool:
    """Every file a resume needs is there and reads back whole: the trained adapter (weights + config),
    the trainer state, optimizer, scheduler and RNG state. A kill during a save leaves one missing or
    truncated; ``trainer_state.json`` is written last, so a checkpoint that has it was saved to the end."""
    adapter = checkpoint_adapter_dir(checkpoint, adapter_name)
    return (
        _safetensors_whole(adapter / ADAPTER_FILES[0])
        and _loads(adapter / ADAPTER_FILES[1])
        and all(_loads(checkpoint / name) for name in CHECKPOINT_STATE_FILES)
    )


def checkpoint_step(checkpoint: Path) -> int:
    match = CHECKPOINT_PATTERN.match(checkpoint.name)
    if match is None:
        raise ValueError(f"not a checkpoint folder: {checkpoint}")
    return int(match.group(1))


def checkpoint_folders(folder: Path) -> list[Path]:
    """``checkpoint-N`` folders, newest (highest step) first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and CHECKPOINT_PATTERN.match(p.name)]
    return sorted(found, key=checkpoint_step, reverse=True)


def last_complete_checkpoint(folder: Path, adapter_name: str = "default") -> Path | None:
    """The newest complete checkpoint in ``folder``; incomplete ones (a kill during a save) are skipped.

    Unlike ``transformers.trainer_utils.get_last_checkpoint``, which takes the newest folder whatever
    it holds."""
    return next((c for c in checkpoint_folders(folder) if checkpoint_complete(c, adapter_name)), None)


def prepare_resume(folder: Path, adapter_name: str) -> Path | None:
    """The checkpoint to resume from; incomplete checkpoint folders are removed first, so that the
    trainer never saves into one or counts it when rotating."""
    last = last_complete_checkpoint(folder, adapter_name)
    for checkpoint in checkpoint_folders(folder):
        if not checkpoint_complete(checkpoint, adapter_name):
            shutil.rmtree(checkpoint, ignore_errors=True)
    return last


def remove_checkpoints(checkpoint_dir: Path | None) -> None:
    """After publishing: the stage's checkpoints are not needed any more."""
    if checkpoint_dir is not None:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)


def load_trainable_adapter(trainer: Trainer, adapter_name: str) -> None:
    """Make ``trainer`` restore only the trained adapter's weights on resume.

    ``Trainer._load_from_checkpoint`` reloads every adapter of a checkpoint, makes the *first* active
    adapter the trainable one and activates it alone: with stacked adapters (SFT on pretrain) it would
    train the frozen pretrain adapter. Here the weights go in place and nothing else changes."""
    model = trainer.model

    def load(resume_from_checkpoint: str, model_=None) -> None:
        file = checkpoint_adapter_dir(Path(resume_from_checkpoint), adapter_name) / ADAPTER_FILES[0]
        weights = load_file(str(file))
        expected = set(get_peft_model_state_dict(model, adapter_name=adapter_name))
        if set(weights) != expected:
            raise ValueError(f"checkpoint {resume_from_checkpoint} does not hold adapter {adapter_name!r}")
        result = set_peft_model_state_dict(model, weights, adapter_name=adapter_name)
        if result.unexpected_keys:
            raise ValueError(f"unexpected adapter weights in {file}: {result.unexpected_keys[:5]}")

    trainer._load_from_checkpoint = load


def final_eval_loss(history: list[dict]) -> float | None:
    evals = [row["eval_loss"] for row in history if "eval_loss" in row]
    return evals[-1] if evals else None


def run_training(
    trainer: Trainer, on_log: StepLogger | None, resume_from: Path | None = None
) -> tuple[list[dict], float, float]:
    """Train (and evaluate once more at the end); returns (log history, mean train loss, seconds).

    With ``resume_from`` training goes on from that checkpoint (weights, optimizer, scheduler, RNG,
    data position); its log history is complete from step 1 and is replayed to ``on_log`` first, so
    the live step log holds every step too."""
    if on_log is not None:
        if resume_from is not None:
            for row in json.loads((resume_from / "trainer_state.json").read_text())["log_history"]:
                values = {k: float(v) for k, v in row.items() if k != "step" and isinstance(v, int | float)}
                if values:
                    on_log(values, int(row["step"]))
        trainer.add_callback(StepLogCallback(on_log))
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)
    if trainer.eval_dataset is not None:
        trainer.evaluate()
    return trainer.state.log_history, result.training_loss, time.perf_counter() - started


@contextmanager
def training_dir(checkpoint_dir: Path | None, out_root: Path) -> Iterator[Path]:
    """The trainer's output folder: the stable ``checkpoint_dir`` (kept for a resume if training fails,
    removed by the caller after publishing) or, without one, a scratch folder removed afterwards."""
    if checkpoint_dir is None:
        with scratch_dir(out_root) as path:
            yield path
    else:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        yield checkpoint_dir


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
