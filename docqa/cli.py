"""The ``docqa`` command: run the pipeline locally, write the sample corpus, list recipes."""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from docqa.settings import RECIPES_DIR, STAGES, SettingsError, load_recipe, resolve_shipped
from docqa.sources import canonical_location

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
console = Console()
PREFECT_UI_URL = "http://127.0.0.1:4200"
LOCAL_SERVER_STARTUP_S = 180
Stage = Enum("Stage", {stage: stage for stage in STAGES}, type=str)  # --until's choices


LIBRARY_QUIET = {
    "TOKENIZERS_PARALLELISM": "false",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # dataset maps and parquet writes
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" and shard bars too
    "TRANSFORMERS_VERBOSITY": "error",  # advisories about generation lengths, deprecations
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # "Creating initial MLflow database tables…"
}


@app.callback()
def quiet_libraries() -> None:
    """Before any command: no library progress bars, advisories or deprecation notices on the console
    (docqa reports its own progress; errors and docqa's own warnings still show). Set before the
    libraries are imported, which read them then; a variable the user set is kept."""
    for key, value in LIBRARY_QUIET.items():
        os.environ.setdefault(key, value)
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    libraries = r"(mlflow|transformers|torch|peft|trl|datasets)\..*"
    warnings.filterwarnings("ignore", category=UserWarning, module=libraries)


@contextmanager
def prefect_api(workspace: Path) -> Iterator[None]:
    """The Prefect API a run talks to: ``PREFECT_API_URL`` when set, else a local server for the run's
    duration, started with its database in the workspace and stopped with this process, even a killed one
    (``docqa.local_server``)."""
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    from docqa.local_server import local_prefect_server

    home = Path(os.environ["PREFECT_HOME"])
    console.print(f"starting the local Prefect server (database in {home}) …", soft_wrap=True, markup=False)
    with local_prefect_server(home / "server.log"):
        yield


def configure_environment(workspace: Path) -> dict[str, str]:
    """Local defaults, set before Prefect is imported: a Prefect home inside the workspace (its
    ephemeral server and database), unless the user points at a server or a home of their own."""
    chosen = {}
    if not os.environ.get("PREFECT_API_URL") and not os.environ.get("PREFECT_HOME"):
        chosen["PREFECT_HOME"] = str(workspace / "prefect")
        (workspace / "prefect").mkdir(parents=True, exist_ok=True)
    chosen["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    # a new workspace's Prefect database is created and migrated while the local server starts; on a
    # slow 2-core machine that takes longer than Prefect's 20 s default (docs/pitfalls.md)
    chosen["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = str(LOCAL_SERVER_STARTUP_S)
    for key, value in chosen.items():
        os.environ.setdefault(key, value)
    quiet_libraries()
    return chosen


@app.command()
def run(
    docs: Annotated[
        str | None,
        typer.Option(
            help="folder of PDFs (.txt/.md too) or any fsspec URL (s3://bucket/prefix); "
            "default: the sample corpus"
        ),
    ] = None,
    arxiv: Annotated[
        list[str] | None, typer.Option(help="an arXiv id to add (repeat the option for more)")
    ] = None,
    workspace: Annotated[Path, typer.Option(help="where outputs, reports and the MLflow store go")] = Path(
        "workspace"
    ),
    recipe: Annotated[
        str | None, typer.Option(help="YAML file or shipped recipe name (docqa recipes)")
    ] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="override a setting, e.g. --set pretrain.lora.r=64")
    ] = None,
    until: Annotated[
        Stage | None,
        typer.Option(help="stop after this stage (e.g. synthesize: read the Q&A before training)"),
    ] = None,
) -> None:
    """Run the whole pipeline locally and print what each stage did."""
    try:
        settings = load_recipe(recipe, [*(overrides or []), *arxiv_overrides(arxiv)])
    except SettingsError as error:
        console.print(f"[red]{error}[/red]", soft_wrap=True)
        raise typer.Exit(2) from error
    docs = check_docs(docs, settings.ingest)
    workspace = workspace.resolve()
    configure_environment(workspace)
    console.rule(f"docqa · recipe {settings.name} · workspace {workspace}")
    try:
        with prefect_api(workspace):
            from flows.pipeline import docqa_pipeline  # after the environment: Prefect reads it on import

            docqa_pipeline(
                docs=docs, workspace=str(workspace), recipe=settings, until=until.value if until else None
            )
    except Exception as error:
        report = _latest_report(workspace)
        if report:
            print_summary(report)
        console.print(f"\n[bold red]docqa run failed:[/bold red] {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(1) from error
    report = _latest_report(workspace)
    print_summary(report)
    print_ui_commands(report, workspace)


def arxiv_overrides(ids: list[str] | None) -> list[str]:
    return [f"source.arxiv_ids={json.dumps(ids)}"] if ids else []


def check_docs(docs: str | None, ingest) -> str | None:
    """A local folder with documents (made absolute) or a URL; anything else stops here, exit code 2."""
    if docs is None or "://" in docs:
        return docs
    if not Path(docs).is_dir():
        console.print(
            f"[red]--docs {docs} is neither a folder nor a URL (s3://…, https://…)[/red]", soft_wrap=True
        )
        raise typer.Exit(2)
    from docqa.stages.ingest import list_documents

    try:
        list_documents(Path(docs), ingest)
    except FileNotFoundError as error:
        console.print(f"[red]{escape(str(error))}[/red]", soft_wrap=True)
        raise typer.Exit(2) from error
    return canonical_location(docs)


SWEEPS_DIR = Path(__file__).parent / "sweeps"


def read_sweep(file: Path) -> dict[str, list[str]]:
    """A sweep file (YAML, or the name of one in docqa/sweeps): ``variants: {name: [overrides]}``."""
    path = resolve_shipped(file, SWEEPS_DIR, "sweep")
    loaded = yaml.safe_load(path.read_text()) or {}
    variants = loaded.get("variants") if isinstance(loaded, dict) else None
    if not isinstance(variants, dict) or not variants:
        raise SettingsError(f"{path}: expected `variants:` mapping names to lists of overrides")
    bad = [name for name, overrides in variants.items() if not isinstance(overrides, list | type(None))]
    if bad:
        raise SettingsError(f"{path}: variants {bad} must be lists of key=value overrides")
    return {str(name): [str(o) for o in overrides or []] for name, overrides in variants.items()}


@app.command()
def sweep(
    file: Annotated[
        Path,
        typer.Argument(
            help="sweep YAML file, or a shipped sweep's name "
            "(seed-comparison, forgetting-mix, knowledge-levers)"
        ),
    ],
    docs: Annotated[Path | None, typer.Option(help="folder of documents; default: the sample corpus")] = None,
    workspace: Annotated[Path, typer.Option(help="shared by every variant (and its caches)")] = Path(
        "workspace"
    ),
    recipe: Annotated[str | None, typer.Option(help="the recipe every variant starts from")] = None,
) -> None:
    """Run the pipeline once per variant as child flow runs, then compare them (MLflow run "sweep")."""
    try:
        variants = read_sweep(file)
        for overrides in variants.values():
            load_recipe(recipe, overrides)
    except SettingsError as error:
        console.print(f"[red]{error}[/red]", soft_wrap=True)
        raise typer.Exit(2) from error
    workspace = workspace.resolve()
    configure_environment(workspace)
    with prefect_api(workspace):
        from flows.sweep import docqa_sweep

        rows = docqa_sweep(
            variants,
            docs=canonical_location(str(docs)) if docs else None,
            workspace=str(workspace),
            recipe=recipe,
        )
    table = Table(title=f"docqa sweep {file} · held-out figures")  # one column per variant: fits a terminal
    table.add_column("figure")
    for row in rows:
        table.add_column(row["variant"])
    for key in rows[0]:
        if key not in ("variant", "mlflow_run_id"):
            table.add_row(key, *(str(row[key]) for row in rows))
    console.print(table)


@app.command()
def deploy(
    docs: Annotated[str, typer.Option(help="the documents location to train on and watch (folder or URL)")],
    workspace: Annotated[
        str, typer.Option(help="the workspace every worker reaches: a shared path or an fsspec URL (s3://…)")
    ] = "workspace",
    recipe: Annotated[
        str | None, typer.Option(help="recipe file or shipped name: the pipeline's defaults")
    ] = None,
    pool_type: Annotated[str, typer.Option(help="process | docker | kubernetes")] = "process",
    gpus: Annotated[int, typer.Option(help="GPUs behind the GPU pool (one training job each)")] = 1,
    watch_cron: Annotated[str, typer.Option(help="how often the watcher looks")] = "*/5 * * * *",
    debounce_s: Annotated[int, typer.Option(help="a burst of changes within this makes one run")] = 120,
    cpu_image: Annotated[str, typer.Option(help="docker/kubernetes: the CPU image")] = "docqa:cpu",
    gpu_image: Annotated[str, typer.Option(help="docker/kubernetes: the GPU image")] = "docqa:gpu",
) -> None:
    """Create or update the work pools (docqa-cpu, docqa-gpu) and the deployments on PREFECT_API_URL."""
    if not os.environ.get("PREFECT_API_URL"):
        console.print(
            "[red]PREFECT_API_URL is not set: point it at your Prefect server, e.g. "
            "export PREFECT_API_URL=http://127.0.0.1:4200/api[/red]",
            soft_wrap=True,
        )
        raise typer.Exit(2)
    from pydantic import ValidationError

    from deployments.deploy import DeploySettings, apply

    docs = canonical_location(docs)
    if "://" not in workspace:
        workspace = str(Path(workspace).resolve())
    try:
        settings = DeploySettings(
            pool_type=pool_type, docs=docs, workspace=workspace, recipe=recipe, gpus=gpus,
            watch_cron=watch_cron, debounce_s=debounce_s, cpu_image=cpu_image, gpu_image=gpu_image,
        )  # fmt: skip
        applied = apply(settings)
    except (ValidationError, SettingsError) as error:
        console.print(f"[red]{error}[/red]", soft_wrap=True)
        raise typer.Exit(2) from error
    for name, action in applied["pools"].items():
        console.print(f"work pool [bold]{name}[/bold] ({pool_type}): {action}")
    for name, pool in applied["deployments"].items():
        console.print(f"deployment [bold]{name}[/bold] → {pool}")
    console.print(
        "start the workers: prefect worker start --pool docqa-cpu   and, on the GPU machines, "
        "prefect worker start --pool docqa-gpu",
        soft_wrap=True,
    )


MODEL_HELP = (
    "models:/docqa-<recipe>@champion, models:/<name>/<version>, an MLflow run id, runs:/<id>/model or a "
    "package folder; default: the package of the workspace's latest run"
)


def _package_or_exit(model: str | None, workspace: Path) -> Path:
    """The local package folder ``--model`` names; a reference that names none stops with exit code 2."""
    from docqa.serving import locate_package

    try:
        return locate_package(model, workspace.resolve())
    except (FileNotFoundError, LookupError, ValueError) as error:
        console.print(f"[red]{error}[/red]", soft_wrap=True)
        raise typer.Exit(2) from error


@app.command()
def ask(
    questions: Annotated[list[str], typer.Argument(help="one or more questions, answered in one batch")],
    model: Annotated[str | None, typer.Option(help=MODEL_HELP)] = None,
    workspace: Annotated[Path, typer.Option(help="where the MLflow store and run reports are")] = Path(
        "workspace"
    ),
    max_new_tokens: Annotated[
        int | None,
        typer.Option(min=1, help="answer length cap; default: the recipe's evaluate.max_new_tokens"),
    ] = None,
) -> None:
    """Answer questions with the tuned model: greedy, with evaluation's prompt and generation code."""
    from docqa.package import read_manifest
    from docqa.serving import answer_questions, packaged_max_new_tokens

    folder = _package_or_exit(model, workspace)
    manifest = read_manifest(folder)
    answers = answer_questions(folder, questions, max_new_tokens or packaged_max_new_tokens(folder))
    console.print(
        f"model: {model or 'the latest run'} → {folder} (recipe {manifest.recipe})",
        soft_wrap=True,
        markup=False,
    )
    for question, answer in zip(questions, answers, strict=True):
        console.print(f"\nQ: {question}", soft_wrap=True, markup=False, highlight=False)
        typer.echo(f"A: {answer}")


SERVE_HELP = (
    "Serve the tuned model over an OpenAI-compatible API (/v1/chat/completions) until Ctrl-C.\n\n"
    "Both adapters are merged into a full-precision copy of the base (built once per package, kept under "
    "the docqa cache), which `transformers serve --continuous-batching` then serves.\n\n"
    "On a GPU, vLLM serves faster. `vllm serve BASE --enable-lora --lora-modules pretrain=DIR sft=DIR` "
    "registers the two adapters, but vLLM applies one LoRA per request (the one the request names as its "
    "model), never both stacked: for this model give vLLM the merged folder this command prints, "
    "`vllm serve MERGED_FOLDER`. docqa does not run vLLM; that route is untested here."
)


@app.command(help=SERVE_HELP)
def serve(
    model: Annotated[str | None, typer.Option(help=MODEL_HELP)] = None,
    workspace: Annotated[Path, typer.Option(help="where the MLflow store and run reports are")] = Path(
        "workspace"
    ),
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    kv_cache_blocks: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="KV-cache blocks (256 tokens each) for continuous batching; default: 90% of free GPU "
            "memory, or 60% of RAM on CPU (slow to allocate there: 64 serve a few short chats)",
        ),
    ] = None,
) -> None:
    """Serve the merged model until Ctrl-C (see SERVE_HELP and :mod:`docqa.serving`, vLLM included)."""
    from docqa.package import read_manifest
    from docqa.serving import serve_until_stopped

    folder = _package_or_exit(model, workspace)
    manifest = read_manifest(folder)

    def announce(served) -> None:
        console.print(f"serving {folder} (recipe {manifest.recipe})", soft_wrap=True, markup=False)
        console.print(f"base URL:   {served.base_url}", soft_wrap=True, markup=False)
        console.print(f"model name: {served.model}", soft_wrap=True, markup=False)
        console.print(
            f"server log: {served.log_path}   (Ctrl-C stops the server)", soft_wrap=True, markup=False
        )

    try:
        serve_until_stopped(folder, host, port, kv_cache_blocks, announce)
    except KeyboardInterrupt:
        console.print("server stopped")
    except (RuntimeError, TimeoutError) as error:
        console.print(f"[bold red]docqa serve failed:[/bold red] {error}", soft_wrap=True)
        raise typer.Exit(1) from error


@app.command()
def estimate(
    docs: Annotated[Path | None, typer.Option(help="folder of documents; default: the sample corpus")] = None,
    recipe: Annotated[str | None, typer.Option(help="YAML file or shipped recipe name")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="override a setting")] = None,
    device: Annotated[
        str | None, typer.Option(help="cpu | gpu; default: gpu when model.base is set, else cpu")
    ] = None,
    workspace: Annotated[Path, typer.Option(help="where the sample corpus is written")] = Path("workspace"),
) -> None:
    """Before anything runs: pages, chunks, tokens, synthesis requests, and time per stage from the
    throughputs measured by the benchmarks (docqa/data/throughputs.json); unknown where none was measured."""
    try:
        settings = load_recipe(recipe, overrides)
    except SettingsError as error:
        console.print(f"[red]{error}[/red]", soft_wrap=True)
        raise typer.Exit(2) from error
    if docs is not None and not docs.is_dir():
        console.print(f"[red]--docs {docs} is not a folder[/red]", soft_wrap=True)
        raise typer.Exit(2)
    if device not in (None, "cpu", "gpu"):
        console.print(f"[red]--device {device}: expected cpu or gpu[/red]", soft_wrap=True)
        raise typer.Exit(2)
    from docqa.estimate import print_estimate

    print_estimate(docs, settings, device=device, workspace=workspace, console=console)


@app.command("sample-corpus")
def sample_corpus(folder: Path) -> None:
    """Write the bundled sample corpus (PDFs of the Python Language Reference) into FOLDER."""
    from docqa.sample_corpus import write_sample_corpus

    paths = write_sample_corpus(folder)
    console.print(f"wrote {len(paths)} PDFs to {folder}")
    for path in paths:
        console.print(f"  {path.name}")


@app.command()
def recipes() -> None:
    """List the shipped recipes."""
    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        settings = load_recipe(path)
        console.print(f"[bold]{path.stem}[/bold]: {settings.description}")


def _latest_report(workspace: Path) -> dict[str, Any] | None:
    path = workspace / "reports" / "latest.json"
    return json.loads(path.read_text()) if path.is_file() else None


def print_summary(report: dict[str, Any]) -> None:
    from docqa.figures import EvaluationFigures

    table = Table(title=f"docqa run {report['flow_run_name']} · {report['status']}")
    for column in ("stage", "status", "cached", "seconds", "key figures"):
        table.add_column(column)
    for stage, info in report["stages"].items():
        colour = {"completed": "green", "failed": "red"}.get(info["status"], "dim")
        figures = ", ".join(f"{k}={v}" for k, v in info["figures"].items()) or (info.get("error") or "")
        cached = "yes" if info["cached"] else "no"
        if info.get("resumed_from_step") is not None:
            cached += f" (resumed at step {info['resumed_from_step']})"
        table.add_row(
            stage, f"[{colour}]{info['status']}[/{colour}]", cached, f"{info['seconds']:.1f}", figures
        )
    console.print(table)
    if report.get("stopped_after"):
        console.print(
            f"stopped after {report['stopped_after']}, as asked (--until); its outputs: "
            + (", ".join(f"{k} {v}" for k, v in report.get("outputs", {}).items()) or "see the stage folders")
            + ". Run again without --until to go on: the stages up to here come from the cache.",
            soft_wrap=True,
            markup=False,
        )
    if report.get("evaluation"):
        print_evaluation(EvaluationFigures.model_validate(report["evaluation"]))
    console.print("counts: " + ", ".join(f"{k}={v}" for k, v in report.get("counts", {}).items()))
    failed = [d for d in report.get("documents", []) if d["status"] == "failed"]
    for document in failed:
        console.print(f"[yellow]document failed[/yellow] {document['path']}: {document['reason']}")
    for document in report.get("documents", []):
        if document.get("hidden_text"):
            action = "kept (ingest.keep_hidden_text)" if document.get("hidden_text_kept") else "dropped"
            reasons = ", ".join(f"{reason} {n}" for reason, n in document["hidden_text"].items())
            console.print(
                f"[yellow]hidden text {action}[/yellow] {escape(document['path'])}: "
                f"{sum(document['hidden_text'].values())} characters a reader cannot see ({reasons})",
                soft_wrap=True,
            )
    for chunk in report.get("instruction_like_chunks", []):
        action = "dropped" if chunk["dropped"] else "kept (chunk.drop_instruction_like drops it)"
        where = escape(f"{chunk['doc_title']} p.{chunk['page_start']} ({', '.join(chunk['markers'])})")
        console.print(
            f"[yellow]chunk reads like instructions to a model, {action}[/yellow] {where}: "
            f"{escape(chunk['excerpt'][:120])}",
            soft_wrap=True,
        )


def print_evaluation(figures) -> None:
    """Does it know the documents: recall per question set and model, then the headline figures."""
    from docqa.figures import headline_lines, recall_rows

    table = Table(title="does it know the documents? strict recall (earlier recall in brackets)")
    rows = recall_rows(figures)
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*row.values())
    console.print(table)
    for line in headline_lines(figures):
        console.print(line, soft_wrap=True, markup=False, highlight=False)
    for name, why in figures.omitted.items():
        console.print(f"{name} set omitted: {why}", soft_wrap=True, markup=False, highlight=False)


def print_ui_commands(report: dict[str, Any], workspace: Path) -> None:
    from docqa.tracking import tracking_uri, ui_command

    bin_dir = Path(sys.executable).parent  # the prefect and mlflow commands installed beside docqa
    console.print(f"\nreport: {workspace / 'reports' / (report['flow_run_name'] + '.json')}", soft_wrap=True)
    api = os.environ.get("PREFECT_API_URL")
    if api:
        console.print(
            f"Prefect UI:  {api.removesuffix('/api')}  (flow run {report['flow_run_name']})", soft_wrap=True
        )
    else:
        console.print(
            f"Prefect UI:  PREFECT_HOME={os.environ['PREFECT_HOME']} {bin_dir / 'prefect'} server start"
            f"   → {PREFECT_UI_URL}  (flow run {report['flow_run_name']})",
            soft_wrap=True,
        )
    command = ui_command(tracking_uri(workspace))
    mlflow_command = f"{bin_dir / 'mlflow'} {command.removeprefix('mlflow ')}   → " if command else ""
    console.print(f"MLflow UI:   {mlflow_command}{report['links']['mlflow_run']}", soft_wrap=True)


if __name__ == "__main__":
    app()
