"""A :class:`~docqa.synthesis.base.ChatClient` that generates in-process with a local ``transformers`` model.

For when no OpenAI-compatible server is at hand: the model (a local folder or a hub id) is loaded once and
chat requests are generated in left-padded batches of ``synthesize.batch_size``, greedy when
``temperature`` is 0. A prompt that leaves no room for the reply in the model's context is refused with
a ``failed`` reply instead of being generated: models with learned positions would crash the whole batch
on it, and the others would write past what they were trained on.

The tokenizer is loaded here rather than with :func:`docqa.modeling.load_tokenizer`: that module imports
peft and bitsandbytes (about 5 s), which synthesis never uses.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.utils import CONFIG_NAME, cached_file
from transformers.utils.hub import extract_commit_hash

from docqa.hashing import tree_digest
from docqa.outputs import TOKENIZER_FILES
from docqa.settings import SynthesizeSettings
from docqa.synthesis.base import ChatReply, ChatRequest

CLIENT_NAME = "transformers"
# Small files that shape replies: read whole by the weights digest.
CONFIG_FILES = ("config.json", "generation_config.json", "*.index.json")
# Weight files: fingerprinted by docqa.hashing.tree_digest, whole up to 64 MiB and by size plus their
# first and last 4 MiB above that, so that a multi-GB checkpoint is identified in well under a second.
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf")
# transformers' placeholder for "no limit" in tokenizer.model_max_length is 1e30.
NO_LENGTH_LIMIT = 10**20


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_chat_tokenizer(model: str):
    """The model's tokenizer, padding on the left (generation continues each row at its right end)."""
    tokenizer = AutoTokenizer.from_pretrained(model)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"the tokenizer of {model!r} has no chat template, so chat messages cannot be turned into a "
            "prompt: use an instruct/chat model for synthesize.model, or add a chat_template.jinja to "
            "the model folder"
        )
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        # Llama-2/3 ship no pad token; padding positions are masked out, so eos serves.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def weights_digest(model: str, loaded: PreTrainedModel | None = None) -> str:
    """What identifies the weights of ``model`` (a local folder or a hub id), cheaply.

    A local folder: a digest of its config, generation config and tokenizer files (content) and of its
    weight files (names, and content fingerprints that stay cheap for multi-GB shards: see
    ``WEIGHT_FILES``). Trade-off: a shard above 64 MiB rewritten with the same size and the same first
    and last 4 MiB (weights changed only in the middle of a shard) keeps its digest; other files in the
    folder (READMEs, logs) are ignored. A hub id: the commit the files were resolved to, else the id.
    """
    folder = Path(model)
    if folder.is_dir():
        return tree_digest(folder, (*CONFIG_FILES, *TOKENIZER_FILES, *WEIGHT_FILES))
    commit = getattr(loaded.config, "_commit_hash", None) if loaded is not None else None
    return commit or extract_commit_hash(cached_file(model, CONFIG_NAME), None) or model


def context_limit(model: PreTrainedModel, tokenizer) -> int | None:
    """The most tokens (prompt and reply) the model was made for, or None when it states no limit."""
    limits = [getattr(model.config.get_text_config(), "max_position_embeddings", None)]
    limits.append(tokenizer.model_max_length if tokenizer.model_max_length < NO_LENGTH_LIMIT else None)
    known = [limit for limit in limits if limit]
    return min(known) if known else None


class TransformersChatClient:
    """Chat completions from a model loaded in this process, batch by batch."""

    def __init__(self, settings: SynthesizeSettings, device: str | None = None) -> None:
        if not settings.model:
            raise ValueError("the transformers synthesis backend needs synthesize.model (a folder or hub id)")
        self.settings = settings
        self.device = torch.device(device or default_device())
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.tokenizer = load_chat_tokenizer(settings.model)
        self.model = AutoModelForCausalLM.from_pretrained(
            settings.model, dtype=dtype, device_map={"": self.device}
        )
        self.model.eval()
        self.context_limit = context_limit(self.model, self.tokenizer)
        eos = self.model.generation_config.eos_token_id
        eos = self.tokenizer.eos_token_id if eos is None else eos
        self.stop_ids = set(eos) if isinstance(eos, list) else {eos}
        self._weights = weights_digest(settings.model, self.model)

    def identity(self) -> dict[str, str]:
        return {"client": CLIENT_NAME, "model": str(self.settings.model), "weights": self._weights}

    def complete(self, requests: list[ChatRequest]) -> Iterator[ChatReply]:
        """One reply per request, a batch of ``batch_size`` at a time, yielded as each batch finishes.

        ``latency_s`` is the wall time of the reply's whole batch (padding and generating), not of the
        request alone. A request whose prompt leaves no room for ``max_tokens`` in the model's
        context is answered at once with a ``failed`` reply (``attempts=0``: it was never generated).
        """
        batch: list[tuple[ChatRequest, list[int]]] = []
        for request in requests:
            started = time.perf_counter()
            ids = self._prompt_ids(request)
            refusal = self._too_long(ids)
            if refusal is not None:
                yield ChatReply(
                    request_id=request.request_id,
                    status="failed",
                    reason=refusal,
                    attempts=0,
                    latency_s=time.perf_counter() - started,
                )
                continue
            batch.append((request, ids))
            if len(batch) == self.settings.batch_size:
                yield from self._generate(batch)
                batch = []
        if batch:
            yield from self._generate(batch)

    def _prompt_ids(self, request: ChatRequest) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            request.messages, add_generation_prompt=True, tokenize=False
        )
        # The chat template already writes the special tokens (bos) the model expects.
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _too_long(self, ids: list[int]) -> str | None:
        needed = len(ids) + self.settings.max_tokens
        if self.context_limit is None or needed <= self.context_limit:
            return None
        return (
            f"chunk too long for the model's context: {len(ids)} prompt tokens + max_tokens "
            f"{self.settings.max_tokens} = {needed} > {self.context_limit} tokens; use shorter chunks "
            "(chunk.chunk_tokens), a lower synthesize.max_tokens or a model with a longer context"
        )

    def _generate(self, batch: list[tuple[ChatRequest, list[int]]]) -> Iterator[ChatReply]:
        started = time.perf_counter()
        inputs = self.tokenizer.pad({"input_ids": [ids for _, ids in batch]}, return_tensors="pt")
        inputs = inputs.to(self.device)
        sampling = self.settings.temperature > 0
        options = {"temperature": self.settings.temperature} if sampling else {}
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=self.settings.max_tokens,
                do_sample=sampling,
                pad_token_id=self.tokenizer.pad_token_id,
                **options,
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :].tolist()
        latency_s = time.perf_counter() - started
        for (request, _), tokens in zip(batch, new_tokens, strict=True):
            content, finish_reason = self._read(tokens)
            yield ChatReply(
                request_id=request.request_id,
                status="ok",
                content=content,
                finish_reason=finish_reason,
                attempts=1,
                latency_s=latency_s,
            )

    def _read(self, tokens: list[int]) -> tuple[str, str]:
        """The reply's text (up to its first stop token) and why it ended."""
        end = next((i for i, token in enumerate(tokens) if token in self.stop_ids), None)
        if end is None:
            finish_reason = "length" if len(tokens) >= self.settings.max_tokens else "stop"
            end = len(tokens)
        else:
            finish_reason = "stop"
        return self.tokenizer.decode(tokens[:end], skip_special_tokens=True), finish_reason
