"""One knowledge lever, measured fast: augment → pretrain (→ SFT) → the adapted model's strict recall.

`docqa sweep` compares whole recipes (every model state, every figure, MLflow); on 2 CPU cores each
variant costs 10-15 minutes. This script calls the stage functions directly on the chunks and Q&A of a
workspace that a `docqa run` already filled, so every variant answers the same questions, and scores
only the adapted model (the base's figures are the run's): knowledge, memorisation and control strict
recall, and general-text perplexity (the forgetting reference). A pretraining adapter can be reused
(`from`) to compare SFT settings alone. Results are appended to `--out`/results.jsonl.

    python bench/knowledge_levers.py --workspace workspace --out /tmp/levers \\
        '{"name": "batch-1", "overrides": ["pretrain.batch_size=1"], "sft": true}'
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def latest(folder: Path, marker: str) -> Path:
    """The newest published output folder of a stage (the one holding ``marker``)."""
    found = sorted(folder.glob(f"*/{marker}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no {marker} under {folder}: run `docqa run --workspace` there first")
    return found[-1].parent


def measure(workspace: Path, out: Path, spec: dict) -> dict:
    import pandas as pd

    from docqa.answer_metrics import recall_summary
    from docqa.bases import resolve_base
    from docqa.modeling import load_adapted_model, load_tokenizer
    from docqa.settings import load_recipe
    from docqa.stages.augment import augment
    from docqa.stages.evaluate import (
        general_text,
        generate_answers,
        question_sets,
        sampled_ids,
        sliding_window_perplexity,
    )
    from docqa.stages.pretrain import pretrain
    from docqa.stages.sft import sft

    chunks, qa = (
        latest(workspace / "chunk", "chunks.parquet"),
        latest(workspace / "synthesize", "qa_train.parquet"),
    )
    recipe = load_recipe(spec.get("recipe", "smollm2-cpu"), spec.get("overrides", []))
    base, _ = resolve_base(recipe.model, progress=print)
    folder = out / spec["name"]
    started = time.perf_counter()
    if spec.get("from"):
        adapter = latest(out / spec["from"] / "pretrain", "adapter") / "adapter"
        tokens = None
    else:
        augmented = augment(
            chunks, qa, folder / "augment", out / "augment-store", recipe.augment, recipe.synthesize
        )
        trained = pretrain(chunks, base, recipe.model, recipe.pretrain, folder / "pretrain",
                           augmented_path=Path(augmented.path))  # fmt: skip
        adapter, tokens = Path(trained.adapter_path), trained.train_tokens
    adapters = {"pretrain": adapter}
    pretrain_s = time.perf_counter() - started
    sft_s = 0.0
    if spec.get("sft"):
        started = time.perf_counter()
        tuned = sft(qa, adapter, base, recipe.model, recipe.sft, folder / "sft")
        adapters["sft"] = Path(tuned.adapter_path)
        sft_s = time.perf_counter() - started
    tokenizer = load_tokenizer(base.path)
    model = load_adapted_model(base, recipe.model, adapters)
    sets, _ = question_sets(qa, pd.read_parquet(chunks / "chunks.parquet"), recipe.evaluate)
    result = {**spec, "pretrain_s": round(pretrain_s), "sft_s": round(sft_s), "pretrain_tokens": tokens}
    for name, asked in sets.items():
        answers = generate_answers(model, tokenizer, asked.questions, recipe.evaluate, recipe.model)
        summary = recall_summary(answers, asked.references, recipe.evaluate.recall_threshold, asked.questions)
        result[name] = summary.recalled
    texts, _ = general_text(recipe.evaluate, base, recipe.model)
    ids = sampled_ids(tokenizer, texts, recipe.evaluate.max_general_tokens, recipe.evaluate.seed)
    window, stride = recipe.evaluate.ppl_window, recipe.evaluate.ppl_stride
    result["general_perplexity"] = round(sliding_window_perplexity(model, ids, window, stride), 2)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "results.jsonl").open("a", encoding="utf-8") as file:
        file.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True, help="a workspace `docqa run` filled")
    parser.add_argument("--out", type=Path, required=True, help="where adapters and results.jsonl go")
    parser.add_argument("spec", help='JSON: {"name", "overrides": [...], "sft": bool, "from": name}')
    args = parser.parse_args()
    print(json.dumps(measure(args.workspace, args.out, json.loads(args.spec))))
