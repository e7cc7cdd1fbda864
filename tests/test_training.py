"""QLoRA for real on CPU: bitsandbytes 4-bit base, LoRA weights that change while the base does not,
answer-only SFT loss, stacked adapters that load again with the same logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from bitsandbytes.nn import Linear4bit
from safetensors.torch import load_file

from docqa.modeling import load_adapted_model, load_tokenizer
from docqa.outputs import LOG_HISTORY_FILE
from docqa.stages.pretrain import pack_blocks, pretrain_model
from docqa.stages.sft import sft_dataset, sft_model, sft_trainer
from docqa.stages.synthesize import read_qa
from docqa.training import scratch_dir


def test_pack_blocks_fills_every_block_and_separates_texts(tiny_base):
    tokenizer = load_tokenizer(tiny_base.path)
    texts = ["first text " * 30, "second text " * 30, "third " * 5]
    blocks = pack_blocks(texts, tokenizer, block_size=32)
    total = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)
    assert len(blocks) == total // 32
    assert all(len(ids) == 32 for ids in blocks["input_ids"])
    flat = [i for ids in blocks["input_ids"] for i in ids]
    assert tokenizer.eos_token_id in flat  # documents are separated, not glued


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_qlora_step_changes_lora_weights_and_not_the_4bit_base(prepared, tiny_base):
    recipe = prepared["recipe"]
    model = pretrain_model(tiny_base, recipe.model, recipe.pretrain)
    quantized = [m for m in model.modules() if isinstance(m, Linear4bit)]
    assert quantized, "the base must be loaded in 4-bit through bitsandbytes"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    model.train()  # as the Trainer does; in eval mode bitsandbytes repacks 4-bit weights for CPU inference
    before = _snapshot(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = torch.randint(0, 500, (2, 32))
    for _ in range(2):
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = _snapshot(model)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == trainable  # every LoRA weight moved, nothing else did (4-bit weights included)


def test_an_evaluation_pass_does_not_change_the_gradients_of_later_training(prepared, tiny_base):
    """bitsandbytes repacks 4-bit weights for CPU inference in eval mode and then multiplies through a
    kernel without autograd; a model being trained must keep getting true gradients after evaluating."""
    recipe = prepared["recipe"]
    settings = recipe.pretrain.model_copy(
        update={"lora": recipe.pretrain.lora.model_copy(update={"dropout": 0.0})}
    )
    evaluated, fresh = (pretrain_model(tiny_base, recipe.model, settings) for _ in range(2))
    batch = torch.randint(0, 500, (2, 32))
    evaluated.eval()
    with torch.no_grad():
        evaluated(input_ids=batch)  # what the Trainer's periodic evaluation does
    grads = []
    for model in (evaluated, fresh):
        model.train()
        model(input_ids=batch, labels=batch).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-7), name


def test_pretrain_writes_the_adapter_and_logs_losses(trained):
    out = trained["pretrained"]
    assert out.steps == trained["recipe"].pretrain.max_steps
    weights = load_file(str(Path(out.adapter_path) / "adapter_model.safetensors"))
    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # lora_B starts at zero: it was trained
    config = json.loads((Path(out.adapter_path) / "adapter_config.json").read_text())
    assert config["r"] == trained["recipe"].pretrain.lora.r
    history = json.loads((Path(out.path) / LOG_HISTORY_FILE).read_text())
    assert any("loss" in row for row in history) and any("eval_loss" in row for row in history)
    logged_keys = {key for _, values in trained["pretrain_log"] for key in values}
    assert {"loss", "eval_loss"} <= logged_keys  # the live logger saw train and eval loss
    assert out.trainable_parameters > 0 and out.eval_loss is not None


def test_sft_labels_cover_the_answer_only(prepared, tiny_base, tmp_path):
    recipe = prepared["recipe"]
    tokenizer = load_tokenizer(tiny_base.path)
    qa = read_qa(Path(prepared["qa"].path), "train").select(range(4))
    model = sft_model(
        tiny_base, Path(_pretrain_adapter(prepared, tiny_base, tmp_path)), recipe.model, recipe.sft
    )
    trainer = sft_trainer(
        model, tokenizer, sft_dataset(qa, tokenizer, recipe.model), None, recipe.sft, tmp_path
    )
    full_lengths = 0
    for row, example in zip(qa, trainer.train_dataset, strict=True):
        labelled = [
            t for t, label in zip(example["input_ids"], example["labels"], strict=True) if label != -100
        ]
        answer = tokenizer(row["answer"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        truncated = len(example["input_ids"]) == recipe.sft.max_seq_length
        full_lengths += not truncated
        # the loss starts exactly at the answer and covers it up to the turn's end (eos stops generation)
        assert labelled[: len(answer)] == (answer[: len(labelled)] if truncated else answer)
        question_ids = tokenizer(row["question"], add_special_tokens=False)["input_ids"]
        masked = [
            t for t, label in zip(example["input_ids"], example["labels"], strict=True) if label == -100
        ]
        assert len(masked) >= len(question_ids)  # the prompt carries no loss
    assert full_lengths, "at least one example must fit whole"


def _pretrain_adapter(prepared, tiny_base, tmp_path) -> Path:
    model = pretrain_model(tiny_base, prepared["recipe"].model, prepared["recipe"].pretrain)
    with scratch_dir(tmp_path) as folder:
        model.save_pretrained(str(folder / "save"))
        target = tmp_path / "pretrain-adapter"
        (folder / "save" / "pretrain").rename(target)
    return target


def test_sft_trains_its_adapter_on_top_of_a_frozen_pretrain_adapter(trained, tiny_base):
    recipe = trained["recipe"]
    model = sft_model(tiny_base, Path(trained["pretrained"].adapter_path), recipe.model, recipe.sft)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".sft." in n for n in trainable)
    assert set(model.base_model.active_adapter) == {"pretrain", "sft"}
    tuned = load_file(str(Path(trained["tuned"].adapter_path) / "adapter_model.safetensors"))
    assert tuned and all(".pretrain." not in name for name in tuned)  # saved on its own
    assert any(t.abs().sum() > 0 for name, t in tuned.items() if "lora_B" in name)


def test_stacked_adapters_reload_with_identical_logits_and_differ_from_base(trained, tiny_base):
    recipe = trained["recipe"]
    adapters = {
        "pretrain": Path(trained["pretrained"].adapter_path),
        "sft": Path(trained["tuned"].adapter_path),
    }
    batch = torch.randint(0, 500, (1, 24))
    with torch.no_grad():
        first = load_adapted_model(tiny_base, recipe.model, adapters)
        logits = first(input_ids=batch).logits
        with first.disable_adapter():
            base_logits = first(input_ids=batch).logits
        again = load_adapted_model(tiny_base, recipe.model, adapters)(input_ids=batch).logits
    assert torch.equal(logits, again)
    assert not torch.allclose(logits, base_logits)


@pytest.mark.parametrize("stage", ["pretrained", "tuned"])
def test_training_outputs_are_content_addressed(trained, stage):
    out = trained[stage]
    assert Path(out.path).name == out.digest[:16]
    assert not any(p.name.startswith(".tmp-") for p in Path(out.path).parent.iterdir())
