"""What the two training stages share: trainer arguments from settings, step logging, saved outputs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from peft import PeftModel
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from docqa.hashing import tree_digest
from docqa.outputs import ADAPTER_DIR, LOG_HISTORY_FILE, TrainOutput, with_perplexity
from docqa.progress import Progress
from docqa.settings import TrainSettings
from docqa.workspace import new_tmp_dir, publish_dir, write_json_atomic

StepLogger = Callable[[dict[str, float], int], None]


def kl_from_base(model: PeftModel, input_ids: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """KL(base ‖ model) per position: how far the model's next-token distributions (``log_probs``, with
    their gradient) are from the base's on the same tokens, the base read from the same model with every
    adapter switched off (no second copy, no gradient). Which weights train is kept as it was: peft's
    ``disable_adapter`` marks every active adapter trainable on the way out, a frozen one too."""
    trainable = [parameter.requires_grad for parameter in model.parameters()]
    with torch.no_grad(), model.disable_adapter():
        teacher = model(input_ids=input_ids).logits.float().log_softmax(-1)
    for parameter, flag in zip(model.parameters(), trainable, strict=True):
        parameter.requires_grad_(flag)
    return (teacher.exp() * (teacher - log_probs)).sum(-1)


def trainer_arguments(settings: TrainSettings, output_dir: Path, has_eval: bool) -> dict[str, Any]:
    """Keyword arguments for ``TrainingArguments``/``SFTConfig`` from a stage's settings."""
    return {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": settings.batch_size,
        "per_device_eval_batch_size": settings.batch_size,
        "gradient_accumulation_steps": settings.gradient_accumulation_steps,
        # transformers 5's name; "gradient_checkpointing" is its deprecated alias (a FutureWarning a run)
        "activation_checkpointing": settings.gradient_checkpointing,
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
        "disable_tqdm": True,  # StepProgress reports instead
        "remove_unused_columns": False,
        "ddp_find_unused_parameters": False,  # every LoRA weight gets a gradient; the frozen base has none
    }


class StepLogCallback(TrainerCallback):
    """Hands every log line (loss, eval_loss, learning rate) to a logger as it happens."""

    def __init__(self, step_logger: StepLogger):
        self.step_logger = step_logger

    def on_log(self, args, state, control, logs=None, **kwargs):
        numeric = with_perplexity(
            {k: float(v) for k, v in (logs or {}).items() if isinstance(v, int | float)}
        )
        if numeric and state.is_world_process_zero:
            self.step_logger(numeric, state.global_step)


class StepProgress(TrainerCallback):
    """Training progress as readable lines (step, loss, time left) instead of the Trainer's per-step
    dicts and bars, which this replaces (``quiet_trainer``); every figure goes to MLflow as well."""

    def __init__(self, stage: str):
        self.stage = stage
        self.progress: Progress | None = None
        self.loss: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.progress = Progress(f"{self.stage} · steps", state.max_steps, "steps")
            self.progress.done = state.global_step  # a resumed run starts where the checkpoint was

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.advance(state.global_step - self.progress.done, self._note())

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.close(self._note())

    def _note(self) -> str:
        return f"loss {self.loss:.4f}" if self.loss is not None else ""


def quiet_trainer(trainer: Trainer, stage: str) -> None:
    """No per-step dicts or progress bars on the console: ``StepProgress`` lines instead."""
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(StepProgress(stage))


BEST_FILE = "best.json"


class BestAdapter(TrainerCallback):
    """Keeps, on disk, the trained adapter's weights from the evaluation with the lowest eval loss.

    ``Trainer``'s own ``load_best_model_at_end`` only knows steps that were also checkpoints and, with
    stacked adapters, reloads the wrong one; this copies the one trainable adapter (a few MB) whenever
    the held-out loss improves. The copy sits in the training folder, so a resumed run keeps it, unless
    it is from a step after the checkpoint resumed from (that stretch is trained again)."""

    def __init__(self, model: PeftModel, adapter_name: str, folder: Path, resume_step: int | None):
        self.model, self.adapter_name, self.folder = model, adapter_name, folder
        path = folder / BEST_FILE
        self.best = json.loads(path.read_text()) if path.is_file() else None
        if self.best is not None and self.best["step"] > (resume_step or 0):
            self.best = None
            if is_main_process():
                path.unlink(missing_ok=True)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        loss = (metrics or {}).get("eval_loss")
        if loss is None or (self.best is not None and loss >= self.best["eval_loss"]):
            return
        weights_file = f"best-{state.global_step}.safetensors"
        if state.is_world_process_zero:
            weights = get_peft_model_state_dict(self.model, adapter_name=self.adapter_name)
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in weights.items()}, self.folder / weights_file
            )
            write_json_atomic(
                self.folder / BEST_FILE, {"step": state.global_step, "eval_loss": loss, "file": weights_file}
            )
            for old in self.folder.glob("best-*.safetensors"):
                if old.name != weights_file:
                    old.unlink()
        self.best = {"step": state.global_step, "eval_loss": loss, "file": weights_file}

    def restore(self) -> int | None:
        """Put the best weights into the model; returns their step (None: no evaluation ran)."""
        if self.best is None:
            return None
        weights = load_file(str(self.folder / self.best["file"]))
        set_peft_model_state_dict(self.model, weights, adapter_name=self.adapter_name)
        return int(self.best["step"])


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
    if is_main_process():
        for checkpoint in checkpoint_folders(folder):
            if not checkpoint_complete(checkpoint, adapter_name):
                shutil.rmtree(checkpoint, ignore_errors=True)
    return last


def is_main_process() -> bool:
    """Rank 0 under a launcher (its environment says so before any process group exists), else True."""
    return os.environ.get("RANK", "0") == "0"


def on_main_process(make: Callable[[], Any]) -> Any:
    """``make()`` on rank 0 alone (publishing, deleting), its result handed to every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return make()
    result = [make() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(result, src=0)
    return result[0]


def trainable_digest(model: torch.nn.Module) -> str:
    """A digest of the trainable weights' values, to compare ranks."""
    digest = hashlib.sha256()
    for name, parameter in sorted(model.named_parameters()):
        if parameter.requires_grad:
            digest.update(name.encode())
            digest.update(parameter.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def rank_digests(model: torch.nn.Module) -> list[str]:
    """Every rank's trainable-weights digest (one entry without a process group); raises if the ranks
    trained different weights (DDP keeps them equal: a difference means the gradients were not synced)."""
    mine = trainable_digest(model)
    if not (dist.is_available() and dist.is_initialized()):
        return [mine]
    everyone: list[str] = [""] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    if len(set(everyone)) != 1:
        raise RuntimeError(f"the training processes ended with different weights: {everyone}")
    return everyone


def remove_checkpoints(checkpoint_dir: Path | None) -> None:
    """After publishing: the stage's checkpoints are not needed any more."""
    if checkpoint_dir is not None:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)


def load_trainable_adapter(trainer: Trainer, adapter_name: str) -> None:
    """Make ``trainer`` restore only the trained adapter's weights on resume.

    ``Trainer._load_from_checkpoint`` reloads every adapter of a checkpoint, makes the *first* active
    adapter the trainable one and activates it alone: with stacked adapters (SFT on pretrain) it would
    train the frozen pretrain adapter. Here the weights go in place and nothing else changes.

    Why a private method: transformers (5.x) has no public hook for how a checkpoint's weights are
    restored (callbacks run after it; ``resume_from_checkpoint`` is all or nothing), and the optimizer,
    scheduler, RNG and data position must still come from the Trainer's own resume. The replaced
    method's name, signature and call in ``Trainer.train`` are checked by a test
    (``test_resume.py``), which fails first if transformers changes them."""
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


def mean_train_loss(history: list[dict], resume_step: int, loss_since_resume: float, steps: int) -> float:
    """The mean training loss over all ``steps``: ``Trainer``'s ``training_loss`` covers only the steps
    of its own call, so after a resume the steps before it come from the logged losses (each the
    mean over its logging interval, weighted by the interval's length)."""
    if not resume_step or steps <= resume_step:
        return loss_since_resume
    total, previous = 0.0, 0
    for row in sorted(
        (r for r in history if "loss" in r and r["step"] <= resume_step), key=lambda r: r["step"]
    ):
        total += row["loss"] * (row["step"] - previous)
        previous = row["step"]
    before = total / previous if previous else loss_since_resume
    return (before * resume_step + loss_since_resume * (steps - resume_step)) / steps


@dataclass
class TrainingRun:
    history: list[dict]
    train_loss: float
    seconds: float
    resumed_from_step: int | None
    selected_step: int  # the step whose adapter weights the model holds now
    rank_digests: list[str]  # each process's trainable-weights digest (equal: checked)
    eval_loss: float | None  # held-out loss of those weights (None: no held-out rows)

    def metrics(self) -> dict[str, Any]:
        """What every training stage records of its run (the stage adds its own data figures)."""
        return {
            "train_loss": self.train_loss,
            "eval_loss": self.eval_loss,
            "seconds": self.seconds,
            "resumed_from_step": self.resumed_from_step,
            "selected_step": self.selected_step,
            "processes": len(self.rank_digests),
            "rank_digests": self.rank_digests,
        }


def publish_training(
    model: PeftModel,
    adapter_name: str,
    out_root: Path,
    run: TrainingRun,
    metrics: dict[str, Any],
    checkpoint_dir: Path | None,
) -> TrainOutput:
    """Publish the trained adapter with its record, then drop the stage's checkpoints; done by rank 0
    alone under a launcher, every rank gets the same output."""

    def publish() -> tuple[Path, str]:
        published = publish_adapter(model, adapter_name, out_root, run.history, metrics)
        remove_checkpoints(checkpoint_dir)
        return published

    folder, digest = on_main_process(publish)
    return TrainOutput.from_metrics(folder, digest, metrics)


def run_training(
    trainer: Trainer,
    on_log: StepLogger | None,
    adapter_name: str,
    work_dir: Path,
    select: str = "last",
) -> TrainingRun:
    """Train from the last complete checkpoint in ``work_dir`` (or from scratch), evaluate once more at
    the end, and leave the model holding the selected weights: the last step's, or with ``select``
    ``eval_loss`` those of the evaluation with the lowest held-out loss.

    A resume goes on from the checkpoint's weights, optimizer, scheduler, RNG and data position; its
    log history is complete from step 1 and is replayed to ``on_log`` first, so that the live step log
    holds every step too."""
    resume_from = prepare_resume(work_dir, adapter_name)
    resume_step = checkpoint_step(resume_from) if resume_from is not None else None
    load_trainable_adapter(trainer, adapter_name)
    quiet_trainer(trainer, adapter_name)
    best = BestAdapter(trainer.model, adapter_name, work_dir, resume_step) if select == "eval_loss" else None
    if best is not None:
        trainer.add_callback(best)
    if on_log is not None:
        if resume_from is not None and trainer.is_world_process_zero():
            for row in json.loads((resume_from / "trainer_state.json").read_text())["log_history"]:
                values = {k: float(v) for k, v in row.items() if k != "step" and isinstance(v, int | float)}
                if values:
                    on_log(with_perplexity(values), int(row["step"]))
        trainer.add_callback(StepLogCallback(on_log))
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)
    if trainer.eval_dataset is not None:
        trainer.evaluate()
    seconds = time.perf_counter() - started
    steps = trainer.state.global_step
    selected = best.restore() if best is not None else None
    history = trainer.state.log_history
    return TrainingRun(
        history=history,
        train_loss=mean_train_loss(history, resume_step or 0, result.training_loss, steps),
        seconds=seconds,
        resumed_from_step=resume_step,
        selected_step=selected if selected is not None else steps,
        rank_digests=rank_digests(trainer.model),
        eval_loss=best.best["eval_loss"] if selected is not None else final_eval_loss(history),
    )


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


LEAK_TOLERANCE = 1e-2  # relative logit difference; a real leak is of order 1, bf16 rounding of order 1e-3


def packed_attention_leak(model: torch.nn.Module, lengths: tuple[int, ...] = (7, 11, 5)) -> float:
    """How much packed examples see of each other: the largest difference between each example's
    logits run alone and run packed into one row the way SFT's padding-free collator packs it
    (position ids restarting at 0, no attention mask, sequence boundaries, no KV cache, as TRL's
    ``compute_loss`` runs it), relative to the largest logit.

    Zero (up to rounding) where the attention implementation keeps each example to itself:
    transformers' SDPA and eager masks read the boundaries from the position ids, flash-attention
    from the sequence boundaries. An implementation that ignores both lets later examples attend to
    earlier ones and shows a difference of order 1 (as does a forward with a KV cache: transformers
    then skips the position-id masks)."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    generator = torch.Generator().manual_seed(0)
    examples = [torch.randint(3, model.config.vocab_size, (n,), generator=generator) for n in lengths]
    collate = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)
    packed = collate([{"input_ids": torch.cat(examples).tolist(), "seq_lengths": list(lengths)}])
    packed.pop("labels")
    where = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        alone = torch.cat(
            [model(input_ids=e[None].to(where), use_cache=False).logits[0].float() for e in examples]
        )
        inputs = {k: v.to(where) if torch.is_tensor(v) else v for k, v in packed.items()}
        together = model(**inputs, use_cache=False)
    model.train(was_training)
    gap = (together.logits[0].float() - alone).abs().max()
    return float(gap / alone.abs().max().clamp_min(1e-6))
