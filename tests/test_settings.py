"""Recipes and overrides: every shipped recipe validates, problems are collected into one message."""

from __future__ import annotations

import pytest
import yaml

from docqa.settings import RECIPES_DIR, Recipe, SettingsError, flatten, load_recipe

SHIPPED = sorted(RECIPES_DIR.glob("*.yaml"))


def test_the_expected_recipes_ship():
    names = {p.stem for p in SHIPPED}
    assert {
        "smollm2-cpu",
        "tiny-cpu",
        "llama-2-7b-qlora",
        "llama-2-13b-qlora",
        "llama-3-8b-qlora",
        "seed-reproduction",
    } <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_recipe_loads_and_names_itself(path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    header = path.read_text().splitlines()[:3]
    assert any("docqa run" in line for line in header), "the header shows the command that runs it"
    # every key the YAML sets is a real setting (extra keys are refused, so this also checks spelling)
    assert set(yaml.safe_load(path.read_text())) <= set(Recipe.model_fields)


def test_smollm2_cpu_recipe_is_the_embedded_default():
    assert load_recipe("smollm2-cpu") == Recipe()
    assert load_recipe(None) == Recipe()
    assert Recipe().model.base is None and Recipe().model.embedded == "smollm2-135m-instruct"
    assert load_recipe("tiny-cpu").model.embedded == "tiny-bootstrap"


def test_seed_reproduction_matches_the_seed_project():
    recipe = load_recipe("seed-reproduction")
    for stage in (recipe.pretrain, recipe.sft):
        assert (stage.lora.r, stage.lora.alpha, stage.lora.dropout) == (64, 16, 0.1)
        assert stage.lora.target_modules == ["q_proj", "v_proj"]
        assert (stage.learning_rate, stage.batch_size) == (2e-4, 8)
    assert recipe.pretrain.block_size == recipe.sft.max_seq_length == 1024


def test_overrides_are_typed_and_keep_other_defaults():
    recipe = load_recipe(
        "smollm2-cpu", ["pretrain.lora.r=64", "split.eval_documents=[a.pdf, b.pdf]", "sft.epochs=1"]
    )
    assert recipe.pretrain.lora.r == 64
    assert recipe.pretrain.lora.alpha == Recipe().pretrain.lora.alpha
    assert recipe.pretrain.learning_rate == Recipe().pretrain.learning_rate  # recipe-level default kept
    assert recipe.split.eval_documents == ["a.pdf", "b.pdf"]
    assert recipe.sft.epochs == 1.0


def test_every_problem_is_reported_at_once():
    with pytest.raises(SettingsError) as caught:
        load_recipe(None, ["chunk.overlap_tokens=999", "synthesize.backend=openai", "pretrain.bogus=1"])
    message = str(caught.value)
    assert "overlap_tokens must be smaller than chunk_tokens" in message
    assert "needs base_url" in message and "needs model" in message
    assert "pretrain.bogus" in message


def test_lengths_beyond_the_bootstrap_context_are_refused():
    with pytest.raises(SettingsError, match="exceeds the bootstrap base's context"):
        load_recipe(None, ["model.embedded=tiny-bootstrap", "pretrain.block_size=4096"])
    assert load_recipe(None, ["pretrain.block_size=4096"]).pretrain.block_size == 4096  # SmolLM2: 8192


def test_malformed_override_is_refused():
    with pytest.raises(SettingsError, match=r"stage\.key=value"):
        load_recipe(None, ["pretrain.lora.r"])


def test_flatten_gives_dotted_keys():
    flat = flatten(Recipe())
    assert flat["pretrain.lora.r"] == Recipe().pretrain.lora.r
    assert flat["model.bootstrap.hidden_size"] == 256


def test_synthesis_settings_refuse_what_cannot_work():
    with pytest.raises(SettingsError) as caught:
        load_recipe(
            None,
            [
                "synthesize.judge=true",  # the extractive rules cannot judge
                "synthesize.language=English",  # an ISO 639-1 code is expected
                "synthesize.retry_initial_wait_s=10",
                "synthesize.retry_max_wait_s=1",
            ],
        )
    message = str(caught.value)
    assert (
        "judge needs an LLM backend" in message and "ISO 639-1" in message and "retry_max_wait_s" in message
    )
    with pytest.raises(SettingsError, match="needs model"):
        load_recipe(None, ["synthesize.backend=transformers"])
