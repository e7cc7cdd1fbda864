"""The in-process transformers chat client and the ``transformers serve`` launcher, on the tiny base."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
import torch

from docqa.settings import SynthesizeSettings
from docqa.synthesis.base import ChatRequest
from docqa.synthesis.serve import transformers_serve
from docqa.synthesis.transformers_backend import TransformersChatClient, weights_digest

MAX_TOKENS = 16  # the least synthesize.max_tokens allows
PROMPTS = (
    "for statement",
    "The while statement is used for repeated execution as long as an expression is true.",
    "x = 1",
)
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def settings(model: str, **values) -> SynthesizeSettings:
    base = {"backend": "transformers", "model": model, "max_tokens": MAX_TOKENS, "temperature": 0}
    return SynthesizeSettings(**{**base, **values})


def requests(*texts: str) -> list[ChatRequest]:
    return [
        ChatRequest(request_id=f"r{i}", messages=[{"role": "user", "content": t}])
        for i, t in enumerate(texts)
    ]


def save_model(model, tokenizer_source: str, folder: Path, **save_options) -> Path:
    from transformers import AutoTokenizer

    model.save_pretrained(folder, **save_options)
    AutoTokenizer.from_pretrained(tokenizer_source).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def noisy_model(tiny_base, tmp_path_factory) -> Path:
    """The tiny base with noise added to its weights, so that greedy replies differ from prompt to prompt.

    The tiny base (trained for a few steps) answers every prompt with newlines, which would make a
    comparison of batched and unbatched replies pass whatever the padding.
    """
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base.path)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return save_model(model, tiny_base.path, tmp_path_factory.mktemp("noisy") / "model")


def test_one_ok_reply_per_request(tiny_base):
    client = TransformersChatClient(settings(tiny_base.path, batch_size=3))
    replies = list(client.complete(requests(*PROMPTS, "while loop")))  # a full batch and a partial one
    assert sorted(r.request_id for r in replies) == ["r0", "r1", "r2", "r3"]
    for reply in replies:
        assert reply.status == "ok"
        assert isinstance(reply.content, str) and reply.content
        assert reply.finish_reason in {"stop", "length"}
        assert reply.attempts == 1 and reply.latency_s > 0


def test_batched_greedy_replies_equal_unbatched(noisy_model):
    """Left padding plus the attention mask leave each row's greedy tokens as they are alone.

    (Checked: with right padding the replies to the two shorter prompts change.)
    """
    replies = {}
    for batch_size in (1, 3):
        client = TransformersChatClient(settings(str(noisy_model), batch_size=batch_size))
        replies[batch_size] = {r.request_id: r.content for r in client.complete(requests(*PROMPTS))}
    assert len(set(replies[1].values())) == len(PROMPTS)  # the replies do differ from prompt to prompt
    assert replies[3] == replies[1]


def test_reply_ending_on_eos_is_stop_and_full_reply_is_length(tiny_base, tmp_path):
    """The tiny base answers with newlines: make the newline an eos and the reply stops at once."""
    folder = Path(shutil.copytree(tiny_base.path, tmp_path / "model"))
    client = TransformersChatClient(settings(str(folder)))
    assert {r.finish_reason for r in client.complete(requests("for statement"))} == {"length"}

    newline = client.tokenizer.encode("\n", add_special_tokens=False)
    assert len(newline) == 1
    config = json.loads((folder / "generation_config.json").read_text())
    config["eos_token_id"] = [client.tokenizer.eos_token_id, newline[0]]
    (folder / "generation_config.json").write_text(json.dumps(config))
    [reply] = TransformersChatClient(settings(str(folder))).complete(requests("for statement"))
    assert (reply.content, reply.finish_reason) == ("", "stop")


def test_identity_follows_the_weights_files(noisy_model, tmp_path):
    folder = Path(shutil.copytree(noisy_model, tmp_path / "model"))
    first = TransformersChatClient(settings(str(folder))).identity()
    assert first == TransformersChatClient(settings(str(folder))).identity()
    assert first["client"] == "transformers" and first["model"] == str(folder)

    (folder / "README.md").write_text("notes that shape no reply")
    assert weights_digest(str(folder)) == first["weights"]

    model = TransformersChatClient(settings(str(folder))).model
    (folder / "model.safetensors").unlink()
    save_model(model, str(noisy_model), folder, max_shard_size="200KB")  # same weights, sharded
    assert len(list(folder.glob("*.safetensors"))) > 1
    assert TransformersChatClient(settings(str(folder))).identity()["weights"] != first["weights"]


def test_identity_of_a_hub_id_is_its_commit(noisy_model, tmp_path, monkeypatch):
    """A hub id loaded from the (offline) hub cache is identified by the snapshot's commit."""
    import huggingface_hub.constants

    snapshot = tmp_path / "hub" / "models--docqa--tiny" / "snapshots" / COMMIT
    shutil.copytree(noisy_model, snapshot)
    (tmp_path / "hub" / "models--docqa--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--docqa--tiny" / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    identity = TransformersChatClient(settings("docqa/tiny")).identity()
    assert identity == {"client": "transformers", "model": "docqa/tiny", "weights": COMMIT}


def test_prompt_too_long_for_the_context_fails_alone(tiny_base):
    client = TransformersChatClient(settings(tiny_base.path, batch_size=2))
    long_text = "word " * 400  # far beyond the tiny base's 256 positions
    replies = {r.request_id: r for r in client.complete(requests(PROMPTS[0], long_text, PROMPTS[2]))}
    assert replies["r1"].status == "failed"
    assert "too long for the model's context" in replies["r1"].reason
    assert f"> {client.context_limit} tokens" in replies["r1"].reason
    assert replies["r0"].status == replies["r2"].status == "ok"


def test_model_without_chat_template_is_refused(tiny_base, tmp_path):
    folder = Path(shutil.copytree(tiny_base.path, tmp_path / "model"))
    (folder / "chat_template.jinja").unlink()
    with pytest.raises(ValueError, match="no chat template"):
        TransformersChatClient(settings(str(folder)))


@pytest.mark.slow
def test_transformers_serve_answers_chat_completions(tiny_base):
    with transformers_serve(tiny_base.path, device="cpu") as served:
        response = httpx.post(
            f"{served.base_url}/chat/completions",
            json={"model": served.model, "messages": requests("for statement")[0].messages, "max_tokens": 8},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        choice = response.json()["choices"][0]
        assert choice["message"]["content"] and choice["finish_reason"] == "length"
    assert served.process.poll() is not None  # stopped on leaving the block


@pytest.mark.slow
def test_transformers_serve_reports_a_server_that_dies(tmp_path):
    with pytest.raises(RuntimeError, match="exited with code"), transformers_serve(str(tmp_path / "nothing")):
        pass
