"""Supervised fine-tuning on the training Q&A with TRL, loss on the answers only.

The SFT adapter is trained *on top of* the pretraining adapter: both LoRA adapters are loaded on the
same frozen 4-bit base and active together, only the new ``sft`` adapter is trainable, and each is
saved on its own. The final model is base + pretrain + sft, stacked (no merge, so no full-precision
copy of the base is ever materialised).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from datasets import Dataset
from peft import PeftModel
from transformers import set_seed
from trl import SFTConfig, SFTTrainer

from docqa.bootstrap import general_replay
from docqa.modeling import count_trainable, load_base_model, load_tokenizer, lora_config
from docqa.outputs import PRETRAIN_ADAPTER, SFT_ADAPTER, BaseModelRef, TrainOutput
from docqa.prompting import sft_example
from docqa.settings import ModelSettings, SFTSettings
from docqa.stages.pretrain import pack_blocks
from docqa.stages.synthesize import read_qa
from docqa.training import (
    LEAK_TOLERANCE,
    StepLogger,
    kl_from_base,
    packed_attention_leak,
    publish_training,
    run_training,
    trainer_arguments,
    training_dir,
)
from docqa.workspace import jsonl_records

ADAPTER_NAME = SFT_ADAPTER


def sft_dataset(qa: Dataset | tuple[list[str], list[str]], tokenizer, settings: ModelSettings) -> Dataset:
    """Prompt-completion examples from Q&A rows, or from (questions, answers)."""
    questions, answers = (qa["question"], qa["answer"]) if isinstance(qa, Dataset) else qa
    return Dataset.from_list(
        [sft_example(tokenizer, q, a, settings) for q, a in zip(questions, answers, strict=True)]
    )


def read_alpaca(path: Path) -> list[tuple[str, str]]:
    """(question, answer) pairs of an Alpaca-format file: a JSON list, or JSON Lines, of objects with
    ``instruction``, optional ``input`` and ``output``; the input, if any, follows the instruction."""
    if not path.is_file():
        raise FileNotFoundError(f"sft.general_instructions {path} is not a file")
    text = path.read_text(encoding="utf-8").strip()
    rows = json.loads(text) if text.startswith("[") else [json.loads(line) for line in jsonl_records(text)]
    pairs = []
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not row.get("instruction") or not row.get("output"):
            raise ValueError(f"{path} row {number}: an Alpaca row needs non-empty instruction and output")
        question = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        pairs.append((question, row["output"]))
    return pairs


def mix_instructions(qa: Dataset, settings: SFTSettings) -> tuple[list[str], list[str], int]:
    """Questions and answers to train on: the domain Q&A plus ``general_mix_ratio`` of general
    instructions (fewer if the file is short), drawn at random with the stage's seed."""
    questions, answers = list(qa["question"]), list(qa["answer"])
    if settings.general_mix_ratio == 0:
        return questions, answers, 0
    general = read_alpaca(Path(settings.general_instructions))
    wanted = round(len(questions) * settings.general_mix_ratio / (1 - settings.general_mix_ratio))
    chosen = random.Random(settings.seed).sample(general, min(wanted, len(general)))
    return questions + [q for q, _ in chosen], answers + [a for _, a in chosen], len(chosen)


def stack_trainable_adapter(model, pretrain_adapter: Path, settings: SFTSettings) -> PeftModel:
    """Load the pretraining adapter frozen, add a trainable ``sft`` adapter, activate both."""
    model = PeftModel.from_pretrained(model, str(pretrain_adapter), adapter_name=PRETRAIN_ADAPTER)
    model.add_adapter(ADAPTER_NAME, lora_config(settings.lora))
    model.base_model.set_adapter([PRETRAIN_ADAPTER, ADAPTER_NAME])
    for name, parameter in model.named_parameters():
        parameter.requires_grad = f".{ADAPTER_NAME}." in name
    return model


def sft_model(
    base: BaseModelRef, pretrain_adapter: Path, model_settings: ModelSettings, settings: SFTSettings
) -> PeftModel:
    set_seed(settings.seed)
    model = load_base_model(base, model_settings, for_training=True)
    return stack_trainable_adapter(model, pretrain_adapter, settings)


class GeneralKLSFTTrainer(SFTTrainer):
    """TRL's SFT, plus at every training step the KL divergence from the base on one block of general
    text, weighted by ``sft.general_kl_weight``: the answers are learned while the model's next-token
    distributions on general English are held at the base's. The blocks are taken in turn, one per
    micro-batch, indexed by the optimizer step, so a resumed run reads the blocks an unbroken one would."""

    def __init__(self, *args, general_blocks: torch.Tensor, general_kl_weight: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.general_blocks, self.general_kl_weight, self.general_reads = general_blocks, general_kl_weight, 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if not model.training:
            return result
        loss, outputs = result if return_outputs else (result, None)
        accumulation = self.args.gradient_accumulation_steps
        index = self.state.global_step * accumulation + self.general_reads % accumulation
        block = self.general_blocks[index % len(self.general_blocks)][None].to(loss.device)
        self.general_reads += 1
        peft_model = self.accelerator.unwrap_model(model)  # one DDP forward a step; autograd sums both
        log_probs = peft_model(input_ids=block).logits.float().log_softmax(-1)
        kl = kl_from_base(peft_model, block, log_probs).mean()
        # like TRL's auxiliary losses: the answers' loss is already divided over the accumulated batch
        steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1
        loss = loss + self.general_kl_weight * kl / steps
        return (loss, outputs) if return_outputs else loss


def general_kl_blocks(tokenizer, settings: SFTSettings) -> torch.Tensor:
    """The general text cut into blocks of ``max_seq_length`` tokens, in a seeded order."""
    texts = general_replay(settings.general_text, "sft.general_text")
    blocks = torch.tensor(pack_blocks(texts, tokenizer, settings.max_seq_length)["input_ids"])
    if not len(blocks):
        raise ValueError(
            f"sft.general_text holds fewer than {settings.max_seq_length} tokens: give a longer text"
        )
    return blocks[torch.randperm(len(blocks), generator=torch.Generator().manual_seed(settings.seed))]


def sft_trainer(
    model: PeftModel,
    tokenizer,
    train: Dataset,
    evaluation: Dataset | None,
    settings: SFTSettings,
    work_dir: Path,
) -> SFTTrainer:
    """TRL's trainer on prompt-completion examples: only completion (answer) tokens carry loss.

    With ``packing`` the examples are packed best-fit-decreasing into rows of ``max_seq_length`` and
    each batch is one padding-free row: position ids restart at every example and the sequence
    boundaries go along, so that attention stays inside each example (checked by
    ``check_packing``). Without it, one example per row, right-padded to the batch's longest."""
    config = SFTConfig(
        **trainer_arguments(settings, work_dir, has_eval=evaluation is not None),
        max_length=settings.max_seq_length,
        completion_only_loss=True,
        packing=settings.packing,
        packing_strategy="bfd",
    )
    common = {"model": model, "args": config, "train_dataset": train, "eval_dataset": evaluation}
    if settings.general_kl_weight == 0:
        return SFTTrainer(**common, processing_class=tokenizer)
    return GeneralKLSFTTrainer(
        **common,
        processing_class=tokenizer,
        general_blocks=general_kl_blocks(tokenizer, settings),
        general_kl_weight=settings.general_kl_weight,
    )


def check_packing(model: PeftModel, model_settings: ModelSettings) -> None:
    """Refuse to pack where packed examples would attend to each other."""
    leak = packed_attention_leak(model)
    if leak > LEAK_TOLERANCE:
        raise ValueError(
            f"packed SFT examples attend to each other with attn_implementation "
            f"{model_settings.attn_implementation!r} on this model (logits change by {leak:.2f} of their "
            "range): set sft.packing=false, or model.attn_implementation to sdpa or flash_attention_2"
        )


def sft(
    qa_path: Path,
    pretrain_adapter: Path,
    base: BaseModelRef,
    model_settings: ModelSettings,
    settings: SFTSettings,
    out_root: Path,
    on_log: StepLogger | None = None,
    checkpoint_dir: Path | None = None,
) -> TrainOutput:
    tokenizer = load_tokenizer(base.path, model_settings.revision)
    questions, answers, general = mix_instructions(read_qa(qa_path, "train"), settings)
    train = sft_dataset((questions, answers), tokenizer, model_settings)
    eval_qa = read_qa(qa_path, "eval")
    eval_rows = eval_qa.select(range(min(len(eval_qa), settings.max_eval_samples)))
    evaluation = sft_dataset(eval_rows, tokenizer, model_settings) if len(eval_rows) else None

    model = sft_model(base, pretrain_adapter, model_settings, settings)
    if settings.packing:
        check_packing(model, model_settings)
    with training_dir(checkpoint_dir, out_root) as work_dir:
        trainer = sft_trainer(model, tokenizer, train, evaluation, settings, work_dir)
        run = run_training(trainer, on_log, ADAPTER_NAME, work_dir, settings.select_checkpoint)
    rows = trainer.train_dataset
    metrics = {
        "trainable_parameters": count_trainable(model),
        "steps": trainer.state.global_step,
        "train_examples": len(train),
        "general_examples": general,  # of train_examples: mixed-in general instructions
        "train_rows": len(rows),  # packed rows with packing, else examples
        "train_tokens": sum(len(ids) for ids in rows["input_ids"]),
        "general_blocks": getattr(trainer, "general_reads", 0),  # read for sft.general_kl_weight (this run)
        **run.metrics(),
        "packing": settings.packing,
    }
    return publish_training(model, ADAPTER_NAME, out_root, run, metrics, checkpoint_dir)
