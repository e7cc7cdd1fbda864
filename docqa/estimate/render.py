"""``docqa estimate``'s output: the summary lines, the per-stage table and the figures it used."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from docqa.estimate.figures import DEFAULT_THROUGHPUTS, UNITS, Device
from docqa.estimate.rates import fmt_count, fmt_rate
from docqa.estimate.work import EVAL_ANSWER_PASSES, SECONDS_PER_HOUR, Estimate, estimate
from docqa.settings import Recipe


def format_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * SECONDS_PER_HOUR:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / SECONDS_PER_HOUR:.1f} h"


def render_estimate(result: Estimate) -> Table:
    """The per-stage table: work, device, the throughput used and where it came from, time, GPU hours."""
    table = Table(title=f"docqa estimate · recipe {result.recipe} · {result.docs}", show_lines=True)
    table.add_column("stage", no_wrap=True)
    table.add_column("work", ratio=2, overflow="fold")
    table.add_column("device", no_wrap=True)
    table.add_column("throughput used", ratio=3, overflow="fold")
    table.add_column("time", no_wrap=True, justify="right")
    table.add_column("GPU h", no_wrap=True, justify="right")
    for row in result.rows:
        work = f"{row.quantity:,.0f} {row.unit}\n[dim]{row.detail}[/dim]"
        if row.seconds is None:
            table.add_row(
                row.stage, work, row.device, f"[yellow]{row.unknown}[/yellow]", "[yellow]unknown[/yellow]", ""
            )
            continue
        used = f"{fmt_rate(row.throughput)} {row.throughput_unit}\n[dim]{row.source}[/dim]"
        hours = "" if row.gpu_hours is None else f"{row.gpu_hours:.3g}"
        table.add_row(row.stage, work, row.device, used, format_seconds(row.seconds), hours)
    total = f"unknown (≥ {format_seconds(result.known_seconds)} known)"
    if result.total_seconds is not None:
        total = format_seconds(result.total_seconds)
    gpu = "unknown" if result.gpu_hours is None else f"{result.gpu_hours:.3g}"
    if not any(row.device == "gpu" for row in result.rows):
        gpu = ""
    table.add_row("[bold]total[/bold]", "", "", "", f"[bold]{total}[/bold]", gpu)
    return table


def summary_lines(result: Estimate) -> list[str]:
    work = result.work
    readable = sum(d.split is not None for d in result.documents)
    parameters = "unknown" if result.parameters is None else fmt_count(result.parameters)
    judge = f", {work.judge_requests:,} judge requests" if work.judge_requests else ""
    return [
        f"documents: {readable} readable of {len(result.documents)}; pages: {work.pages:,}; tokens: "
        f"{work.tokens:,}{'' if result.tokenizer_used else ' (APPROXIMATION)'}",
        f"chunks: {work.chunks:,} (train {work.train_chunks:,}, held-out {work.eval_chunks:,}, by the "
        "document split)",
        f"synthesis: {work.synthesis_requests:,} requests, {work.pairs_requested:,} pairs asked{judge}; "
        f"acceptance {work.acceptance_rate:.3g} ({work.acceptance_source})",
        f"expected Q&A: {work.qa_train:,} SFT, {work.qa_knowledge:,} knowledge questions, {work.qa_eval:,} "
        "control questions",
        f"pretraining: {work.pretrain_tokens:,} tokens in {work.pretrain_steps:,} steps; SFT: "
        f"{work.sft_examples:,} examples in {work.sft_steps:,} steps; evaluation: {work.eval_questions:,} "
        f"questions × {EVAL_ANSWER_PASSES} models + {work.open_book_questions:,} open-book",
        f"model: {result.model}, {parameters} parameters ({result.parameters_source})",
        f"device: {result.device} ({result.device_reason})",
    ]


def print_estimate(
    docs: Path | None,
    recipe: Recipe,
    device: Device | None = None,
    throughputs: Path = DEFAULT_THROUGHPUTS,
    workspace: Path = Path("workspace"),
    console: Console | None = None,
) -> Estimate:
    """What ``docqa estimate`` prints; ``docs`` None: the sample corpus, where ``docqa run`` puts it."""
    if docs is None:
        from docqa.sample_corpus import ensure_sample_corpus

        docs = ensure_sample_corpus(workspace.resolve() / "sample-corpus")
    result = estimate(docs, recipe, throughputs, device)
    console = console or Console()
    for line in summary_lines(result):
        console.print(line, soft_wrap=True, highlight=False)
    console.print(render_estimate(result))
    for key, figure in result.figures_used.items():
        console.print(
            f"[dim]{key}: {figure.value:,.4g} {UNITS[figure.metric]}, {figure.model}, {figure.device}, "
            f"{figure.date}; `{figure.command}` ({figure.source})[/dim]",
            soft_wrap=True,
        )
    for note in result.notes:
        console.print(f"- {note}", soft_wrap=True, highlight=False)
    return result
