"""Does the model now know the documents? The seed-shaped recipe against docqa's default, same questions.

Two `docqa run`s on the sample corpus in one workspace (so both answer the very same knowledge,
memorisation and control questions, synthesised once):
- baseline, seed-shaped: raw chunks for causal-LM pretraining (2 epochs), then SFT: docqa's default
  before knowledge augmentation (no rewrites, no Q&A mixed into pretraining);
- docqa's default recipe (`smollm2-cpu`): pretraining on the chunks, their rewrites and the SFT pairs
  written as text, with distilled replay of general text, then SFT held at the base on general text.

Reports every figure of the evaluation protocol per recipe (the three sets for base, pretrained and
final models, `knowledge_gain` with its interval, the open-book oracle and RAG, `rag_recovery`,
perplexities, forgetting), the minutes per stage, and the ratio of the knowledge gains. Writes its
section of docs/benchmarks.md and the runs' wall times and pretraining throughputs to
docqa/data/throughputs.json.

    python bench/knowledge.py [--set key=value ...]   # overrides apply to both recipes
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import command_line, docqa_run, record_figures, write_section

RECIPE = "smollm2-cpu"
BASELINE = [  # docqa's default before knowledge augmentation (issue 13)
    "augment.kinds=[]",
    "augment.versions_per_chunk=0",
    "augment.mix_qa=false",
    "pretrain.epochs=2",
    "pretrain.batch_size=4",
    "pretrain.learning_rate=0.001",
    "pretrain.eval_steps=50",
    "pretrain.general_mix_ratio=0",
    "sft.general_kl_weight=0",
]
MINUTE = 60.0


def _f(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def protocol_table(runs: dict[str, dict]) -> list[str]:
    """Strict recall (the earlier recall in brackets) per set and model, each recipe a column group."""
    from docqa.figures import EvaluationFigures, recall_rows

    names = list(runs)
    rows = {name: recall_rows(EvaluationFigures.model_validate(runs[name]["evaluation"])) for name in names}
    head = "| set | " + " | ".join(f"{n}: base | {n}: pretrained | {n}: final" for n in names) + " |"
    lines = [head, "|---|" + "---:|" * (3 * len(names))]
    for i, row in enumerate(rows[names[0]]):
        cells = [row["set"]]
        for name in names:
            other = rows[name][i]
            cells += [other["base"], other["pretrained"], other["final"]]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def headline(name: str, seconds: float, report: dict) -> list[str]:
    from docqa.figures import EvaluationFigures

    figures = EvaluationFigures.model_validate(report["evaluation"])
    gain = figures.knowledge_gain
    interval = f" [{gain.interval_95[0]:+.3f}, {gain.interval_95[1]:+.3f}]" if gain.interval_95 else ""
    memorisation = figures.sets.get("memorisation")
    remembered = memorisation.recall("final") if memorisation else None
    verdict = "passed" if figures.forgetting.passed else "FAILED"
    ppl = figures.perplexity
    forgetting = figures.forgetting
    stages = report["stages"]
    minutes = ", ".join(f"{s} {stages[s]['seconds'] / MINUTE:.1f}" for s in stages if stages[s]["seconds"])
    held = " → ".join(f"{v:.1f}" for v in ppl.heldout_text.values()) if ppl.heldout_text else "—"
    return [
        f"**{name}** ({seconds / MINUTE:.1f} min for the run):",
        f"- `knowledge_gain` {_f(gain.value, True)}{interval} ({gain.label}); knowledge set "
        f"{_f(gain.knowledge, True)}, control {_f(gain.control, True)}, after pretraining alone "
        f"{_f(gain.after_pretraining, True)}",
        f"- memorisation (final, strict recall) {_f(remembered)}; `rag_recovery` {_f(figures.rag_recovery)}",
        f"- perplexity, trained text {' → '.join(f'{v:.1f}' for v in ppl.trained_text.values())}; held-out "
        f"documents {held} (base → pretrained → final)",
        f"- forgetting: general-text perplexity {forgetting.base:.2f} → {forgetting.tuned:.2f}, ratio "
        f"{forgetting.ratio:.3f} (gate ≤ {forgetting.max_ratio}: {verdict}); reference: {forgetting.source}",
        f"- minutes per stage: {minutes}",
    ]


def gain_of(report: dict) -> float | None:
    from docqa.figures import EvaluationFigures

    return EvaluationFigures.model_validate(report["evaluation"]).knowledge_gain.value


def main(overrides: list[str]) -> None:
    from docqa.sample_corpus import write_sample_corpus

    root = Path(tempfile.mkdtemp(prefix="docqa-bench-knowledge-"))
    docs = root / "docs"
    write_sample_corpus(docs)
    workspace = root / "workspace"
    runs: dict[str, tuple[float, dict]] = {}
    runs["baseline (seed-shaped)"] = docqa_run(workspace, docs, RECIPE, BASELINE + overrides)
    runs["docqa default"] = docqa_run(workspace, docs, RECIPE, overrides)
    (base_s, base_report), (ours_s, ours_report) = runs.values()
    gains = [gain_of(report) for report in (base_report, ours_report)]
    questions = {k: v for k, v in base_report["counts"].items() if k.startswith("qa_")}
    same = "" if all(ours_report["counts"].get(k) == v for k, v in questions.items()) else " NOT the same"
    if None in gains:
        ratio = "the ratio is not defined: a run has no knowledge gain"
    elif gains[0] > 0:
        ratio = f"**{gains[1] / gains[0]:.2f}×** the baseline's"
    else:
        ratio = (
            f"the ratio is not defined, the baseline's gain not being positive; the default gains "
            f"{_f(gains[1] - gains[0], True)} more"
        )
    augment = ours_report["stages"]["augment"]["figures"]
    body = [
        "## Knowledge: the seed-shaped recipe vs docqa's default (`bench/knowledge.py`)",
        "",
        f"Two `docqa run --recipe {RECIPE}` on the sample corpus in one workspace, so both answer the same "
        f"questions ({', '.join(f'{k} {v}' for k, v in questions.items())}{same}). "
        "Baseline: raw chunks for pretraining (2 epochs, batch 4, lr 1e-3), then SFT, as docqa did before "
        f"knowledge augmentation (`{' '.join('--set ' + o for o in BASELINE)}`). Default: pretraining "
        f"also reads {augment.get('rewrites')} rewrites and {augment.get('qa_texts')} SFT pairs as text, "
        "and a quarter of its blocks replay general text toward the base's distribution; SFT also holds "
        "the base's distribution on general text (`pretrain.replay_loss=distill`, `sft.general_kl_weight`). "
        "Strict recall, the earlier recall in brackets; all figures measured here, none asserted in tests.",
        "",
        f"Knowledge gain of the default: {_f(gains[1], True)} against the baseline's {_f(gains[0], True)}: "
        f"{ratio}.",
        "",
        *protocol_table({"baseline": base_report, "default": ours_report}),
        "",
        *headline("baseline (seed-shaped)", base_s, base_report),
        "",
        *headline("docqa default", ours_s, ours_report),
    ]
    write_section("knowledge", "\n".join(body))
    device = None
    command = command_line("bench/knowledge.py")
    figures = {}
    for key, (seconds, report) in (
        ("baseline", runs["baseline (seed-shaped)"]),
        ("default", runs["docqa default"]),
    ):
        overrides_used = BASELINE if key == "baseline" else []
        pretrain = report["stages"]["pretrain"]
        figures[f"pipeline.cpu.{RECIPE}.{key}"] = {
            "stage": "pipeline", "metric": "run_seconds", "value": round(seconds, 1),
            "device_kind": "cpu",
            "model": "SmolLM2-135M-Instruct (embedded default), LoRA", "backend": "extractive",
            "conditions": {"corpus": "sample corpus", "recipe": key, "overrides": overrides_used},
            "note": f"`docqa run`, base already converted; knowledge_gain {_f(gain_of(report), True)}",
        }  # fmt: skip
        tokens = pretrain["figures"].get("tokens")
        if tokens and pretrain["seconds"]:
            figures[f"train.cpu.smollm2.pretrain.{key}"] = {
                "stage": "train", "metric": "tokens_per_s", "value": round(tokens / pretrain["seconds"], 1),
                "device_kind": "cpu", "model": "SmolLM2-135M-Instruct, LoRA all-linear, fp32",
                "conditions": {"tokens": tokens, "seconds": pretrain["seconds"], "recipe": key},
                "note": "pretraining stage's tokens over its seconds (model load and evaluations included)",
            }  # fmt: skip
    record_figures("knowledge", command, figures, device)
    print("\n".join(body))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="recipe override, both runs"
    )
    main(parser.parse_args().overrides)
