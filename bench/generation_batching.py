"""Evaluation's answer generation: batched with left padding vs one question at a time.

The tiny bootstrap base in the same 4-bit form evaluation uses, greedy decoding, `evaluate.max_new_tokens`
new tokens, on questions the extractive backend writes from Python reference topics. Baseline: batch
size 1 (one question at a time), measured in the same run. Goal (issue 4): >= 3x faster batched. Both
answers/s figures also go to docqa/data/throughputs.json (for `docqa estimate`).

    python bench/generation_batching.py [--questions 64] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from pydoc_data.topics import topics

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import command_line, record_figures, write_section
from docqa.bootstrap import ensure_bootstrap_base
from docqa.estimate import model_size
from docqa.modeling import load_base_model, load_tokenizer
from docqa.outputs import describe_base
from docqa.settings import Recipe, load_recipe
from docqa.stages.evaluate import generate_answers
from docqa.synthesis.extractive import extract_candidates


def questions(n: int) -> list[str]:
    settings = Recipe().synthesize
    found: list[str] = []
    for name in sorted(topics):
        found += [c.question for c in extract_candidates(topics[name][:3000], settings)]
        if len(found) >= n:
            return found[:n]
    return found


def timed(model, tokenizer, asked: list[str], batch_size: int) -> tuple[float, list[str]]:
    recipe = load_recipe("tiny-cpu")
    settings = recipe.evaluate.model_copy(update={"batch_size": batch_size})
    started = time.perf_counter()
    answers = generate_answers(model, tokenizer, asked, settings, recipe.model)
    return time.perf_counter() - started, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    recipe = load_recipe("tiny-cpu")
    folder, _ = ensure_bootstrap_base(recipe.model.bootstrap)
    base = describe_base(str(folder), source="bootstrap")
    tokenizer = load_tokenizer(base.path)
    model = load_base_model(base, recipe.model, for_training=False)
    asked = questions(args.questions)
    timed(model, tokenizer, asked[:4], args.batch_size)  # warm-up
    one_s, one_answers = timed(model, tokenizer, asked, 1)
    batch_s, batch_answers = timed(model, tokenizer, asked, args.batch_size)
    same = sum(a == b for a, b in zip(one_answers, batch_answers, strict=True))
    body = (
        "## Evaluation: batched generation vs one question at a time (`bench/generation_batching.py`)\n\n"
        f"{len(asked)} held-out-style questions, tiny bootstrap base in 4-bit (as evaluation loads it), "
        f"greedy, {recipe.evaluate.max_new_tokens} new tokens at most. Baseline: batch size 1, same run. "
        "Goal: >= 3x.\n\n"
        "| generation | wall s | questions/s | speed-up |\n|---|---:|---:|---:|\n"
        f"| one at a time (baseline) | {one_s:.1f} | {len(asked) / one_s:.2f} | 1.00x |\n"
        f"| batches of {args.batch_size}, left padding | {batch_s:.1f} | {len(asked) / batch_s:.2f} | "
        f"{one_s / batch_s:.2f}x |\n\n"
        f"Identical greedy answers in both modes: {same}/{len(asked)}."
    )
    write_section("generation_batching", body)
    record_figures(
        "generation_batching",
        command_line("bench/generation_batching.py"),
        figures(recipe, str(model.device), {1: one_s, args.batch_size: batch_s}, len(asked)),
    )
    print(body)


def figures(recipe, device: str, seconds: dict[int, float], questions: int) -> dict[str, dict]:
    """Answers per second at each batch size, for `docqa estimate`."""
    kind = "cpu" if device == "cpu" else "gpu"
    return {
        f"generate.{kind}.bootstrap.batch{batch_size}": {
            "stage": "generate",
            "metric": "questions_per_s",
            "value": round(questions / elapsed, 2),
            "device_kind": kind,
            "model": "tiny bootstrap base (default model.bootstrap), 4-bit NF4",
            "parameters": model_size(recipe)[1],
            "conditions": {
                "batch_size": batch_size,
                "max_new_tokens": recipe.evaluate.max_new_tokens,
                "questions": questions,
                "seconds": round(elapsed, 1),
            },
            "note": "greedy answers, left padding",
        }
        for batch_size, elapsed in seconds.items()
    }


if __name__ == "__main__":
    main()
