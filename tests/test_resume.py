"""Checkpoints every N steps, and a resume after ``kill -9`` from the last *complete* checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from transformers.trainer_utils import get_last_checkpoint

from docqa.outputs import LOG_HISTORY_FILE
from docqa.training import checkpoint_adapter_dir, last_complete_checkpoint

pytestmark = pytest.mark.slow

ADAPTER = "pretrain"
MAX_STEPS, SAVE_STEPS = 12, 3

# A pretraining run in its own process; after step 7 (checkpoint-6 saved) it hangs until killed.
CHILD = """
import json, sys, time
from pathlib import Path
from transformers import TrainerCallback
import docqa.stages.pretrain as stage
import docqa.training as training
from docqa.outputs import BaseModelRef
from docqa.settings import ModelSettings, PretrainSettings

args = json.loads(sys.argv[1])


class HangAfter(TrainerCallback):
    def on_step_end(self, args_, state, control, **kwargs):
        if state.global_step > args["hang_after"]:
            time.sleep(600)


prepare = training.load_trainable_adapter


def prepare_and_hang(trainer, adapter_name):
    prepare(trainer, adapter_name)
    trainer.add_callback(HangAfter())


training.load_trainable_adapter = prepare_and_hang
stage.pretrain(
    Path(args["chunks"]), BaseModelRef(**args["base"]), ModelSettings(**args["model"]),
    PretrainSettings(**args["settings"]), Path(args["out_root"]), checkpoint_dir=Path(args["checkpoints"]),
)
"""


def _settings(recipe):
    return recipe.pretrain.model_copy(update={"max_steps": MAX_STEPS, "save_steps": SAVE_STEPS})


def _pretrain(prepared, tiny_base, folder: Path, **kwargs):
    from docqa.stages.pretrain import pretrain

    recipe = prepared["recipe"]
    return pretrain(
        Path(prepared["chunks"].path), tiny_base, recipe.model, _settings(recipe), folder / "out",
        checkpoint_dir=folder / "checkpoints", **kwargs,
    )  # fmt: skip


def _wait_for_checkpoint(process: subprocess.Popen, folder: Path, step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = last_complete_checkpoint(folder, ADAPTER)
        if found is not None and found.name == f"checkpoint-{step}":
            return
        if process.poll() is not None:
            raise AssertionError(f"the training process ended first: {process.stderr.read()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"no complete checkpoint-{step} in {timeout}s")


def _history_steps(out, key: str) -> list[int]:
    history = json.loads((Path(out.path) / LOG_HISTORY_FILE).read_text())
    return [row["step"] for row in history if key in row]


def test_a_killed_run_resumes_from_its_last_checkpoint(prepared, tiny_base, tmp_path):
    recipe = prepared["recipe"]
    checkpoints = tmp_path / "checkpoints"
    args = {
        "chunks": prepared["chunks"].path,
        "base": tiny_base.model_dump(),
        "model": recipe.model.model_dump(),
        "settings": _settings(recipe).model_dump(),
        "out_root": str(tmp_path / "out"),
        "checkpoints": str(checkpoints),
        "hang_after": 2 * SAVE_STEPS,
    }
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(args)], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for_checkpoint(process, checkpoints, 2 * SAVE_STEPS)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("[0-9a-f]*"))

    logged: list[tuple[int, dict]] = []
    out = _pretrain(prepared, tiny_base, tmp_path, on_log=lambda values, step: logged.append((step, values)))

    assert out.resumed_from_step == 2 * SAVE_STEPS
    assert out.steps == MAX_STEPS
    assert (Path(out.adapter_path) / "adapter_model.safetensors").is_file()
    assert not checkpoints.exists()  # removed once the adapter was published
    # the history runs from step 1: the part before the kill comes from the checkpoint's trainer state
    logging_steps = recipe.pretrain.logging_steps
    assert _history_steps(out, "loss") == list(range(logging_steps, MAX_STEPS + 1, logging_steps))
    # and the live step log saw every step too (replayed up to the checkpoint, then live)
    assert sorted({step for step, values in logged if "loss" in values}) == _history_steps(out, "loss")

    # the same training uninterrupted ends with the same adapter: weights, optimizer, RNG and data
    # position all came back
    straight = _pretrain(prepared, tiny_base, tmp_path / "straight")
    assert straight.resumed_from_step is None
    # the mean loss covers every step, not only those after the resume
    assert out.train_loss == pytest.approx(straight.train_loss, rel=1e-3)
    resumed_weights = load_file(str(Path(out.adapter_path) / "adapter_model.safetensors"))
    straight_weights = load_file(str(Path(straight.adapter_path) / "adapter_model.safetensors"))
    assert resumed_weights.keys() == straight_weights.keys()
    for name, tensor in resumed_weights.items():
        assert tensor.allclose(straight_weights[name], rtol=1e-4, atol=1e-6), name


def _break_off(values: dict, step: int) -> None:
    if step > 2 * SAVE_STEPS:
        raise RuntimeError("stopped")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGES = {
    "truncated-weights": lambda c: _truncate(
        checkpoint_adapter_dir(c, ADAPTER) / "adapter_model.safetensors"
    ),
    "no-adapter-config": lambda c: (checkpoint_adapter_dir(c, ADAPTER) / "adapter_config.json").unlink(),
    "no-optimizer": lambda c: (c / "optimizer.pt").unlink(),
    "truncated-optimizer": lambda c: _truncate(c / "optimizer.pt"),
    "truncated-scheduler": lambda c: _truncate(c / "scheduler.pt"),
    "truncated-rng": lambda c: _truncate(c / "rng_state.pth"),
    "no-trainer-state": lambda c: (c / "trainer_state.json").unlink(),
    "truncated-trainer-state": lambda c: _truncate(c / "trainer_state.json"),
}


def test_an_incomplete_newer_checkpoint_is_passed_over(prepared, tiny_base, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    with pytest.raises(RuntimeError, match="stopped"):
        _pretrain(prepared, tiny_base, tmp_path, on_log=_break_off)
    complete = checkpoints / f"checkpoint-{2 * SAVE_STEPS}"
    assert last_complete_checkpoint(checkpoints, ADAPTER) == complete

    # what a kill in the middle of saving checkpoint-9 can leave behind
    partial = checkpoints / f"checkpoint-{3 * SAVE_STEPS}"
    for name, damage in DAMAGES.items():
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(complete, partial)
        damage(partial)
        assert get_last_checkpoint(str(checkpoints)) == str(partial)  # transformers would take it
        assert last_complete_checkpoint(checkpoints, ADAPTER) == complete, name

    out = _pretrain(prepared, tiny_base, tmp_path)
    assert out.resumed_from_step == 2 * SAVE_STEPS  # not 9, and not from scratch
    assert out.steps == MAX_STEPS
    assert not checkpoints.exists()


def test_no_checkpoint_means_no_resume(tmp_path):
    assert last_complete_checkpoint(tmp_path / "missing", ADAPTER) is None
    (tmp_path / "checkpoint-3").mkdir()
    assert last_complete_checkpoint(tmp_path, ADAPTER) is None


def test_sft_resumes_its_own_adapter_and_leaves_pretrain_frozen(prepared, tiny_base, tmp_path):
    """A checkpoint of stacked adapters holds both; only ``sft`` is restored and trained on, as in a
    run that was never stopped (transformers' own resume would make ``pretrain`` the trainable one)."""
    from docqa.stages.pretrain import pretrain_model
    from docqa.stages.sft import sft

    recipe = prepared["recipe"]
    pretrain_adapter = tmp_path / "pretrain-adapter"
    pretrain_model(tiny_base, recipe.model, recipe.pretrain).save_pretrained(str(tmp_path / "save"))
    (tmp_path / "save" / ADAPTER).rename(pretrain_adapter)
    settings = recipe.sft.model_copy(update={"max_steps": 6, "save_steps": 2})

    def run(folder: Path, **kwargs):
        return sft(
            Path(prepared["qa"].path), pretrain_adapter, tiny_base, recipe.model, settings, folder / "out",
            checkpoint_dir=folder / "checkpoints", **kwargs,
        )  # fmt: skip

    def break_off(values: dict, step: int) -> None:
        if step > 4:
            raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        run(tmp_path / "resumed", on_log=break_off)
    checkpoint = last_complete_checkpoint(tmp_path / "resumed" / "checkpoints", "sft")
    assert checkpoint is not None and checkpoint.name == "checkpoint-4"
    assert (checkpoint / "pretrain" / "adapter_model.safetensors").is_file()  # both adapters are saved
    resumed = run(tmp_path / "resumed")
    straight = run(tmp_path / "straight")
    assert (resumed.resumed_from_step, resumed.steps, straight.resumed_from_step) == (4, 6, None)
    resumed_weights = load_file(str(Path(resumed.adapter_path) / "adapter_model.safetensors"))
    straight_weights = load_file(str(Path(straight.adapter_path) / "adapter_model.safetensors"))
    assert resumed_weights.keys() == straight_weights.keys()
    for name, tensor in resumed_weights.items():
        assert tensor.allclose(straight_weights[name], rtol=1e-4, atol=1e-6), name


def test_the_private_checkpoint_loader_docqa_replaces_is_still_the_one_train_calls():
    """transformers has no public hook for restoring only the trained adapter on resume, so
    ``load_trainable_adapter`` replaces ``Trainer._load_from_checkpoint``. Were it renamed, re-signed or
    no longer called by ``train``, the replacement would be silently skipped and SFT would resume by
    training the frozen pretraining adapter: this fails first."""
    import inspect

    from transformers import Trainer

    assert list(inspect.signature(Trainer._load_from_checkpoint).parameters) == [
        "self",
        "resume_from_checkpoint",
        "model",
    ]
    assert "self._load_from_checkpoint(resume_from_checkpoint)" in inspect.getsource(Trainer.train)
