"""Using a trained model package: answer questions with it, or serve it over an OpenAI-compatible API.

``docqa ask`` loads the package as evaluation did (4-bit base, both LoRA adapters stacked) and answers
greedily through the same prompt code, so its answers are those the held-out figures were measured on.

``docqa serve`` merges both adapters into a full-precision copy of the base once per package (kept
under the docqa cache) and runs ``transformers serve`` on it with continuous batching. Unless told how many
KV-cache blocks to hold (``kv_cache_blocks``, of 256 tokens each), continuous batching sizes its cache
to 90% of a GPU's free memory, or to 60% of the machine's RAM on CPU, which there takes tens of seconds
to allocate on the first request (found by trying it, transformers 5.23). On a GPU,
vLLM is the faster server, but it applies at most one LoRA adapter to a request (``--lora-modules
name=path`` registers adapters that requests pick by ``model``): serving the two stacked adapters
there also means serving the merged folder, ``vllm serve <merged folder>``. docqa does not run vLLM
itself; that command is untested here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from docqa.hashing import json_digest, tree_digest
from docqa.package import load_packaged_model, read_manifest, resolve_model
from docqa.prompting import encode_prompts, uses_chat_template
from docqa.settings import EvaluateSettings, ModelSettings
from docqa.synthesis.serve import ServedModel, log_tail, transformers_serve
from docqa.workspace import cache_root, new_tmp_dir, publish_dir, read_json

# Loading a 7-13B checkpoint in full precision takes minutes; a tiny one seconds.
SERVE_STARTUP_TIMEOUT_S = 900.0
MERGED_DIR = "merged"
_QUESTION_MARK = "\x00docqa-question\x00"  # stands in for {question} while the template is split
PROBE_QUESTION = "What does the probe ask?"


def default_model_reference(workspace: Path) -> str:
    """The package folder of the workspace's latest run (``reports/latest.json``)."""
    report_path = workspace / "reports" / "latest.json"
    if not report_path.is_file():
        raise FileNotFoundError(
            f"no run report at {report_path}: pass --workspace of a finished `docqa run`, or --model "
            "models:/docqa-<recipe>@champion, a run id or a package folder"
        )
    report = read_json(report_path)
    package = (report.get("outputs") or {}).get("model_package")
    if package is None:
        raise FileNotFoundError(
            f"the latest run in {workspace} ({report.get('flow_run_name')}, {report.get('status')}) wrote no "
            "model package: run the pipeline to the end, or pass --model"
        )
    if not Path(package).is_dir():
        raise FileNotFoundError(
            f"the latest run's model package {package} is gone; pass --model runs:/"
            f"{report.get('mlflow_run_id')}/model (its MLflow copy) or another reference"
        )
    return package


def locate_package(reference: str | None, workspace: Path) -> Path:
    """A local package folder for ``reference`` (default: the workspace's latest run), fetched from
    the workspace's MLflow tracking store when it names a run or a registered version."""
    reference = reference or default_model_reference(workspace)
    if Path(reference).is_dir():
        return resolve_model(reference)
    from mlflow.exceptions import MlflowException

    from docqa.tracking import tracking_uri

    uri = tracking_uri(workspace)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise FileNotFoundError(
            f"{reference} names an MLflow run or model, but {workspace} holds no MLflow store (mlflow.db): "
            "pass the --workspace the pipeline ran in, or set MLFLOW_TRACKING_URI to its tracking server"
        )
    try:
        return resolve_model(reference, uri)
    except MlflowException as error:
        raise LookupError(
            f"{reference} is not in the MLflow store {uri} ({error.message}); list the registered models "
            "and runs in the MLflow UI, or pass --workspace / MLFLOW_TRACKING_URI of the right store"
        ) from error


def packaged_max_new_tokens(folder: Path) -> int:
    """The answer length the package's evaluation generated with (its recipe's evaluate section)."""
    recipe = yaml.safe_load((folder / "recipe.yaml").read_text(encoding="utf-8"))
    return EvaluateSettings.model_validate(recipe.get("evaluate") or {}).max_new_tokens


def answer_questions(folder: Path, questions: list[str], max_new_tokens: int) -> list[str]:
    """One greedy answer per question from the packaged model, batched, exactly as evaluation answers."""
    from docqa.stages.evaluate import generate_answers

    model, tokenizer, manifest = load_packaged_model(folder)
    settings = EvaluateSettings(max_new_tokens=max_new_tokens)
    return generate_answers(model, tokenizer, questions, settings, manifest.model)


def merged_model_dir(folder: Path) -> Path:
    """A full-precision copy of the base with both adapters merged in, with the tokenizer: what an
    OpenAI-compatible server loads. Built once per package content and compute dtype under the docqa
    cache, then reused."""
    from docqa.modeling import compute_dtype

    manifest = read_manifest(folder)
    key = json_digest({"package": tree_digest(folder), "dtype": str(compute_dtype(manifest.model))})
    target = cache_root() / MERGED_DIR / key[:16]
    if target.is_dir():  # published by rename: a folder under its final name is complete
        return target
    model, tokenizer, manifest = load_packaged_model(folder, for_serving=True)
    if not uses_chat_template(tokenizer):
        tokenizer.chat_template = prompt_chat_template(tokenizer, manifest.model)
    tmp = new_tmp_dir(target.parent)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return publish_dir(tmp, target)


def prompt_chat_template(tokenizer, settings: ModelSettings) -> str:
    """A chat template that turns one user message into the tokens SFT trained on when the tokenizer
    has no chat template of its own (``settings.prompt_template``, with the special tokens the
    tokenizer adds in front, such as Llama's bos), so that a chat-completions server prompts as
    ``docqa ask`` does. Checked on a probe question; raises if the tokens would differ."""
    prefix, suffix = settings.prompt_template.format(question=_QUESTION_MARK).split(_QUESTION_MARK)
    plain = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    full = tokenizer(prefix)["input_ids"]
    lead = tokenizer.decode(full[: len(full) - len(plain)])
    template = (
        "{% if messages | length != 1 or messages[0]['role'] != 'user' %}"
        "{{ raise_exception('this model was tuned on single questions: send exactly one user message') }}"
        "{% endif %}"
        f"{{% raw %}}{lead}{prefix}{{% endraw %}}{{{{ messages[0]['content'] }}}}"
        f"{{% raw %}}{suffix}{{% endraw %}}"
    )
    served = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROBE_QUESTION}],
        chat_template=template,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
    )["input_ids"]
    trained = encode_prompts(tokenizer, [PROBE_QUESTION], settings)["input_ids"][0].tolist()
    if list(served) != trained:
        raise ValueError(
            "cannot express model.prompt_template as a chat template for this tokenizer (the served prompt "
            f"would be tokens {list(served)[:12]}…, SFT's {trained[:12]}…); answer with `docqa ask`, or send "
            "the prompt_template text to the server's /v1/completions"
        )
    return template


@contextmanager
def serve_package(
    folder: Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    device: str = "auto",
    kv_cache_blocks: int | None = None,
    startup_timeout_s: float = SERVE_STARTUP_TIMEOUT_S,
) -> Iterator[ServedModel]:
    """``transformers serve`` on the package's merged model, with continuous batching, until the block
    exits. Requests name ``ServedModel.model`` (the merged folder) as their ``model``."""
    merged = merged_model_dir(folder)
    extra_args = ["--continuous-batching"]
    if kv_cache_blocks is not None:
        extra_args += ["--cb-num-blocks", str(kv_cache_blocks)]
    with transformers_serve(str(merged), host, port, device, startup_timeout_s, extra_args) as served:
        yield served


def serve_until_stopped(
    folder: Path,
    host: str,
    port: int | None,
    kv_cache_blocks: int | None,
    on_ready: Callable[[ServedModel], None],
) -> None:
    """Serve in the foreground until Ctrl-C (the KeyboardInterrupt propagates once the server is
    stopped). A server that exits on its own is an error, raised with the end of its log."""
    with serve_package(folder, host, port, kv_cache_blocks=kv_cache_blocks) as served:
        on_ready(served)
        code = served.process.wait()
    raise RuntimeError(
        f"transformers serve exited with code {code}; its log ({served.log_path}) ends with:\n"
        f"{log_tail(served.log_path)}"
    )
