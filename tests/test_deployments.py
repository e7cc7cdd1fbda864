"""Deployments and work pools as code: the flows they point at load, every parameter is a form, the GPU
pool templates render to NVIDIA device requests, and the pipeline re-trains on the watcher's event."""

from __future__ import annotations

import inspect
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.callables import parameter_schema
from prefect.utilities.templating import apply_values

from deployments.deploy import CPU_POOL, GPU_POOL, DeploySettings, deployments, pipeline_parameters, pools
from docqa.settings import STAGES, load_recipe
from docqa.watch import EVENT, resource_id

ROOT = Path(__file__).resolve().parent.parent


def settings(tmp_path: Path, **overrides) -> DeploySettings:
    return DeploySettings(docs=str(tmp_path / "docs"), workspace=str(tmp_path / "ws"), **overrides)


def rendered(template: dict) -> dict:
    """The job configuration a worker gets when a deployment sets no job variables: the defaults."""
    defaults = {k: v.get("default") for k, v in template["variables"]["properties"].items()}
    return apply_values(template["job_configuration"], defaults)


def test_every_stage_is_a_form_in_the_ui(monkeypatch):
    monkeypatch.chdir(ROOT)
    schema = parameter_schema(load_flow_from_entrypoint("flows/pipeline.py:docqa_pipeline").fn)
    definitions = schema.definitions

    def fields(reference: dict) -> dict:
        return definitions[reference["$ref"].rsplit("/", 1)[-1]]["properties"]

    assert schema.properties["recipe"].get("description"), "the recipe has help text"
    assert schema.properties["execution"].get("description"), "execution has help text"
    assert fields(schema.properties["execution"])
    recipe = fields(schema.properties["recipe"])
    for section in ("model", "source", "split", *STAGES, "registry"):
        assert fields(recipe[section]), f"{section} renders as a form with fields"
    pretrain = fields(recipe["pretrain"])
    assert "lora" in pretrain and "learning_rate" in pretrain
    assert "description" in pretrain["block_size"]  # help text shown beside the field
    assert pretrain["learning_rate"]["exclusiveMinimum"] == 0  # bounds the form enforces


def test_the_deployment_carries_the_whole_recipe_to_the_flow(monkeypatch, tmp_path):
    """What `docqa deploy` stores as the pipeline's parameters, read back as the flow reads them (JSON
    through Prefect's parameter validation), is the recipe it was made from, description included."""
    monkeypatch.chdir(ROOT)
    recipe_file = tmp_path / "custom.yaml"
    recipe_file.write_text(
        "name: custom\ndescription: a recipe of one's own\npretrain: {lora: {r: 12}}\nsft: {epochs: 2}\n"
    )
    parameters = json.loads(json.dumps(pipeline_parameters(settings(tmp_path, recipe=str(recipe_file)))))
    flow = load_flow_from_entrypoint("flows/pipeline.py:docqa_pipeline")
    validated = flow.validate_parameters(parameters)
    assert validated["recipe"] == load_recipe(recipe_file)
    assert validated["recipe"].description == "a recipe of one's own"
    assert validated["recipe"].pretrain.lora.r == 12


def test_docker_gpu_pool_requests_nvidia_devices_and_shared_memory(tmp_path):
    templates = pools(settings(tmp_path, pool_type="docker", shm_size="16g"))
    gpu = rendered(templates[GPU_POOL]["template"])
    assert gpu["container_create_kwargs"]["device_requests"] == [
        {"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}
    ]
    assert gpu["container_create_kwargs"]["shm_size"] == "16g"
    assert gpu["image"] == "docqa:gpu"
    cpu = rendered(templates[CPU_POOL]["template"])
    assert "container_create_kwargs" not in cpu and cpu["image"] == "docqa:cpu"


def test_kubernetes_gpu_pool_limits_gpus_and_targets_gpu_nodes(tmp_path):
    gpu = rendered(pools(settings(tmp_path, pool_type="kubernetes"))[GPU_POOL]["template"])
    pod = gpu["job_manifest"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    cpu = rendered(pools(settings(tmp_path, pool_type="kubernetes"))[CPU_POOL]["template"])
    assert (
        "nvidia.com/gpu"
        not in cpu["job_manifest"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    )


@pytest.mark.parametrize("gpus", [1, 4])
def test_one_training_job_per_gpu(tmp_path, gpus):
    assert pools(settings(tmp_path, gpus=gpus))[GPU_POOL]["concurrency_limit"] == gpus
    assert pools(settings(tmp_path, gpus=gpus))[CPU_POOL]["concurrency_limit"] is None


def test_the_pipeline_deployment_retrains_on_the_watchers_event(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    chosen = settings(tmp_path, debounce_s=90, safety_cron="0 4 * * *")
    by_name = {d.name: (d, pool) for d, pool in deployments(chosen)}
    assert {name: pool for name, (_, pool) in by_name.items()} == {
        "docqa-pipeline": CPU_POOL,
        "docqa-watch-documents": CPU_POOL,
        "docqa-pretrain": GPU_POOL,
        "docqa-sft": GPU_POOL,
        "docqa-evaluate": GPU_POOL,
    }
    pipeline, _ = by_name["docqa-pipeline"]
    [trigger] = pipeline.triggers
    assert trigger.expect == {EVENT}
    assert trigger.match.model_dump() == {"prefect.resource.id": resource_id(chosen.docs)}
    assert trigger.within == timedelta(seconds=90) and trigger.schedule_after == timedelta(seconds=90)
    [schedule] = pipeline.schedules
    assert schedule.schedule.cron == "0 4 * * *" and schedule.parameters == {"skip_if_unchanged": True}
    assert pipeline.concurrency_limit == 1
    assert pipeline.parameters["execution"] == {"gpu_stages": "deployments"}
    assert pipeline.parameters["docs"] == str(tmp_path / "docs")
    watcher, _ = by_name["docqa-watch-documents"]
    assert watcher.parameters == {"docs": chosen.docs, "workspace": chosen.workspace}
    for name in ("docqa-pretrain", "docqa-sft", "docqa-evaluate"):  # entrypoints the workers will load
        deployment, _ = by_name[name]
        assert load_flow_from_entrypoint(deployment.entrypoint).name == name


def test_each_gpu_stage_flow_takes_its_tasks_parameters(monkeypatch):
    """The stage flows declare no signature of their own: each takes its task's (one place to change)."""
    from tasks.stages import evaluate_task, pretrain_task, sft_task

    monkeypatch.chdir(ROOT)
    for stage, task in (("pretrain", pretrain_task), ("sft", sft_task), ("evaluate", evaluate_task)):
        flow = load_flow_from_entrypoint(f"flows/stages.py:{stage}_stage")
        schema = parameter_schema(flow.fn)
        assert schema.model_dump() == parameter_schema(task.fn).model_dump()
        assert {"base", "model", "settings", "workspace"} <= set(schema.required)


def test_a_stage_flow_takes_its_parameters_the_way_prefect_passes_them(monkeypatch):
    """A worker calls the flow function with the parameters split into positional and keyword arguments
    by the signature (Prefect's parameters_to_args_kwargs): each stage flow hands its task all of them."""
    from prefect.utilities.callables import parameters_to_args_kwargs

    import flows.stages as stages

    handed: dict[str, Any] = {}
    monkeypatch.setattr(stages, "_run", lambda stage, task, parameters: handed.update(parameters) or {})
    for stage, flow in stages.STAGE_FLOWS.items():
        names = list(inspect.signature(flow.fn).parameters)
        parameters = {name: f"<{name}>" for name in names}
        args, kwargs = parameters_to_args_kwargs(flow.fn, parameters)
        assert args, f"{stage}: Prefect passes these positionally"
        handed.clear()
        flow.fn(*args, **kwargs)
        assert handed == parameters, stage
