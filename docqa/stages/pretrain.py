"""Domain-adaptive causal-LM pretraining: QLoRA on the training documents' chunks and their augmentation
(rewrites, and the SFT pairs as text: ``docqa.stages.augment``), packed into blocks."""

from __future__ import annotations

import math
from pathlib import Path

from datasets import Dataset, concatenate_datasets
from peft import PeftModel, get_peft_model
from transformers import Trainer, TrainingArguments, default_data_collator, set_seed

from docqa.bootstrap import general_replay
from docqa.modeling import count_trainable, load_base_model, load_tokenizer, lora_config, token_stream
from docqa.outputs import PRETRAIN_ADAPTER, BaseModelRef, TrainOutput, read_chunks
from docqa.settings import ModelSettings, PretrainSettings
from docqa.split import PRETRAIN_SIDES
from docqa.stages.augment import read_augmented
from docqa.training import (
    StepLogger,
    kl_from_base,
    publish_training,
    run_training,
    trainer_arguments,
    training_dir,
)

ADAPTER_NAME = PRETRAIN_ADAPTER


def pack_blocks(texts: list[str], tokenizer, block_size: int) -> Dataset:
    """Concatenate the texts (eos between them) and cut into full blocks; the tail is dropped."""
    ids = token_stream(tokenizer, texts)
    n_blocks = len(ids) // block_size
    blocks = [ids[i * block_size : (i + 1) * block_size] for i in range(n_blocks)]
    return Dataset.from_dict({"input_ids": blocks, "labels": blocks})


def general_blocks(
    settings: PretrainSettings, model_settings: ModelSettings, tokenizer, domain_blocks: int
) -> Dataset:
    """Blocks of general text to mix in, ``general_mix_ratio`` of the mixed set (fewer if the text is
    short), drawn at random with the stage's seed; none at ratio 0."""
    ratio = settings.general_mix_ratio
    if ratio == 0:
        return Dataset.from_dict({"input_ids": [], "labels": []})
    texts = general_replay(settings.general_text, "pretrain.general_text")
    blocks = pack_blocks(texts, tokenizer, settings.block_size).shuffle(seed=settings.seed)
    wanted = round(domain_blocks * ratio / (1 - ratio))
    return blocks.select(range(min(wanted, len(blocks))))


def training_blocks(
    documents: list[str],
    pairs: list[str],
    tokenizer,
    settings: PretrainSettings,
    model_settings: ModelSettings,
) -> tuple[Dataset, dict[str, int]]:
    """The blocks pretraining trains on, and how many of them are SFT pairs and replayed general text.

    The documents (chunks and rewrites) and the SFT pairs written as text are packed together and the
    Trainer shuffles them, plus ``general_mix_ratio`` of general text. With ``pairs_first`` the pairs are
    packed apart and lead, the rest follows in one seeded shuffle, and the Trainer keeps that order in
    every epoch (pre-instruction-tuning)."""
    first = pack_blocks(pairs if settings.pairs_first else [], tokenizer, settings.block_size)
    rest = pack_blocks(
        documents if settings.pairs_first else documents + pairs, tokenizer, settings.block_size
    )
    if not len(rest):
        raise ValueError(
            f"the training chunks hold fewer tokens than one block of {settings.block_size}: "
            "lower pretrain.block_size or add documents"
        )
    mixed_in = general_blocks(settings, model_settings, tokenizer, len(rest) + len(first))
    if len(mixed_in):
        if settings.replay_loss == "distill":  # DistilledReplayTrainer tells the two kinds apart by it
            first, rest = (part.add_column("replay", [0] * len(part)) for part in (first, rest))
            mixed_in = mixed_in.add_column("replay", [1] * len(mixed_in))
        rest = concatenate_datasets([rest, mixed_in])
    if settings.pairs_first:  # the Trainer samples sequentially then, so shuffle each part here, seeded
        rest = rest.shuffle(seed=settings.seed)
        if len(first):  # an empty Dataset has no column types to concatenate with
            rest = concatenate_datasets([first.shuffle(seed=settings.seed), rest])
    return rest, {"pair_blocks": len(first), "general_blocks": len(mixed_in)}


class DistilledReplayTrainer(Trainer):
    """Replayed general blocks (``replay`` 1) are trained toward the base model's own next-token
    distribution instead of their tokens: the loss there is KL(base ‖ model) per token, the base read
    from the same model with its adapter switched off (no second copy). The documents' blocks keep the
    next-token cross-entropy. Learning without forgetting (Li & Hoiem 2016) applied to replay: a
    general block then asks the adapter to change nothing there, over the whole vocabulary, where a
    token target only names one word. The loss is a per-batch mean over predicted positions."""

    loss_is_scaled_for_ga = False  # a per-batch mean: the Trainer divides by the accumulation steps

    def __init__(self, *args, replay_weight: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.replay_weight = replay_weight  # the KL's weight against the documents' cross-entropy

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        replay = inputs.pop("replay", None)
        inputs.pop("labels", None)  # blocks are all tokens: the targets are the inputs shifted by one
        input_ids = inputs["input_ids"]
        outputs = model(**inputs)
        log_probs = outputs.logits.float().log_softmax(-1)
        per_token = -log_probs[:, :-1].gather(-1, input_ids[:, 1:, None]).squeeze(-1)
        if replay is not None and bool(replay.any()):
            rows = replay.bool()
            peft_model = self.accelerator.unwrap_model(model)
            kl = kl_from_base(peft_model, input_ids[rows], log_probs[rows])[:, :-1]
            per_token = per_token.masked_scatter(rows[:, None].expand_as(per_token), kl * self.replay_weight)
        loss = per_token.mean()
        return (loss, outputs) if return_outputs else loss


def pretrain_model(
    base: BaseModelRef, model_settings: ModelSettings, settings: PretrainSettings
) -> PeftModel:
    """The (4-bit) base, frozen, with a fresh trainable ``pretrain`` LoRA adapter (seeded init)."""
    set_seed(settings.seed)
    model = load_base_model(base, model_settings, for_training=True)
    return get_peft_model(model, lora_config(settings.lora), adapter_name=ADAPTER_NAME)


def pretrain(
    chunks_path: Path,
    base: BaseModelRef,
    model_settings: ModelSettings,
    settings: PretrainSettings,
    out_root: Path,
    on_log: StepLogger | None = None,
    checkpoint_dir: Path | None = None,
    augmented_path: Path | None = None,
) -> TrainOutput:
    """Train the ``pretrain`` LoRA adapter on the 4-bit base; returns where it was saved.

    ``augmented_path``: an augmentation folder whose texts are read beside the chunks (each text, like
    each chunk, ends with eos before the stream is cut into blocks): rewrites, and SFT pairs mixed in
    (``augment.mix_qa``), or put first in every epoch (``pretrain.pairs_first``).

    Checkpoints go to ``checkpoint_dir`` every ``save_steps``; a later call with the same folder goes on
    from the last complete one, and the folder is removed once the adapter is published."""
    tokenizer = load_tokenizer(base.path, model_settings.revision)
    rewrites, pairs = read_augmented(augmented_path, tokenizer, model_settings)
    documents = list(read_chunks(chunks_path, PRETRAIN_SIDES)["text"]) + rewrites
    train_blocks, counts = training_blocks(documents, pairs, tokenizer, settings, model_settings)
    eval_texts = list(read_chunks(chunks_path, ("eval",))["text"])
    eval_blocks = pack_blocks(eval_texts, tokenizer, settings.block_size)
    eval_blocks = eval_blocks.select(range(min(len(eval_blocks), settings.max_eval_samples)))

    model = pretrain_model(base, model_settings, settings)
    with training_dir(checkpoint_dir, out_root) as work_dir:
        distill = settings.replay_loss == "distill" and counts["general_blocks"] > 0
        replay = {"replay_weight": settings.replay_weight} if distill else {}
        trainer = (DistilledReplayTrainer if distill else Trainer)(
            model=model,
            **replay,
            args=TrainingArguments(
                **trainer_arguments(settings, work_dir, has_eval=len(eval_blocks) > 0),
                train_sampling_strategy="sequential" if settings.pairs_first else "random",
            ),
            train_dataset=train_blocks,
            eval_dataset=eval_blocks if len(eval_blocks) else None,
            data_collator=default_data_collator,
        )
        run = run_training(trainer, on_log, ADAPTER_NAME, work_dir, settings.select_checkpoint)
    eval_loss = run.eval_loss
    metrics = {
        "trainable_parameters": count_trainable(model),
        "steps": trainer.state.global_step,
        "train_blocks": len(train_blocks),
        "augmented_texts": len(rewrites) + len(pairs),
        **counts,
        "train_tokens": len(train_blocks) * settings.block_size,
        **run.metrics(),
        "eval_perplexity": math.exp(eval_loss) if eval_loss is not None else None,
    }
    return publish_training(model, ADAPTER_NAME, out_root, run, metrics, checkpoint_dir)
