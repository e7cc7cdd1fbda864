"""Loading the base model, its tokenizer and LoRA adapters: the same code path for a tiny local
folder on CPU and a Llama checkpoint from the hub on a GPU."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from bitsandbytes.nn import Linear4bit
from peft import LoraConfig, PeftModel, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, PreTrainedModel

from docqa.outputs import BaseModelRef
from docqa.settings import LoraSettings, ModelSettings


def device() -> torch.device:
    """This process's device: under a launcher (torchrun, accelerate) each rank takes its own GPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def compute_dtype(settings: ModelSettings) -> torch.dtype:
    if settings.compute_dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return getattr(torch, settings.compute_dtype)


def load_tokenizer(path: str, revision: str | None = None):
    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    if tokenizer.pad_token is None:
        # Llama-2/3 ship no pad token; padding positions are masked, so eos serves.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def quantization_config(settings: ModelSettings) -> BitsAndBytesConfig | None:
    if not settings.load_in_4bit:
        return None
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=settings.quant_type,
        bnb_4bit_use_double_quant=settings.double_quant,
        bnb_4bit_compute_dtype=compute_dtype(settings),
        bnb_4bit_quant_storage=getattr(torch, settings.quant_storage),
    )


def load_base_model(base: BaseModelRef, settings: ModelSettings, for_training: bool) -> PreTrainedModel:
    """The base in 4-bit NF4 (QLoRA) or in the compute dtype, on the GPU when there is one."""
    model = AutoModelForCausalLM.from_pretrained(
        base.path,
        revision=settings.revision if base.source == "hub" else None,
        quantization_config=quantization_config(settings),
        dtype=compute_dtype(settings),
        device_map={"": device().index} if device().type == "cuda" else {"": "cpu"},
        attn_implementation=settings.attn_implementation,
    )
    if for_training and settings.load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        keep_4bit_weights_differentiable(model)
    return model


def keep_4bit_weights_differentiable(model: PreTrainedModel) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference in a model being trained.

    On CPUs with AVX512-BF16, bitsandbytes (0.50) converts a ``Linear4bit`` layer's weights to a packed
    layout the first time it runs in eval mode without gradients (as the Trainer's periodic evaluation
    does) and from then on multiplies through ``gemv_4bit``, which has no autograd kernel: training
    after the first evaluation would get no gradient through the base layers. Training keeps the
    differentiable layout; inference-only models keep the fast one.
    """
    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False


def lora_config(settings: LoraSettings) -> LoraConfig:
    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_adapted_model(base: BaseModelRef, settings: ModelSettings, adapters: dict[str, Path]) -> PeftModel:
    """The base with the given adapters loaded (frozen), in order; all of them active.

    The pretraining and SFT adapters are *stacked*, not merged: each LoRA adds its own low-rank update
    to the same frozen (4-bit) base weights, so no full-precision copy of the base is ever built.
    """
    names = list(adapters)
    model = load_base_model(base, settings, for_training=False)
    model = PeftModel.from_pretrained(model, str(adapters[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(str(adapters[name]), adapter_name=name)
    model.base_model.set_adapter(names)
    model.eval()
    return model


def token_stream(tokenizer, texts: list[str]) -> list[int]:
    """The texts' tokens end to end, each text followed by eos so that documents never run together."""
    ids: list[int] = []
    if not texts:  # a tokenizer refuses an empty batch (no held-out document: no held-out text)
        return ids
    for encoded in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids.extend(encoded)
        ids.append(tokenizer.eos_token_id)
    return ids


def count_trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
