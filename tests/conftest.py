"""Shared fixtures: a tiny bootstrap base built once per session, tiny recipes, isolated caches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before anything imports Prefect, transformers or MLflow.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach a model hub
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("PREFECT_API_URL", None)

from docqa.settings import BootstrapSettings, Recipe

TINY_BOOTSTRAP = BootstrapSettings(
    vocab_size=600,
    hidden_size=64,
    intermediate_size=128,
    num_layers=2,
    num_heads=4,
    max_position_embeddings=256,
    general_text_chars=150_000,
    block_size=64,
    batch_size=8,
    max_steps=40,
    learning_rate=3e-3,
    warmup_steps=4,
)


def tiny_recipe(**sections) -> Recipe:
    """A recipe small enough to train and evaluate in seconds on 2 cores."""
    tree = {
        "name": "tiny-test",
        "model": {"bootstrap": TINY_BOOTSTRAP.model_dump()},
        "chunk": {"chunk_tokens": 96, "overlap_tokens": 12, "min_chunk_tokens": 12},
        "split": {"eval_fraction": 0.3},
        "pretrain": {"block_size": 64, "max_steps": 6, "batch_size": 4, "logging_steps": 2, "eval_steps": 3,
                     "max_eval_samples": 8, "learning_rate": 3e-3},
        "sft": {"max_seq_length": 96, "max_steps": 6, "batch_size": 4, "logging_steps": 2, "eval_steps": 3,
                "max_eval_samples": 8, "learning_rate": 3e-3},
        "evaluate": {"ppl_window": 64, "ppl_stride": 32, "max_ppl_tokens": 1500, "max_questions": 8,
                     "max_new_tokens": 12, "batch_size": 8, "sample_generations": 4},
    }  # fmt: skip
    for name, values in sections.items():
        tree.setdefault(name, {}).update(values)
    return Recipe.model_validate(tree)


@pytest.fixture(scope="session", autouse=True)
def docqa_cache(tmp_path_factory) -> Path:
    """Built bases go to a per-session cache, never the user's ~/.cache/docqa."""
    folder = tmp_path_factory.mktemp("docqa-cache")
    os.environ["DOCQA_CACHE_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_base(docqa_cache):
    """The tiny bootstrap base (a real tokenizer and Llama trained for a few steps), as a BaseModelRef."""
    from docqa.bootstrap import ensure_bootstrap_base
    from docqa.outputs import describe_base

    folder, _ = ensure_bootstrap_base(TINY_BOOTSTRAP)
    return describe_base(str(folder), source="bootstrap")
