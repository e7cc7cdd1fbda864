"""Mixing general text into pretraining and general instructions into SFT, never the forgetting reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_recipe
from datasets import Dataset

from docqa.bootstrap import general_reference, general_replay
from docqa.modeling import load_tokenizer
from docqa.outputs import BaseModelRef
from docqa.settings import SettingsError, load_recipe
from docqa.stages.evaluate import general_text
from docqa.stages.pretrain import general_blocks
from docqa.stages.sft import mix_instructions, read_alpaca, sft


def test_general_blocks_make_up_the_configured_share(tiny_base, tmp_path):
    tokenizer = load_tokenizer(tiny_base.path)
    recipe = tiny_recipe()
    source = tmp_path / "general.txt"
    source.write_text("The quick brown fox jumps over the lazy dog. " * 400)
    settings = recipe.pretrain.model_copy(update={"general_mix_ratio": 0.25, "general_text": str(source)})
    blocks = general_blocks(settings, recipe.model, tokenizer, domain_blocks=30)
    assert len(blocks) == 10  # 10 / (30 + 10) = 0.25
    assert "quick brown fox" in tokenizer.decode(blocks[0]["input_ids"])
    none = general_blocks(recipe.pretrain, recipe.model, tokenizer, domain_blocks=30)
    assert len(none) == 0
    missing = settings.model_copy(update={"general_text": str(tmp_path / "nope.txt")})
    with pytest.raises(FileNotFoundError, match=r"pretrain\.general_text"):
        general_blocks(missing, recipe.model, tokenizer, domain_blocks=30)


def test_default_mixed_text_is_disjoint_from_the_forgetting_reference():
    train, heldout = general_replay(), general_reference()
    assert len(heldout) == 12 and all("Alice" in chapter for chapter in heldout)  # one text a chapter
    assert "ROSALIND" in train[0] and not any("Alice" in text for text in train)
    recipe = tiny_recipe()
    hub = BaseModelRef(path="some/hub-model", digest="x", tokenizer_digest="x", source="hub")
    reference, source = general_text(
        recipe.evaluate, hub, recipe.model
    )  # no held-out file beside a hub model
    assert reference == heldout and "Alice" in source


def _alpaca_rows(n: int) -> list[dict]:
    return [
        {"instruction": f"Name a prime number above {i}.", "input": "", "output": f"{i}"} for i in range(n)
    ]


@pytest.mark.parametrize("layout", ["json", "jsonl"])
def test_alpaca_files_are_read_in_both_layouts(tmp_path, layout):
    rows = [*_alpaca_rows(3), {"instruction": "Translate.", "input": "Hallo", "output": "Hello"}]
    path = tmp_path / f"general.{layout}"
    path.write_text(json.dumps(rows) if layout == "json" else "\n".join(json.dumps(r) for r in rows))
    pairs = read_alpaca(path)
    assert pairs[0] == ("Name a prime number above 0.", "0")
    assert pairs[-1] == ("Translate.\n\nHallo", "Hello")


def test_an_alpaca_row_without_output_is_refused_with_its_number(tmp_path):
    path = tmp_path / "general.jsonl"
    path.write_text(json.dumps(_alpaca_rows(1)[0]) + "\n" + json.dumps({"instruction": "Say hi."}))
    with pytest.raises(ValueError, match="row 2"):
        read_alpaca(path)


def test_sft_mixes_in_the_configured_share_of_instructions(tmp_path):
    path = tmp_path / "general.json"
    path.write_text(json.dumps(_alpaca_rows(50)))
    qa = Dataset.from_dict(
        {"question": [f"Q{i}?" for i in range(30)], "answer": [f"A{i}" for i in range(30)]}
    )
    settings = tiny_recipe().sft.model_copy(
        update={"general_mix_ratio": 0.25, "general_instructions": str(path)}
    )
    questions, answers, general = mix_instructions(qa, settings)
    assert general == 10 and len(questions) == len(answers) == 40
    assert questions[:30] == qa["question"] and all(q.startswith("Name a prime") for q in questions[30:])
    again = mix_instructions(qa, settings)
    assert again == (questions, answers, general)  # the draw is seeded


def test_recipes_refuse_mixing_without_a_file_or_into_the_reference(tmp_path):
    with pytest.raises(SettingsError, match="general_instructions"):
        load_recipe(None, ["sft.general_mix_ratio=0.2"])
    reference = tmp_path / "general.txt"
    reference.write_text("text")
    with pytest.raises(SettingsError, match="must not be trained on"):
        load_recipe(None, [f"pretrain.general_text={reference}", f"evaluate.general_text={reference}"])


def test_distilled_replay_asks_the_adapter_to_keep_the_base_on_general_blocks(tiny_base, tmp_path):
    """replay_loss=distill: a general block's loss is KL(base ‖ model), zero while the adapter changes
    nothing and positive once it does; the documents' blocks keep their next-token loss; and a whole
    pretraining run trains through it."""
    import torch
    from transformers import TrainingArguments

    from docqa.stages.pretrain import DistilledReplayTrainer, pretrain_model, training_blocks

    tokenizer = load_tokenizer(tiny_base.path)
    recipe = tiny_recipe()
    source = tmp_path / "general.txt"
    source.write_text("The quick brown fox jumps over the lazy dog. " * 400)
    settings = recipe.pretrain.model_copy(
        update={"general_mix_ratio": 0.5, "general_text": str(source), "replay_loss": "distill"}
    )
    documents = [f"River {i} drains into lake {i}, which freezes in winter {i}." * 4 for i in range(12)]
    blocks, counts = training_blocks(documents, [], tokenizer, settings, recipe.model)
    assert counts["general_blocks"] > 0 and sum(blocks["replay"]) == counts["general_blocks"]
    general = blocks.filter(lambda row: row["replay"] == 1).with_format("torch")[:2]
    domain = blocks.filter(lambda row: row["replay"] == 0).with_format("torch")[:2]
    assert "quick brown fox" in tokenizer.decode(general["input_ids"][0])

    model = pretrain_model(tiny_base, recipe.model, settings)
    args = TrainingArguments(output_dir=str(tmp_path / "t"), use_cpu=True, report_to="none")
    trainer = DistilledReplayTrainer(model=model, args=args)
    assert trainer.compute_loss(model, dict(general)).item() == pytest.approx(0.0, abs=1e-5)
    assert trainer.compute_loss(model, dict(domain)).item() > 1.0  # cross-entropy of the documents

    with torch.no_grad():  # an adapter that changes the model: the general blocks now cost something
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.normal_(std=0.05)
    loss = trainer.compute_loss(model, dict(general))
    loss.backward()
    assert loss.item() > 1e-3
    # replay_weight scales the general blocks' KL only: the documents' cross-entropy stays as it was
    model.eval()  # no LoRA dropout: the same loss twice
    weighted = DistilledReplayTrainer(model=model, args=args, replay_weight=4.0)
    plain = trainer.compute_loss(model, dict(general)).item()
    assert weighted.compute_loss(model, dict(general)).item() == pytest.approx(4 * plain, rel=1e-4)
    assert weighted.compute_loss(model, dict(domain)).item() == pytest.approx(
        trainer.compute_loss(model, dict(domain)).item(), rel=1e-6
    )
    assert any(
        w.grad is not None and w.grad.abs().sum() > 0 for n, w in model.named_parameters() if "lora" in n
    )


def test_replay_weight_needs_distilled_replay():
    from docqa.settings import PretrainSettings

    assert PretrainSettings(replay_loss="distill", replay_weight=5).replay_weight == 5
    with pytest.raises(ValueError, match=r"replay_weight .* needs replay_loss: distill"):
        PretrainSettings(replay_loss="tokens", replay_weight=5)


def test_a_pretraining_run_with_distilled_replay_publishes_a_changed_adapter(prepared, tiny_base, tmp_path):
    from safetensors.torch import load_file

    from docqa.stages.pretrain import pretrain

    recipe, chunks = prepared["recipe"], Path(prepared["chunks"].path)
    settings = recipe.pretrain.model_copy(
        update={"general_mix_ratio": 0.5, "replay_loss": "distill", "max_steps": 3, "batch_size": 2}
    )
    out = pretrain(chunks, tiny_base, recipe.model, settings, tmp_path / "run")
    weights = load_file(Path(out.adapter_path, "adapter_model.safetensors"))
    assert json.loads(Path(out.path, "metrics.json").read_text())["general_blocks"] > 0
    assert any("lora_B" in name and tensor.abs().sum() > 0 for name, tensor in weights.items())


def test_sft_with_general_kl_stays_nearer_the_base_on_general_text(trained, tiny_base, tmp_path):
    """sft.general_kl_weight: the same SFT, once without and once with the KL term on general text;
    the tuned model's KL from the base on held-out general text is lower with it, and only the SFT
    adapter trained (reading the base switches every adapter off and on again)."""
    import torch

    from docqa.modeling import load_adapted_model
    from docqa.training import kl_from_base

    recipe, qa = trained["recipe"], Path(trained["qa"].path)
    pretrained = Path(trained["pretrained"].adapter_path)
    source = tmp_path / "general.txt"
    source.write_text(" ".join(general_replay()[0].split()[:3000]))
    tokenizer = load_tokenizer(tiny_base.path)
    probe = torch.tensor(tokenizer(general_reference()[0][:4000])["input_ids"][:96])[None]

    def distance(weight: float) -> tuple[float, int, int]:
        settings = recipe.sft.model_copy(
            update={"general_kl_weight": weight, "general_text": str(source), "max_steps": 8}
        )
        tuned = sft(qa, pretrained, tiny_base, recipe.model, settings, tmp_path / f"sft-{weight}")
        model = load_adapted_model(
            tiny_base, recipe.model, {"pretrain": pretrained, "sft": Path(tuned.adapter_path)}
        )
        with torch.no_grad():
            log_probs = model(input_ids=probe).logits.float().log_softmax(-1)
            kl = kl_from_base(model, probe, log_probs).mean().item()
        blocks = json.loads(Path(tuned.path, "metrics.json").read_text())["general_blocks"]
        return kl, tuned.trainable_parameters, blocks

    (plain, trainable, no_blocks), (kept, kept_trainable, blocks) = distance(0.0), distance(5.0)
    assert kept < 0.8 * plain, (kept, plain)
    assert kept_trainable == trainable and (no_blocks, blocks) == (0, 8)  # one general block a step
