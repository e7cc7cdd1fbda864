"""SFT packing: optimizer steps per epoch and real-token throughput, packed vs seed-style padding (CPU).

The sample corpus's training Q&A (ingest, chunk and the offline extractive synthesis, as `docqa run`
makes them), the tiny bootstrap base in 4-bit with a pretraining adapter under the trainable SFT adapter,
exactly as the SFT stage builds them, one epoch at the embedded recipe's batch size and
`sft.max_seq_length`. Two runs in the same process on the same examples:

- baseline, seed-style: TRL's SFTTrainer + PEFT, one example per row, right-padded to the longest
  example of each batch (`sft.packing=false`);
- ours: best-fit-decreasing packing into rows of `max_seq_length`, one padding-free row per batch,
  position ids restarting at each example (`sft.packing=true`, the default).

Counted per run from every batch the trainer actually stepped on: token slots (the batch's tensor size),
real tokens (attention-mask ones; every token of a padding-free row), optimizer steps, wall seconds of
`trainer.train()`. Goal (issue 4): <= 0.75x the baseline's steps per epoch and a real-token fraction
>= 0.95. Besides its section of docs/benchmarks.md it records, in docqa/data/throughputs.json, both runs' real
tokens/s, the tokens per example and the extractive synthesis's acceptance (for `docqa estimate`).

    python bench/sft_packing.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import command_line, record_figures, write_section
from docqa.bootstrap import ensure_bootstrap_base
from docqa.estimate import model_size
from docqa.modeling import load_tokenizer
from docqa.outputs import SynthesizeOutput, chunks_file, describe_base
from docqa.sample_corpus import write_sample_corpus
from docqa.settings import Recipe
from docqa.stages.chunk import chunk_documents
from docqa.stages.ingest import ingest_documents, list_documents
from docqa.stages.pretrain import pretrain_model
from docqa.stages.sft import sft_dataset, sft_model, sft_trainer
from docqa.stages.synthesize import read_qa, synthesize_qa


def sample_qa(root: Path, recipe: Recipe, base) -> SynthesizeOutput:
    docs = root / "docs"
    write_sample_corpus(docs)
    ingested = ingest_documents(
        list_documents(docs, recipe.ingest), root / "ingest", root / "ingest" / "store", recipe.ingest
    )
    chunks = chunk_documents(
        Path(ingested.path), load_tokenizer(base.path), base.tokenizer_digest, root / "chunk",
        root / "chunk" / "store", recipe.chunk, recipe.split,
    )  # fmt: skip
    return synthesize_qa(
        chunks_file(Path(chunks.path)), root / "synthesize", root / "synthesize" / "store", recipe.synthesize
    )


def fresh_pretrain_adapter(base, recipe: Recipe, folder: Path) -> Path:
    model = pretrain_model(base, recipe.model, recipe.pretrain)
    model.save_pretrained(str(folder))
    return folder / "pretrain"


def train_once(base, recipe: Recipe, qa_path: Path, adapter: Path, packing: bool, work: Path) -> dict:
    settings = recipe.sft.model_copy(update={"packing": packing, "epochs": 1.0, "max_steps": -1})
    tokenizer = load_tokenizer(base.path)
    train = sft_dataset(read_qa(qa_path, "train"), tokenizer, recipe.model)
    model = sft_model(base, adapter, recipe.model, settings)
    trainer = sft_trainer(model, tokenizer, train, None, settings, work)
    counts = {"slots": 0, "real": 0, "batches": 0}
    step = trainer.training_step

    def counting_step(model_, inputs, *args, **kwargs):
        counts["slots"] += inputs["input_ids"].numel()
        mask = inputs.get("attention_mask")
        counts["real"] += int(mask.sum()) if mask is not None else inputs["input_ids"].numel()
        counts["batches"] += 1
        return step(model_, inputs, *args, **kwargs)

    trainer.training_step = counting_step
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return {
        "examples": len(train),
        "steps": trainer.state.global_step,
        "seconds": seconds,
        **counts,
        "real_fraction": counts["real"] / counts["slots"],
        "real_per_s": counts["real"] / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    recipe = Recipe()
    folder, _ = ensure_bootstrap_base(recipe.model.bootstrap)
    base = describe_base(str(folder), source="bootstrap")
    with tempfile.TemporaryDirectory(prefix="docqa-bench-") as tmp:
        root = Path(tmp)
        qa = sample_qa(root, recipe, base)
        qa_path = Path(qa.path)
        adapter = fresh_pretrain_adapter(base, recipe, root / "pretrain")
        padded = train_once(base, recipe, qa_path, adapter, packing=False, work=root / "padded")
        packed = train_once(base, recipe, qa_path, adapter, packing=True, work=root / "packed")

    steps_ratio = packed["steps"] / padded["steps"]
    speed_ratio = packed["real_per_s"] / padded["real_per_s"]
    rows = [
        ("seed-style: one example per row, right-padded to the batch's longest (baseline)", padded),
        ("ours: best-fit-decreasing packing, padding-free rows", packed),
    ]
    lines = [
        f"Sample corpus, {padded['examples']} training Q&A examples, tiny bootstrap base in 4-bit, "
        f"one epoch, batch {recipe.sft.batch_size}, `sft.max_seq_length` {recipe.sft.max_seq_length}, "
        "CPU. Command: `python bench/sft_packing.py`.",
        "",
        "| run | optimizer steps | token slots | real tokens | real fraction | seconds | real tokens/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in rows:
        lines.append(
            f"| {label} | {r['steps']} | {r['slots']:,} | {r['real']:,} | {r['real_fraction']:.3f} | "
            f"{r['seconds']:.1f} | {r['real_per_s']:.0f} |"
        )
    lines += [
        "",
        f"Steps per epoch: **{steps_ratio:.2f}×** the baseline's (goal ≤ 0.75×: "
        f"{'met' if steps_ratio <= 0.75 else 'not met'}). "
        f"Real-token fraction **{packed['real_fraction']:.3f}** "
        f"(goal ≥ 0.95: {'met' if packed['real_fraction'] >= 0.95 else 'not met'}). Real tokens per second: "
        f"**{speed_ratio:.2f}×** the baseline's.",
    ]
    if packed["real"] != padded["real"]:
        lines.append(
            f"\nReal tokens differ ({packed['real']:,} vs {padded['real']:,}): the collator masks nothing "
            "away, so the difference is truncation at `max_seq_length`, the same rule in both."
        )
    body = "\n".join(lines)
    print(body)
    write_section("sft_packing", "## SFT packing vs seed-style padding (CPU)\n\n" + body)
    record_figures("sft_packing", command_line("bench/sft_packing.py"), figures(recipe, padded, packed, qa))


def figures(recipe: Recipe, padded: dict, packed: dict, qa: SynthesizeOutput) -> dict[str, dict]:
    """Both runs' real tokens/s, tokens per example, and the extractive synthesis's acceptance."""
    import torch

    kind = "gpu" if torch.cuda.is_available() else "cpu"
    model = {
        "model": "tiny bootstrap base (default model.bootstrap), 4-bit NF4",
        "parameters": model_size(recipe)[1],
        "device_kind": kind,
    }
    found = {}
    for name, run, packing in (("packed", packed, True), ("padded", padded, False)):
        conditions = {
            "packing": packing,
            "max_seq_length": recipe.sft.max_seq_length,
            "batch_size": recipe.sft.batch_size,
            "examples": run["examples"],
            "optimizer_steps": run["steps"],
            "real_tokens": run["real"],
            "seconds": round(run["seconds"], 1),
        }
        found[f"train.{kind}.bootstrap.{name}"] = {
            **model,
            "stage": "train",
            "metric": "tokens_per_s",
            "value": round(run["real_per_s"], 1),
            "conditions": conditions,
            "note": f"SFT, one epoch, real tokens per second ({name} rows)",
        }
    found["sft.tokens_per_example.bootstrap.extractive"] = {
        **model,
        "stage": "sft",
        "metric": "tokens_per_example",
        "value": round(packed["real"] / packed["examples"], 2),
        "backend": "extractive",
        "conditions": {"examples": packed["examples"], "real_tokens": packed["real"], "corpus": "sample"},
    }
    pairs_asked = qa.chunks * recipe.synthesize.pairs_per_chunk
    found["synthesize.acceptance.extractive"] = {
        "stage": "synthesize",
        "metric": "acceptance_rate",
        "value": round(qa.pairs_accepted / pairs_asked, 4),
        "device_kind": "cpu",
        "model": "extractive (rules, no model)",
        "backend": "extractive",
        "conditions": {"chunks": qa.chunks, "pairs_asked": pairs_asked, "pairs_accepted": qa.pairs_accepted},
        "note": "accepted pairs / (chunks × pairs_per_chunk), sample corpus",
    }
    return found


if __name__ == "__main__":
    main()
