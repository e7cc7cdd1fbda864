"""The training stages on several processes: DDP through ``torchrun`` or ``accelerate launch``.

With ``<stage>.num_processes`` above 1 the Prefect task does not train in its own process: it writes the
stage's arguments to a JSON file and starts the launcher, which runs ``python -m docqa.launch FILE`` once
per process. Every rank builds the same model and ``Trainer`` (DDP shards the data and averages the
gradients; gloo on CPU, NCCL on GPUs), rank 0 alone logs to MLflow and publishes the adapter, every rank
checks that its trained weights equal rank 0's, and rank 0 writes the ``TrainOutput`` for the task to
read. FSDP is the same path with ``launcher: accelerate`` and an accelerate config file that sets it up
(see the README: QLoRA under FSDP needs ``bnb_4bit_quant_storage`` equal to the compute dtype).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from docqa.outputs import BaseModelRef, TrainOutput
from docqa.settings import ModelSettings, PretrainSettings, SFTSettings, TrainSettings

RESULT_SUFFIX = ".result.json"


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def launch_command(settings: TrainSettings, args_file: Path) -> list[str]:
    """The launcher's command line for ``settings.num_processes`` processes on this machine."""
    n = str(settings.num_processes)
    if settings.launcher == "accelerate":
        command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", n]
        if settings.accelerate_config:
            command += ["--config_file", settings.accelerate_config]
        return [*command, "-m", "docqa.launch", str(args_file)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", n,
            "-m", "docqa.launch", str(args_file)]  # fmt: skip


def train_distributed(
    stage: str,
    args: dict[str, Any],
    settings: PretrainSettings | SFTSettings,
    out_root: Path,
    mlflow_uri: str | None = None,
    mlflow_run_id: str | None = None,
) -> TrainOutput:
    """Run ``stage`` (pretrain or sft) under the configured launcher; returns rank 0's output.

    ``args`` are the stage function's arguments (paths as strings, settings and the base as models)."""
    out_root.mkdir(parents=True, exist_ok=True)
    args_file = out_root / f".launch-{uuid.uuid4().hex[:12]}.json"
    payload = {
        "stage": stage,
        "args": {k: v.model_dump(mode="json") if hasattr(v, "model_dump") else v for k, v in args.items()},
        "mlflow_uri": mlflow_uri,
        "mlflow_run_id": mlflow_run_id,
    }
    args_file.write_text(json.dumps(payload))
    result_file = args_file.with_name(args_file.stem + RESULT_SUFFIX)
    try:
        done = subprocess.run(launch_command(settings, args_file), capture_output=True, text=True)
        if done.returncode != 0 or not result_file.is_file():
            raise RuntimeError(
                f"{stage} on {settings.num_processes} processes ({settings.launcher}) failed with exit code "
                f"{done.returncode}; the launcher's output ends:\n{(done.stdout + done.stderr)[-4000:]}"
            )
        return TrainOutput.model_validate_json(result_file.read_text())
    finally:
        args_file.unlink(missing_ok=True)
        result_file.unlink(missing_ok=True)


def _run(payload: dict[str, Any]) -> TrainOutput:
    from docqa.tracking import step_logger

    args = payload["args"]
    on_log = None
    if payload["mlflow_run_id"] and rank() == 0:
        on_log = step_logger(payload["mlflow_uri"], payload["mlflow_run_id"])
    base = BaseModelRef.model_validate(args["base"])
    model = ModelSettings.model_validate(args["model_settings"])
    checkpoints = Path(args["checkpoint_dir"]) if args.get("checkpoint_dir") else None
    if payload["stage"] == "pretrain":
        from docqa.stages.pretrain import pretrain

        settings = PretrainSettings.model_validate(args["settings"])
        augmented = Path(args["augmented_path"]) if args.get("augmented_path") else None
        return pretrain(
            Path(args["chunks_path"]), base, model, settings, Path(args["out_root"]), on_log, checkpoints,
            augmented,
        )  # fmt: skip
    from docqa.stages.sft import sft

    settings = SFTSettings.model_validate(args["settings"])
    return sft(
        Path(args["qa_path"]), Path(args["pretrain_adapter"]), base, model, settings, Path(args["out_root"]),
        on_log, checkpoints,
    )  # fmt: skip


def main(args_file: str) -> None:
    path = Path(args_file)
    output = _run(json.loads(path.read_text()))
    if rank() == 0:
        path.with_name(path.stem + RESULT_SUFFIX).write_text(output.model_dump_json())


if __name__ == "__main__":
    main(sys.argv[1])
