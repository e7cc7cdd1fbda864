"""Using a packaged model: ``docqa ask`` answers as evaluation does, the merged model for serving equals
the stacked adapters, and ``docqa serve`` answers concurrent chat completions and stops on Ctrl-C.

The package is real (written by ``write_package`` around the tiny bootstrap base) and its two LoRA
adapters have random, non-zero B matrices, so that they change what the model says."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from docqa.cli import app
from docqa.modeling import load_adapted_model, load_tokenizer
from docqa.outputs import ADAPTER_ORDER
from docqa.package import ModelManifest, package_base, read_manifest, write_package
from docqa.prompting import encode_prompts
from docqa.serving import (
    answer_questions,
    default_model_reference,
    locate_package,
    merged_model_dir,
    prompt_chat_template,
)
from docqa.settings import EvaluateSettings
from docqa.stages.evaluate import generate_answers
from docqa.synthesis.serve import free_port, wait_until_healthy
from docqa.tracking import Tracker
from tests.conftest import tiny_recipe

pytestmark = pytest.mark.slow

QUESTIONS = ["What does the for statement do?", "How is an exception raised?", "What is a lambda?"]
MAX_NEW_TOKENS = 10
LORA_RANK = 4
SERVER_START_S = 180
CONCURRENT_REQUESTS = 4
KV_CACHE_BLOCKS = "64"  # by default the cache takes 60% of RAM on CPU: tens of seconds to allocate


def write_random_adapter(base_path: str, folder: Path, seed: int) -> Path:
    """A LoRA adapter on every linear layer with random, non-zero A and B (a fresh LoRA has B = 0).

    Random weights of the default initialiser's size: the tiny base alone answers with newlines only
    (empty answers once stripped), these adapters make it write (garbled) text."""
    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_path)
    config = LoraConfig(r=LORA_RANK, lora_alpha=2 * LORA_RANK, target_modules="all-linear",
                        init_lora_weights=False, task_type="CAUSAL_LM")  # fmt: skip
    get_peft_model(base, config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def package(tiny_base, tmp_path_factory) -> Path:
    """A package as the pipeline writes it for a bootstrap base: base, tokenizer and adapters inside."""
    root = tmp_path_factory.mktemp("serving")
    recipe = tiny_recipe(model={"compute_dtype": "float32"})  # a GPU too merges exactly in float32
    adapters = {
        name: write_random_adapter(tiny_base.path, root / "adapters" / name, seed)
        for seed, name in enumerate(ADAPTER_ORDER)
    }
    manifest = ModelManifest(
        recipe=recipe.name, base=tiny_base, base_packaged=True, model=recipe.model, corpus_fingerprint="c",
        heldout_digest="h", metrics={"rougeL": 0.0}, qa_counts={"train": 0, "eval": 0},
    )  # fmt: skip
    report = {"documents": []}
    return write_package(root / "packages", manifest, adapters, Path(tiny_base.path), recipe, report)


@pytest.fixture(scope="module")
def answers(package) -> list[str]:
    return answer_questions(package, QUESTIONS, MAX_NEW_TOKENS)


def stacked_model(package: Path, **model_settings):
    """The package's base with both adapters stacked, loaded the way evaluation loads it."""
    manifest = read_manifest(package)
    adapters = {name: package / "adapters" / name for name in manifest.adapters}
    settings = manifest.model.model_copy(update=model_settings)
    return load_adapted_model(package_base(package, manifest), settings, adapters)


def test_answers_are_evaluations_answers(package, answers):
    manifest = read_manifest(package)
    assert len(answers) == len(QUESTIONS) and all(isinstance(a, str) for a in answers)
    assert any(answers), "the adapted tiny model should say something"
    model = stacked_model(package)  # 4-bit base, as in evaluation
    tokenizer = load_tokenizer(str(package / "base"))
    settings = EvaluateSettings(max_new_tokens=MAX_NEW_TOKENS)
    assert generate_answers(model, tokenizer, QUESTIONS, settings, manifest.model) == answers
    with model.disable_adapter():
        assert generate_answers(model, tokenizer, QUESTIONS, settings, manifest.model) != answers


def test_merged_model_equals_the_stacked_adapters(package, tiny_base, monkeypatch):
    merged = merged_model_dir(package)
    with monkeypatch.context() as patched:  # built once: the second call loads no model
        patched.setattr("docqa.serving.load_packaged_model", lambda *a, **k: pytest.fail("merged again"))
        assert merged_model_dir(package) == merged
    merged_model = AutoModelForCausalLM.from_pretrained(merged)
    assert not any("lora" in name for name, _ in merged_model.named_parameters())  # a plain checkpoint
    tokenizer = AutoTokenizer.from_pretrained(merged)
    batch = encode_prompts(tokenizer, QUESTIONS, read_manifest(package).model)
    models = {
        "merged": merged_model,
        "stacked": stacked_model(package, load_in_4bit=False),
        "base": AutoModelForCausalLM.from_pretrained(tiny_base.path),
    }
    with torch.no_grad():
        logits = {name: model(**batch.to(model.device)).logits.cpu() for name, model in models.items()}
    batch = batch.to("cpu")
    mask = batch["attention_mask"].bool()
    merged_logits, stacked_logits = logits["merged"][mask], logits["stacked"][mask]
    torch.testing.assert_close(merged_logits, stacked_logits, rtol=1e-4, atol=1e-4)
    assert (logits["base"][mask] - merged_logits).abs().max() > 1.0  # the adapters matter


def test_prompt_template_becomes_a_chat_template_with_the_same_tokens(tiny_base):
    """A tokenizer without a chat template (Llama-2's): the server must prompt as SFT did, bos included."""
    settings = tiny_recipe().model
    tokenizer = AutoTokenizer.from_pretrained(tiny_base.path, add_bos_token=True)
    tokenizer.chat_template = None
    template = prompt_chat_template(tokenizer, settings)
    for question in QUESTIONS:
        served = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], chat_template=template, add_generation_prompt=True,
            tokenize=True, return_dict=True,
        )["input_ids"]  # fmt: skip
        trained = encode_prompts(tokenizer, [question], settings)["input_ids"][0].tolist()
        assert list(served) == trained
        assert trained[0] == tokenizer.bos_token_id
    conversation = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    with pytest.raises(Exception, match="exactly one user message"):
        tokenizer.apply_chat_template(conversation, chat_template=template, tokenize=False)


def test_default_model_is_the_latest_runs_package(tmp_path, package):
    with pytest.raises(FileNotFoundError, match="no run report"):
        default_model_reference(tmp_path)
    (tmp_path / "reports").mkdir()
    report = {"flow_run_name": "r", "status": "failed", "outputs": {}, "mlflow_run_id": "0" * 32}
    (tmp_path / "reports" / "latest.json").write_text(json.dumps(report))
    with pytest.raises(FileNotFoundError, match="wrote no model package"):
        default_model_reference(tmp_path)
    report["outputs"]["model_package"] = str(package)
    (tmp_path / "reports" / "latest.json").write_text(json.dumps(report))
    assert default_model_reference(tmp_path) == str(package)


def test_a_run_id_is_fetched_from_the_workspaces_mlflow_store(tmp_path, package):
    tracker = Tracker(tmp_path, "serving-test")
    run_id = tracker.start_parent("r", {})
    tracker.log_artifacts(run_id, package, "model")
    folder = locate_package(run_id, tmp_path)
    assert folder != package and read_manifest(folder) == read_manifest(package)
    with pytest.raises(LookupError, match="is not in the MLflow store"):
        locate_package("models:/docqa-missing@champion", tmp_path)
    with pytest.raises(FileNotFoundError, match="holds no MLflow store"):
        locate_package(run_id, tmp_path / "elsewhere")


def test_ask_prints_the_answers(package, answers):
    args = ["ask", *QUESTIONS, "--model", str(package), "--max-new-tokens", str(MAX_NEW_TOKENS)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert str(package) in result.output
    for question, answer in zip(QUESTIONS, answers, strict=True):
        assert f"Q: {question}\nA: {answer}\n" in result.output


def test_ask_refuses_a_folder_that_is_no_package(tmp_path):
    result = CliRunner().invoke(app, ["ask", "q", "--model", str(tmp_path)])
    assert result.exit_code == 2 and "not a docqa model package" in result.output


def chat(base_url: str, model: str, question: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": 8}
    return httpx.post(f"{base_url}/chat/completions", json=body, timeout=120)


def test_serve_answers_concurrent_requests_and_stops_on_ctrl_c(package, tmp_path):
    port = free_port("127.0.0.1")
    log_path = tmp_path / "serve.log"
    options = ["--model", str(package), "--port", str(port), "--kv-cache-blocks", KV_CACHE_BLOCKS]
    command = [sys.executable, "-m", "docqa.cli", "serve", *options]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            # as from a terminal: a shell's background job (pytest started with &) ignores SIGINT, and
            # its children inherit that
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    try:
        wait_until_healthy(process, f"http://127.0.0.1:{port}/health", log_path, SERVER_START_S)
        base_url, model = f"http://127.0.0.1:{port}/v1", str(merged_model_dir(package))
        questions = [f"{q} ({i})" for i, q in enumerate(QUESTIONS + QUESTIONS)][:CONCURRENT_REQUESTS]
        with ThreadPoolExecutor(CONCURRENT_REQUESTS) as pool:
            replies = list(pool.map(lambda q: chat(base_url, model, q), questions))
        for reply in replies:
            assert reply.status_code == 200, reply.text
            content = reply.json()["choices"][0]["message"]["content"]
            assert isinstance(content, str) and content
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log_path.read_text()
    assert f"base URL:   {base_url}" in output and f"model name: {model}" in output
    assert "server stopped" in output
    with pytest.raises(httpx.ConnectError):  # the transformers server went with it
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
