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
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n N: N workers share the cores, so each (and each process it starts) computes on one thread
    os.environ.setdefault("OMP_NUM_THREADS", "1")

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
        "model": {"embedded": "tiny-bootstrap", "bootstrap": TINY_BOOTSTRAP.model_dump()},
        "chunk": {"chunk_tokens": 96, "overlap_tokens": 12, "min_chunk_tokens": 12},
        "split": {"eval_fraction": 0.3},
        "pretrain": {"block_size": 64, "max_steps": 6, "batch_size": 4, "logging_steps": 2, "eval_steps": 3,
                     "max_eval_samples": 8, "learning_rate": 3e-3},
        "sft": {"max_seq_length": 96, "max_steps": 6, "batch_size": 4, "logging_steps": 2, "eval_steps": 3,
                "max_eval_samples": 8, "learning_rate": 3e-3},
        "evaluate": {"ppl_window": 64, "ppl_stride": 32, "max_ppl_tokens": 1500, "max_general_tokens": 1500,
                     "max_questions": 8,
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
def prefect_harness():
    """One temporary Prefect server and database for the session (startup takes 10-20 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def checkers():
    """The synthesis filters' models (MiniLM embedder, language identifier), loaded once per session."""
    from docqa.settings import SynthesizeSettings
    from docqa.stages.synthesize import Checkers

    return Checkers.load(SynthesizeSettings())


@pytest.fixture(scope="session")
def tiny_base(docqa_cache):
    """The tiny bootstrap base (a real tokenizer and Llama trained for a few steps), as a BaseModelRef."""
    from docqa.bootstrap import ensure_bootstrap_base
    from docqa.outputs import describe_base

    folder, _ = ensure_bootstrap_base(TINY_BOOTSTRAP)
    return describe_base(str(folder), source="bootstrap")


FAST_RETRY_S = 0.01


def openai_settings(base_url: str, **overrides):
    """Settings of the openai backend for a test server: 2 pairs per chunk, quick retries, 3 attempts."""
    from docqa.settings import SynthesizeSettings

    values = {
        "backend": "openai",
        "base_url": base_url,
        "model": "stub-model",
        "pairs_per_chunk": 2,
        "retry_initial_wait_s": FAST_RETRY_S,
        "max_attempts": 3,
    }
    return SynthesizeSettings(**{**values, **overrides})


def closed_port_url() -> str:
    """An OpenAI-style base URL on 127.0.0.1 where nothing listens (the port was free a moment ago)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


TOPIC_DOCUMENTS = {
    "statements.txt": ("for", "while", "if", "try", "with", "return", "raise", "break"),
    "expressions.txt": ("lambda", "comparisons", "booleans", "calls", "slicings"),
    "functions.txt": ("function", "class", "yield", "global", "nonlocal"),
    "names.txt": ("naming", "import", "assert", "del", "pass", "continue"),
}


def write_topic_documents(folder: Path) -> Path:
    """A small real corpus: Language Reference topics grouped into four text documents."""
    from pydoc_data.topics import topics

    folder.mkdir(parents=True, exist_ok=True)
    for name, keys in TOPIC_DOCUMENTS.items():
        (folder / name).write_text("\n\n".join(topics[k] for k in keys), encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, tiny_base, checkers):
    """Ingest, chunk and synthesise the small corpus once: what the training and evaluation tests consume."""
    from docqa.modeling import load_tokenizer
    from docqa.outputs import chunks_file
    from docqa.stages.chunk import chunk_documents
    from docqa.stages.ingest import ingest_documents, list_documents
    from docqa.stages.synthesize import synthesize_qa

    recipe = tiny_recipe(split={"eval_documents": ["names.txt"], "eval_fraction": 0.01})
    workspace = tmp_path_factory.mktemp("prepared")
    docs = write_topic_documents(workspace / "docs")
    ingested = ingest_documents(
        list_documents(docs, recipe.ingest),
        workspace / "ingest",
        workspace / "ingest" / "store",
        recipe.ingest,
    )
    chunks = chunk_documents(
        Path(ingested.path), load_tokenizer(tiny_base.path), tiny_base.tokenizer_digest, workspace / "chunk",
        workspace / "chunk" / "store", recipe.chunk, recipe.split,
    )  # fmt: skip
    qa = synthesize_qa(
        chunks_file(Path(chunks.path)),
        workspace / "synthesize",
        workspace / "synthesize" / "store",
        recipe.synthesize,
        checkers=checkers,
    )
    return {"recipe": recipe, "workspace": workspace, "ingest": ingested, "chunks": chunks, "qa": qa}


@pytest.fixture(scope="session")
def trained(prepared, tiny_base):
    """Both adapters, trained once on the small corpus."""
    from docqa.stages.pretrain import pretrain
    from docqa.stages.sft import sft

    recipe, workspace = prepared["recipe"], prepared["workspace"]
    logged: list[tuple[int, dict]] = []
    pretrained = pretrain(
        Path(prepared["chunks"].path), tiny_base, recipe.model, recipe.pretrain, workspace / "pretrain",
        on_log=lambda values, step: logged.append((step, values)),
    )  # fmt: skip
    tuned = sft(
        Path(prepared["qa"].path), Path(pretrained.adapter_path), tiny_base, recipe.model, recipe.sft,
        workspace / "sft",
    )  # fmt: skip
    return {**prepared, "pretrained": pretrained, "tuned": tuned, "pretrain_log": logged}
