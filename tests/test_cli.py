"""The ``docqa`` command: clear errors and exit codes, the sample corpus, the recipe list."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest
import yaml
from conftest import tiny_recipe, write_topic_documents
from pdf_factory import write_report_pdf, write_truncated_pdf
from typer.testing import CliRunner

from docqa.cli import app

runner = CliRunner()


def output_of(result) -> str:
    return " ".join(result.output.split())  # independent of the terminal width rich wraps at


@pytest.fixture
def isolated_env(monkeypatch, tmp_path):
    # the command sets Prefect/HF variables for its own process; keep them out of the other tests
    for key in ("PREFECT_HOME", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        monkeypatch.setenv(key, str(tmp_path / "prefect") if key == "PREFECT_HOME" else "1")


def test_a_folder_without_documents_exits_2_before_anything_starts(tmp_path):
    (tmp_path / "notes.docx").write_bytes(b"not read")
    result = runner.invoke(app, ["run", "--docs", str(tmp_path), "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 2
    assert "no documents in" in output_of(result) and ".pdf" in output_of(result)
    assert not (tmp_path / "ws").exists()


def test_invalid_settings_exit_2_and_list_every_problem():
    result = runner.invoke(app, ["run", "--set", "chunk.overlap_tokens=9999", "--set", "pretrain.bogus=1"])
    assert result.exit_code == 2
    assert "overlap_tokens must be smaller than chunk_tokens" in output_of(result)
    assert "pretrain.bogus" in output_of(result)


def test_missing_docs_folder_is_refused(tmp_path):
    result = runner.invoke(app, ["run", "--docs", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "is neither a folder nor a URL" in output_of(result)


def tiny_run_args(tmp_path) -> list[str]:
    docs = write_topic_documents(tmp_path / "docs")
    recipe = tmp_path / "tiny.yaml"  # a recipe file, with the tiny test base (built once per session)
    recipe.write_text(
        yaml.safe_dump(tiny_recipe(split={"eval_documents": ["names.txt"]}).model_dump(mode="json"))
    )
    return ["run", "--docs", str(docs), "--workspace", str(tmp_path / "ws"), "--recipe", str(recipe)]


@pytest.mark.slow
def test_a_run_prints_the_table_the_metrics_and_the_ui_commands(prefect_harness, isolated_env, tmp_path):
    result = runner.invoke(app, tiny_run_args(tmp_path))
    assert result.exit_code == 0, result.output
    text = output_of(result)
    for stage in ("ingest", "chunk", "synthesize", "pretrain", "sft", "evaluate"):
        assert stage in text
    assert "does it know the documents?" in text and "knowledge_gain" in text and "rag_recovery" in text
    for question_set in ("knowledge", "memorisation", "control"):
        assert question_set in text
    assert "perplexity, trained documents: base" in text and "forgetting (general-text perplexity)" in text
    assert "prefect server start" in text and "mlflow ui --backend-store-uri sqlite:///" in text
    assert (tmp_path / "ws" / "reports" / "latest.json").is_file()


@pytest.mark.slow
def test_a_failing_stage_exits_1_naming_the_stage_and_why(prefect_harness, isolated_env, tmp_path):
    args = [*tiny_run_args(tmp_path), "--set", "split.eval_documents=['*']"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "stage chunk failed" in output_of(result) and "no training chunk" in output_of(result)
    assert (tmp_path / "ws" / "reports" / "latest.json").is_file()


def test_sample_corpus_command_writes_the_pdfs(tmp_path):
    result = runner.invoke(app, ["sample-corpus", str(tmp_path / "corpus")])
    assert result.exit_code == 0
    assert len(list((tmp_path / "corpus").glob("*.pdf"))) >= 4


def test_recipes_command_lists_the_shipped_recipes():
    result = runner.invoke(app, ["recipes"])
    assert result.exit_code == 0
    for name in ("tiny-cpu", "llama-2-7b-qlora", "llama-3-8b-qlora", "seed-reproduction"):
        assert name in output_of(result)


def docqa_subprocess(args: list[str], **env: str) -> subprocess.CompletedProcess:
    """``docqa`` as a user starts it: its own process, no Prefect server or home given."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return subprocess.run(
        [sys.executable, "-m", "docqa.cli", *args], env={**clean, **env}, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip


@pytest.mark.slow
def test_the_local_prefect_server_starts_on_a_fresh_workspace(tmp_path, tiny_base):
    """A new workspace's Prefect database is migrated while the local server starts, which on a slow
    machine took longer than Prefect's 20 s default (2 of 7 fresh starts); the start here must get as far
    as the ingest stage (a folder of one broken PDF stops it there). It ran three starts until the suite
    had to fit 15 minutes; the killed-docqa test below starts another fresh workspace."""
    docs = tmp_path / "docs"
    docs.mkdir()
    write_truncated_pdf(write_report_pdf(tmp_path / "report.pdf", pages=1), docs / "broken.pdf")
    workspace = tmp_path / "ws"
    done = docqa_subprocess(["run", "--docs", str(docs), "--workspace", str(workspace), "--set",
                             f"model.base={tiny_base.path}"])  # fmt: skip
    output = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1 and "stage ingest failed" in output and "truncated" in output, output
    assert "Timed out" not in output and (workspace / "prefect" / "prefect.db").is_file()


@pytest.mark.slow
def test_a_local_server_that_does_not_start_in_time_says_what_to_do(tmp_path, tiny_base):
    docs = write_topic_documents(tmp_path / "docs")
    arguments = ["run", "--docs", str(docs), "--workspace", str(tmp_path / "ws")]
    done = docqa_subprocess(
        [*arguments, "--set", f"model.base={tiny_base.path}"],
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="1",
    )
    output = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1 and "did not answer within 1 s" in output
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=600" in output and "PREFECT_API_URL" in output


@pytest.mark.slow
def test_a_killed_docqa_leaves_no_prefect_server_behind(tmp_path, tiny_base):
    import signal
    import time

    import psutil

    docs = write_topic_documents(tmp_path / "docs")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    cli = subprocess.Popen(
        [sys.executable, "-m", "docqa.cli", "run", "--docs", str(docs), "--workspace", str(tmp_path / "ws"),
         "--set", f"model.base={tiny_base.path}"],
        env=clean, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline, server = time.monotonic() + 300, None
    while server is None and time.monotonic() < deadline and cli.poll() is None:
        servers = [p for p in psutil.Process(cli.pid).children() if "create_app" in " ".join(p.cmdline())]
        server = servers[0] if servers else None
        time.sleep(0.5)
    assert server is not None, "docqa run started no local Prefect server"
    cli.send_signal(signal.SIGKILL)
    cli.wait()
    with contextlib.suppress(psutil.NoSuchProcess):
        server.wait(timeout=30)  # the server dies with its parent (PR_SET_PDEATHSIG)
    assert not server.is_running() or server.status() == psutil.STATUS_ZOMBIE
