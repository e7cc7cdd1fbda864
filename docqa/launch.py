"""The training stages on several processes: DDP through ``torchrun`` or ``accelerate launch``.

With ``<stage>.num_processes`` above 1 the Prefect task does not train in its own process: it writes the
stage's job (``docqa.jobs``) to a JSON file and starts the launcher, which runs
``python -m docqa.launch FILE`` once per process. Every rank builds the same model and ``Trainer`` (DDP
shards the data and averages the gradients; gloo on CPU, NCCL on GPUs), rank 0 alone logs to MLflow and
publishes the adapter, every rank checks that its trained weights equal rank 0's, and rank 0 writes the
``TrainOutput`` for the task to read. FSDP is the same path with ``launcher: accelerate`` and an
accelerate config file that sets it up (see the README: QLoRA under FSDP needs
``bnb_4bit_quant_storage`` equal to the compute dtype).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from docqa.jobs import TrainingJob
from docqa.outputs import TrainOutput
from docqa.settings import TrainSettings

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


def run_job(job: TrainingJob, mlflow_uri: str | None = None, mlflow_run_id: str | None = None) -> TrainOutput:
    """Run a training job: in this process, or under the launcher when its settings ask for several
    processes. With an MLflow run, every logged step goes there as it happens (from rank 0)."""
    if job.settings.num_processes > 1:
        return train_distributed(job, mlflow_uri, mlflow_run_id)
    from docqa.tracking import step_logger

    return job.run(step_logger(mlflow_uri, mlflow_run_id) if mlflow_run_id else None)


def train_distributed(
    job: TrainingJob, mlflow_uri: str | None = None, mlflow_run_id: str | None = None
) -> TrainOutput:
    """Run the job under the configured launcher, one process per device; returns rank 0's output.

    The job crosses the process boundary as JSON (``model_dump_json``) and is validated back on each rank."""
    settings, out_root = job.settings, Path(job.out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    args_file = out_root / f".launch-{uuid.uuid4().hex[:12]}.json"
    payload = {"job": job.model_dump(mode="json"), "mlflow_uri": mlflow_uri, "mlflow_run_id": mlflow_run_id}
    args_file.write_text(json.dumps(payload))
    result_file = args_file.with_name(args_file.stem + RESULT_SUFFIX)
    try:
        done = subprocess.run(launch_command(settings, args_file), capture_output=True, text=True)
        if done.returncode != 0 or not result_file.is_file():
            raise RuntimeError(
                f"{job.stage} on {settings.num_processes} processes ({settings.launcher}) failed with exit "
                f"code {done.returncode}; the launcher's output ends:\n{(done.stdout + done.stderr)[-4000:]}"
            )
        return TrainOutput.model_validate_json(result_file.read_text())
    finally:
        args_file.unlink(missing_ok=True)
        result_file.unlink(missing_ok=True)


def _run(payload: dict[str, Any]) -> TrainOutput:
    from docqa.tracking import step_logger

    job = TypeAdapter(TrainingJob).validate_python(payload["job"])
    on_log = None
    if payload["mlflow_run_id"] and rank() == 0:
        on_log = step_logger(payload["mlflow_uri"], payload["mlflow_run_id"])
    return job.run(on_log)


def main(args_file: str) -> None:
    path = Path(args_file)
    output = _run(json.loads(path.read_text()))
    if rank() == 0:
        path.with_name(path.stem + RESULT_SUFFIX).write_text(output.model_dump_json())


if __name__ == "__main__":
    main(sys.argv[1])
