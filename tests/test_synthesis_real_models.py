"""The synthesize stage against real models: the tiny bootstrap Llama served by ``transformers serve`` on
127.0.0.1 (the ``openai`` backend) and loaded in-process (the ``transformers`` backend).

The tiny model writes no JSON, so its replies do not parse: that must show up as counted ``unparsed``
chunks with every raw reply kept, and a clear error that no pair survived, never a crash.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from docqa.settings import SynthesizeSettings
from docqa.stages.synthesize import SynthesisError, store_key, synthesize_qa
from docqa.synthesis import make_backend
from docqa.synthesis.serve import transformers_serve
from docqa.workspace import read_jsonl

TEXTS = {
    "train": [
        "The assert statement inserts debugging assertions into a program.",
        "A lambda expression creates an anonymous function from a single expression.",
    ],
    "eval": ["The with statement wraps the execution of a block with methods of a context manager."],
}
MAX_TOKENS = 24


def write_chunks(path: Path) -> Path:
    rows = [
        {
            "chunk_id": f"{split}{i}",
            "doc_id": f"doc-{split}",
            "doc_title": "Python reference",
            "page_start": 1,
            "page_end": 1,
            "text": text,
            "split": split,
        }
        for split, texts in TEXTS.items()
        for i, text in enumerate(texts)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)
    return path


def assert_unparsed_and_kept(tmp_path: Path, settings: SynthesizeSettings, checkers) -> None:
    backend = make_backend(settings)
    store = tmp_path / "store"
    with pytest.raises(SynthesisError, match="kept no training Q&A pair") as error:
        synthesize_qa(
            write_chunks(tmp_path / "chunks.parquet"),
            tmp_path / "out",
            store,
            settings,
            backend,
            checkers=checkers,
        )
    assert "'unparsed': 3" in str(error.value)
    folder = Path(str(error.value).rsplit(" and ", 1)[1].rstrip(".")).parent  # named in the message
    states = [r["state"] for r in read_jsonl(folder / "chunk_accounting.jsonl")]
    replies = read_jsonl(folder / "raw_replies.jsonl")
    assert states == ["unparsed"] * 3 and all(r["status"] == "unparsed" and r["reason"] for r in replies)
    records = [
        json.loads(p.read_text()) for p in (store / store_key(backend.identity(), settings)).glob("*.json")
    ]
    assert len(records) == 3  # replies that came are stored, so the next run does not ask again
    for record in records:
        result = record["result"]
        assert result["status"] == "unparsed" and result["reason"] and result["attempts"] == 1
        assert isinstance(result["raw_reply"], str)


@pytest.mark.slow
def test_openai_backend_against_transformers_serve(tmp_path: Path, tiny_base, checkers) -> None:
    with transformers_serve(tiny_base.path, device="cpu") as served:
        settings = SynthesizeSettings(
            backend="openai",
            base_url=served.base_url,
            model=served.model,
            max_tokens=MAX_TOKENS,
            concurrency=3,
        )
        assert_unparsed_and_kept(tmp_path, settings, checkers)


def long_context_copy(base_path: str, folder: Path) -> Path:
    """The tiny base with a 1024-token context: Llama's positions are rotary, so no weight changes, and
    the Q&A prompt (about 400 tokens) fits."""
    shutil.copytree(base_path, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 1024}))
    return folder


def test_transformers_backend_in_process(tmp_path: Path, tiny_base, checkers) -> None:
    model = long_context_copy(tiny_base.path, tmp_path / "model")
    settings = SynthesizeSettings(
        backend="transformers", model=str(model), max_tokens=MAX_TOKENS, batch_size=2
    )
    assert_unparsed_and_kept(tmp_path, settings, checkers)


def test_transformers_backend_refuses_prompts_longer_than_the_context(
    tmp_path: Path, tiny_base, checkers
) -> None:
    settings = SynthesizeSettings(backend="transformers", model=tiny_base.path, max_tokens=MAX_TOKENS)
    chunks = write_chunks(tmp_path / "chunks.parquet")
    with pytest.raises(SynthesisError, match="no chunk got a reply") as error:
        synthesize_qa(chunks, tmp_path / "out", tmp_path / "store", settings, checkers=checkers)
    assert "too long for the model's context" in str(error.value) and "chunk.chunk_tokens" in str(error.value)
