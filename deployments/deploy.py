"""docqa's work pools and deployments as code; ``docqa deploy`` applies them to ``PREFECT_API_URL``.

Two pools: ``docqa-cpu`` (the pipeline itself, ingest, chunk, synthesis orchestration, the documents
watcher) and ``docqa-gpu`` (pretrain, sft, evaluate), each of type ``process`` (one machine, or a test),
``docker`` or ``kubernetes``. The GPU pool's concurrency limit is its number of GPUs: at most one
training job per GPU. Deployments:

- ``docqa-pipeline/docqa-pipeline`` (CPU pool): runs its GPU stages through the stage deployments
  (``execution.gpu_stages=deployments``); triggered by ``docqa.documents.changed`` for the watched
  location (reactive, debounced: a burst of uploads makes one run), plus a nightly cron run as a
  safety net that does nothing when nothing changed (``skip_if_unchanged``); one run at a time.
- ``docqa-pretrain/docqa-pretrain``, ``docqa-sft/docqa-sft``, ``docqa-evaluate/docqa-evaluate`` (GPU pool).
- ``docqa-watch-documents/docqa-watch-documents`` (CPU pool, cron): fingerprints the location and emits
  the event.
"""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.events import DeploymentEventTrigger
from prefect.runner.storage import LocalStorage
from prefect.schedules import Cron
from pydantic import BaseModel, ConfigDict, Field

from docqa.settings import load_recipe
from docqa.sources import canonical_location
from docqa.watch import EVENT, resource_id

ROOT = Path(__file__).resolve().parent.parent
CONTAINER_WORKDIR = "/opt/docqa"  # where docker/Dockerfile{,.gpu} install the project
CPU_POOL, GPU_POOL = "docqa-cpu", "docqa-gpu"
WORKER_METADATA = "server/api/collections_data/views/aggregate-worker-metadata.json"
GPU_REQUEST = {"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}


class DeploySettings(BaseModel):
    """What ``docqa deploy`` creates; every field is a ``docqa deploy`` option."""

    model_config = ConfigDict(extra="forbid")

    pool_type: Literal["process", "docker", "kubernetes"] = Field(
        "process", description="work pool type of both pools"
    )
    docs: str = Field(description="the documents location the pipeline trains on and the watcher watches")
    workspace: str = Field(
        description="workspace every worker reaches: a shared path, or an fsspec URL (s3://bucket/prefix)"
    )
    recipe: str | None = Field(None, description="recipe file or shipped name for the pipeline's defaults")
    gpus: int = Field(1, ge=1, description="GPUs behind the GPU pool: at most one training job per GPU")
    cpu_image: str = Field("docqa:cpu", description="docker/kubernetes: image of docker/Dockerfile")
    gpu_image: str = Field("docqa:gpu", description="docker/kubernetes: image of docker/Dockerfile.gpu")
    watch_cron: str = Field("*/5 * * * *", description="how often the watcher looks at the documents")
    safety_cron: str = Field("0 3 * * *", description="the nightly pipeline run that re-trains if needed")
    debounce_s: int = Field(
        120, ge=0, description="events within this window make one run, started this long after the first"
    )
    shm_size: str = Field("8g", description="docker GPU pool: shared memory (data loader workers)")


def worker_template(pool_type: str) -> dict[str, Any]:
    """Prefect's default base job template for a worker type (shipped with Prefect: no plugin needed
    to create the pool; the worker that serves it needs prefect-docker or prefect-kubernetes)."""
    if pool_type == "process":
        from prefect.workers.process import ProcessWorker

        return ProcessWorker.get_default_base_job_template()
    import prefect

    metadata = json.loads((Path(prefect.__file__).parent / WORKER_METADATA).read_text())
    for workers in metadata.values():
        for worker in workers.values():
            if worker.get("type") == pool_type:
                return copy.deepcopy(worker["default_base_job_configuration"])
    raise ValueError(f"Prefect ships no base job template for worker type {pool_type!r}")


def pool_template(pool_type: str, gpu: bool, settings: DeploySettings) -> dict[str, Any]:
    """The base job template of the CPU or GPU pool: Prefect's default, plus the image and, for the
    GPU pool, the NVIDIA devices (docker ``device_requests``, kubernetes ``nvidia.com/gpu`` limits,
    node selector and tolerations as variables)."""
    template = worker_template(pool_type)
    variables, job = template["variables"]["properties"], template["job_configuration"]
    if pool_type == "process":
        return template
    variables["image"]["default"] = settings.gpu_image if gpu else settings.cpu_image
    if not gpu:
        return template
    if pool_type == "docker":
        variables["container_create_kwargs"] = {
            "title": "Container create kwargs",
            "description": "passed to docker's containers.create: the GPUs and shared memory",
            "type": "object",
            "default": {"device_requests": [GPU_REQUEST], "shm_size": settings.shm_size},
        }
        job["container_create_kwargs"] = "{{ container_create_kwargs }}"
        return template
    variables["gpu_count"] = {"title": "GPUs per job", "type": "integer", "default": 1, "minimum": 1}
    variables["node_selector"] = {
        "title": "Node selector",
        "type": "object",
        "default": {"nvidia.com/gpu.present": "true"},
    }
    variables["tolerations"] = {
        "title": "Tolerations",
        "type": "array",
        "default": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
    pod = job["job_manifest"]["spec"]["template"]["spec"]
    pod["nodeSelector"] = "{{ node_selector }}"
    pod["tolerations"] = "{{ tolerations }}"
    pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "{{ gpu_count }}"
    return template


def pools(settings: DeploySettings) -> dict[str, dict[str, Any]]:
    """name → (type, base job template, concurrency limit) of the two pools."""
    return {
        CPU_POOL: {"type": settings.pool_type, "template": pool_template(settings.pool_type, False, settings),
                   "concurrency_limit": None},
        GPU_POOL: {"type": settings.pool_type, "template": pool_template(settings.pool_type, True, settings),
                   "concurrency_limit": settings.gpus},
    }  # fmt: skip


def pipeline_parameters(settings: DeploySettings) -> dict[str, Any]:
    recipe = load_recipe(settings.recipe)
    return {
        "docs": canonical_location(settings.docs),
        "workspace": settings.workspace,
        "recipe": recipe.model_dump(mode="json"),
        "execution": {"gpu_stages": "deployments"},
    }


def deployments(settings: DeploySettings) -> list[tuple[Any, str]]:
    """(RunnerDeployment, pool name) of every docqa deployment."""
    from flows.pipeline import docqa_pipeline
    from flows.stages import STAGE_FLOWS
    from flows.watch import watch_documents

    debounce = timedelta(seconds=settings.debounce_s)
    pipeline = docqa_pipeline.to_deployment(
        "docqa-pipeline",
        parameters=pipeline_parameters(settings),
        schedules=[Cron(settings.safety_cron, parameters={"skip_if_unchanged": True})],
        triggers=[
            DeploymentEventTrigger(
                name="docqa-documents-changed",
                expect={EVENT},
                match={"prefect.resource.id": resource_id(settings.docs)},
                posture="Reactive",
                threshold=1,
                within=debounce,
                schedule_after=debounce,
            )
        ],
        concurrency_limit=ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
        ),
        description="PDFs in, held-out-evaluated QLoRA adapters out; re-trains when the documents change",
        tags=["docqa"],
    )
    watcher = watch_documents.to_deployment(
        "docqa-watch-documents",
        parameters={"docs": canonical_location(settings.docs), "workspace": settings.workspace},
        cron=settings.watch_cron,
        concurrency_limit=1,
        tags=["docqa"],
    )
    stages = [
        (flow.to_deployment(f"docqa-{stage}", tags=["docqa", "gpu"]), GPU_POOL)
        for stage, flow in STAGE_FLOWS.items()
    ]
    return [(pipeline, CPU_POOL), (watcher, CPU_POOL), *stages]


def project_entrypoint(entrypoint: str) -> str:
    """``flows/x.py:fn``: relative to the project root, whatever directory ``docqa deploy`` ran in."""
    path, _, name = entrypoint.rpartition(":")
    return f"{Path(path).resolve().relative_to(ROOT).as_posix()}:{name}"


def apply(settings: DeploySettings) -> dict[str, Any]:
    """Create or update the pools and deployments on the Prefect server at ``PREFECT_API_URL``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    applied: dict[str, Any] = {"pools": {}, "deployments": {}}
    with get_client(sync_client=True) as client:
        for name, pool in pools(settings).items():
            try:
                existing = client.read_work_pool(name)
            except ObjectNotFound:
                existing = None
            if existing is not None and existing.type != pool["type"]:
                raise ValueError(
                    f"work pool {name} exists with type {existing.type}, not {pool['type']}: delete it "
                    f"(prefect work-pool delete {name}) or deploy with --pool-type {existing.type}"
                )
            if existing is None:
                client.create_work_pool(
                    WorkPoolCreate(
                        name=name,
                        type=pool["type"],
                        base_job_template=pool["template"],
                        concurrency_limit=pool["concurrency_limit"],
                    )
                )
            else:
                client.update_work_pool(
                    name,
                    WorkPoolUpdate(
                        base_job_template=pool["template"], concurrency_limit=pool["concurrency_limit"]
                    ),
                )
            applied["pools"][name] = "created" if existing is None else "updated"
    # Process workers run the flows from this checkout, container workers from the image's copy. A pull
    # step that sets the working directory matters: without one, a process worker copies the whole
    # folder (virtual environment included) into a fresh directory for every flow run.
    code = LocalStorage(str(ROOT) if settings.pool_type == "process" else CONTAINER_WORKDIR)
    for deployment, pool_name in deployments(settings):
        deployment.storage = code
        deployment.entrypoint = project_entrypoint(deployment.entrypoint)
        deployment.apply(work_pool_name=pool_name)
        applied["deployments"][f"{deployment.flow_name}/{deployment.name}"] = pool_name
    return applied
