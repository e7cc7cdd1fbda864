"""Pretraining as two DDP processes on CPU under torchrun (gloo): the launch path the GPU pools use."""

from __future__ import annotations

import json
from pathlib import Path

from docqa.jobs import PretrainJob
from docqa.launch import launch_command, run_job
from docqa.outputs import LOG_HISTORY_FILE


def test_pretraining_on_two_processes_agrees_and_learns(prepared, tiny_base, tmp_path):
    recipe = prepared["recipe"]
    settings = recipe.pretrain.model_copy(
        update={"num_processes": 2, "max_steps": 10, "logging_steps": 1, "eval_steps": 5}
    )
    assert "torch.distributed.run" in launch_command(settings, tmp_path / "args.json")
    job = PretrainJob(
        chunks=prepared["chunks"].path,
        base=tiny_base,
        model=recipe.model,  # the 4-bit base: bitsandbytes' CPU layers run under DDP too
        settings=settings,
        out_root=str(tmp_path / "pretrain"),
        checkpoint_dir=str(tmp_path / "checkpoints"),
    )
    out = run_job(job)  # two processes: the job goes to each rank as JSON

    assert out.processes == 2 and out.steps == 10
    metrics = json.loads((Path(out.path) / "metrics.json").read_text())
    digests = metrics["rank_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]  # both ranks hold the same trained weights
    assert (Path(out.adapter_path) / "adapter_model.safetensors").is_file()
    losses = [
        row["loss"] for row in json.loads((Path(out.path) / LOG_HISTORY_FILE).read_text()) if "loss" in row
    ]
    assert len(losses) == 10
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3  # the loss falls
    assert not (tmp_path / "checkpoints").exists()  # removed once, by rank 0, after publishing
    assert not list((tmp_path / "pretrain").glob(".launch-*"))  # the argument files are cleaned up
