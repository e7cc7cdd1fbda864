"""The deployment as code points at the real flow, whose parameters are forms (pydantic models)."""

from __future__ import annotations

from pathlib import Path

import yaml
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.callables import parameter_schema

from docqa.settings import STAGES

ROOT = Path(__file__).resolve().parent.parent


def test_pipeline_deployment_entrypoint_loads_the_flow(monkeypatch):
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    deployment = next(d for d in spec["deployments"] if d["name"] == "docqa-pipeline")
    monkeypatch.chdir(ROOT)
    flow = load_flow_from_entrypoint(deployment["entrypoint"])
    assert flow.name == "docqa-pipeline"
    assert set(deployment.get("parameters", {})) <= set(parameter_schema(flow.fn).properties)


def test_every_stage_is_a_form_in_the_ui(monkeypatch):
    monkeypatch.chdir(ROOT)
    schema = parameter_schema(load_flow_from_entrypoint("flows/pipeline.py:docqa_pipeline").fn)
    definitions = schema.definitions
    for parameter in ("model", "split", *STAGES):
        reference = schema.properties[parameter]["$ref"].rsplit("/", 1)[-1]
        fields = definitions[reference]["properties"]
        assert fields, f"{parameter} renders as a form with fields"
    pretrain = definitions[schema.properties["pretrain"]["$ref"].rsplit("/", 1)[-1]]["properties"]
    assert "lora" in pretrain and "learning_rate" in pretrain
    assert "description" in pretrain["block_size"]  # help text shown beside the field
