"""QLoRA for real on CPU: bitsandbytes 4-bit base, LoRA weights that change while the base does not,
answer-only SFT loss, stacked adapters that load again with the same logits."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from bitsandbytes.nn import Linear4bit
from safetensors.torch import load_file
from transformers import masking_utils

from docqa.modeling import load_adapted_model, load_base_model, load_tokenizer
from docqa.outputs import LOG_HISTORY_FILE, read_chunks
from docqa.stages.pretrain import pack_blocks, pretrain, pretrain_model
from docqa.stages.sft import sft, sft_dataset, sft_model, sft_trainer
from docqa.stages.synthesize import read_qa
from docqa.training import packed_attention_leak, scratch_dir


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
    # a learning rate far too high: the held-out loss improves once, then the adapter overshoots
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


def _examples(row: dict) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) of each example in a training row: several when packed, else one."""
    lengths = row.get("seq_lengths") or [len(row["input_ids"])]
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    return [
        (row["input_ids"][a : a + n], row["labels"][a : a + n]) for a, n in zip(starts, lengths, strict=True)
    ]


@pytest.mark.parametrize("packing", [True, False], ids=["packed", "padded"])
def test_sft_labels_cover_the_answer_only(prepared, tiny_base, tmp_path, packing):
    recipe = prepared["recipe"]
    settings = recipe.sft.model_copy(update={"packing": packing, "max_seq_length": 256})
    tokenizer = load_tokenizer(tiny_base.path)
    qa = read_qa(Path(prepared["qa"].path), "train").select(range(12))
    model = sft_model(
        tiny_base, Path(_pretrain_adapter(prepared, tiny_base, tmp_path)), recipe.model, settings
    )
    trainer = sft_trainer(
        model, tokenizer, sft_dataset(qa, tokenizer, recipe.model), None, settings, tmp_path
    )
    rows = list(trainer.train_dataset)
    examples = [example for row in rows for example in _examples(row)]
    assert len(examples) == len(qa)  # every example once, none split across rows
    if packing:
        assert len(rows) < len(qa) and all(len(r["input_ids"]) <= settings.max_seq_length for r in rows)
    answers = [
        tokenizer(a, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for a in qa["answer"]
    ]
    whole = 0
    for ids, labels in examples:
        first = next(i for i, label in enumerate(labels) if label != -100)
        # the loss starts at the answer and runs, on the tokens themselves, to the example's end
        assert labels[first:] == ids[first:]
        labelled = ids[first:]
        truncated = len(ids) == settings.max_seq_length
        # the answer and its eos, then at most the chat template's turn end (a newline)
        match = next(
            a
            for a in answers
            if (labelled[: len(a)] == a and len(labelled) - len(a) <= 2)
            or (truncated and a[: len(labelled)] == labelled)
        )
        answers.remove(match)
        whole += not truncated
        assert first >= 4  # the prompt (template + question) carries no loss
    assert whole, "at least one example must fit whole"


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_examples_do_not_attend_to_each_other(prepared, tiny_base, attention):
    settings = prepared["recipe"].model.model_copy(update={"attn_implementation": attention})
    model = load_base_model(tiny_base, settings, for_training=True)
    assert packed_attention_leak(model) < 1e-4


def test_sft_refuses_to_pack_where_attention_crosses_examples(prepared, tiny_base, tmp_path, monkeypatch):
    """An attention path that ignores the packed position ids (simulated by taking transformers'
    boundary detection away) would let examples see each other: SFT stops before training."""
    recipe = prepared["recipe"]
    monkeypatch.setattr(masking_utils, "find_packed_sequence_indices", lambda position_ids: None)
    with pytest.raises(ValueError, match=r"sft\.packing=false"):
        sft(
            Path(prepared["qa"].path), _pretrain_adapter(prepared, tiny_base, tmp_path), tiny_base,
            recipe.model, recipe.sft, tmp_path / "sft",
        )  # fmt: skip
    assert not (tmp_path / "sft").exists() or not any((tmp_path / "sft").iterdir())


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


def _mean_block_loss(model, blocks) -> float:
    ids = torch.tensor(blocks["input_ids"])
    with torch.no_grad():
        return float(model(input_ids=ids, labels=ids).loss)


def test_select_checkpoint_by_eval_loss_publishes_that_steps_adapter(prepared, tiny_base, tmp_path):
    """Held-out eval loss is logged (with perplexity) every eval_steps; with select_checkpoint
    eval_loss the published adapter is the one from the evaluation with the lowest loss, and its
    held-out loss, measured again from the published files, is that loss."""
    recipe = prepared["recipe"]
    # a learning rate far too high: the held-out loss improves once, then the adapter overshoots
    settings = recipe.pretrain.model_copy(
        update={
            "max_steps": 10,
            "eval_steps": 2,
            "learning_rate": 30.0,
            "select_checkpoint": "eval_loss",
            "lr_scheduler": "constant",
        }
    )
    out = pretrain(Path(prepared["chunks"].path), tiny_base, recipe.model, settings, tmp_path / "pretrain")
    evals = {
        row["step"]: row["eval_loss"]
        for row in json.loads((Path(out.path) / LOG_HISTORY_FILE).read_text())
        if "eval_loss" in row
    }
    assert sorted(evals) == [2, 4, 6, 8, 10]
    best_step = min(evals, key=evals.get)
    assert out.selected_step == best_step and out.eval_loss == pytest.approx(evals[best_step])
    assert best_step < 10, "the learning rate is meant to overshoot, so the last step is not the best"

    tokenizer = load_tokenizer(tiny_base.path)
    eval_blocks = pack_blocks(
        list(read_chunks(Path(prepared["chunks"].path), ("eval",))["text"]), tokenizer, settings.block_size
    )
    eval_blocks = eval_blocks.select(range(min(len(eval_blocks), settings.max_eval_samples)))
    published = load_adapted_model(tiny_base, recipe.model, {"pretrain": Path(out.adapter_path)})
    assert _mean_block_loss(published, eval_blocks) == pytest.approx(evals[best_step], rel=1e-3)


@pytest.mark.parametrize("config", ["TrainingArguments", "SFTConfig"])
def test_every_training_setting_reaches_the_trainers_arguments(tmp_path, config):
    """The one mapping from a stage's settings to the Trainer's (pretrain) and TRL's (SFT) arguments:
    each setting set to a value no default has comes out of the arguments object the Trainer reads."""
    import transformers
    import trl

    from docqa.settings import PretrainSettings
    from docqa.training import trainer_arguments

    settings = PretrainSettings(
        learning_rate=0.0123, lr_scheduler="linear", warmup_ratio=0.25, weight_decay=0.07, batch_size=3,
        gradient_accumulation_steps=5, gradient_checkpointing=True, epochs=2.5, max_steps=40,
        max_grad_norm=0.7, logging_steps=7, eval_steps=9, save_steps=11, save_total_limit=4, seed=1234,
        optim="adamw_torch",
    )  # fmt: skip
    kind = getattr(transformers if config == "TrainingArguments" else trl, config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecated name reaches transformers (a warning line per run)
        arguments = kind(**trainer_arguments(settings, tmp_path, has_eval=True))
    reached = {
        "learning_rate": arguments.learning_rate, "lr_scheduler": arguments.lr_scheduler_type.value,
        "weight_decay": arguments.weight_decay, "batch_size": arguments.per_device_train_batch_size,
        "gradient_accumulation_steps": arguments.gradient_accumulation_steps,
        "gradient_checkpointing": arguments.activation_checkpointing, "epochs": arguments.num_train_epochs,
        "max_steps": arguments.max_steps, "max_grad_norm": arguments.max_grad_norm,
        "logging_steps": arguments.logging_steps, "eval_steps": arguments.eval_steps,
        "save_steps": arguments.save_steps, "save_total_limit": arguments.save_total_limit,
        "seed": arguments.seed, "optim": arguments.optim.value,
    }  # fmt: skip
    assert reached == settings.model_dump(include=set(reached))
    assert arguments.per_device_eval_batch_size == settings.batch_size
    # transformers 5 has no warmup_ratio: the ratio goes in as a float warmup_steps, read as a share
    assert arguments.get_warmup_steps(200) == 50
    assert arguments.eval_strategy.value == "steps" and arguments.report_to in ([], "none", ["none"])
