"""Supervised fine-tuning on the training Q&A with TRL, loss on the answers only.

The SFT adapter is trained *on top of* the pretraining adapter: both LoRA adapters are loaded on the
same frozen 4-bit base and active together, only the new ``sft`` adapter is trainable, and each is
saved on its own. The final model is base + pretrain + sft, stacked (no merge, so no full-precision
copy of the base is ever materialised).
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from peft import PeftModel
from transformers import set_seed
from trl import SFTConfig, SFTTrainer

from docqa.modeling import count_trainable, load_base_model, load_tokenizer, lora_config
from docqa.outputs import BaseModelRef, TrainOutput
from docqa.prompting import sft_example
from docqa.settings import ModelSettings, SFTSettings
from docqa.stages.synthesize import read_qa
from docqa.training import (
    StepLogger,
    checkpoint_step,
    final_eval_loss,
    load_trainable_adapter,
    prepare_resume,
    publish_adapter,
    remove_checkpoints,
    run_training,
    trainer_arguments,
    training_dir,
)

ADAPTER_NAME = "sft"
PRETRAIN_ADAPTER_NAME = "pretrain"


def sft_dataset(qa: Dataset, tokenizer, settings: ModelSettings) -> Dataset:
    return Dataset.from_list(
        [sft_example(tokenizer, q, a, settings) for q, a in zip(qa["question"], qa["answer"], strict=True)]
    )


def stack_trainable_adapter(model, pretrain_adapter: Path, settings: SFTSettings) -> PeftModel:
    """Load the pretraining adapter frozen, add a trainable ``sft`` adapter, activate both."""
    model = PeftModel.from_pretrained(model, str(pretrain_adapter), adapter_name=PRETRAIN_ADAPTER_NAME)
    model.add_adapter(ADAPTER_NAME, lora_config(settings.lora))
    model.base_model.set_adapter([PRETRAIN_ADAPTER_NAME, ADAPTER_NAME])
    for name, parameter in model.named_parameters():
        parameter.requires_grad = f".{ADAPTER_NAME}." in name
    return model


def sft_model(
    base: BaseModelRef, pretrain_adapter: Path, model_settings: ModelSettings, settings: SFTSettings
) -> PeftModel:
    set_seed(settings.seed)
    model = load_base_model(base, model_settings, for_training=True)
    return stack_trainable_adapter(model, pretrain_adapter, settings)


def sft_trainer(
    model: PeftModel,
    tokenizer,
    train: Dataset,
    evaluation: Dataset | None,
    settings: SFTSettings,
    work_dir: Path,
) -> SFTTrainer:
    """TRL's trainer on prompt-completion examples: only completion (answer) tokens carry loss."""
    config = SFTConfig(
        **trainer_arguments(settings, work_dir, has_eval=evaluation is not None),
        max_length=settings.max_seq_length,
        completion_only_loss=True,
        packing=False,
    )
    trainer = SFTTrainer(
        model=model, args=config, train_dataset=train, eval_dataset=evaluation, processing_class=tokenizer
    )
    load_trainable_adapter(trainer, ADAPTER_NAME)  # a resume restores the sft adapter only
    return trainer


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
    train = sft_dataset(read_qa(qa_path, "train"), tokenizer, model_settings)
    eval_qa = read_qa(qa_path, "eval")
    eval_rows = eval_qa.select(range(min(len(eval_qa), settings.max_eval_samples)))
    evaluation = sft_dataset(eval_rows, tokenizer, model_settings) if len(eval_rows) else None

    model = sft_model(base, pretrain_adapter, model_settings, settings)
    with training_dir(checkpoint_dir, out_root) as work_dir:
        resume_from = prepare_resume(work_dir, ADAPTER_NAME)
        trainer = sft_trainer(model, tokenizer, train, evaluation, settings, work_dir)
        history, train_loss, seconds = run_training(trainer, on_log, resume_from)
    metrics = {
        "trainable_parameters": count_trainable(model),
        "steps": trainer.state.global_step,
        "train_examples": len(train),
        "train_tokens": sum(len(ids) for ids in trainer.train_dataset["input_ids"]),
        "train_loss": train_loss,
        "eval_loss": final_eval_loss(history),
        "seconds": seconds,
        "resumed_from_step": checkpoint_step(resume_from) if resume_from is not None else None,
    }
    folder, digest = publish_adapter(model, ADAPTER_NAME, out_root, history, metrics)
    remove_checkpoints(checkpoint_dir)
    return TrainOutput.from_metrics(folder, digest, metrics)
