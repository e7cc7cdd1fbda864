"""The embedded default base: a tiny Llama pretrained from scratch on general text, built once.

LoRA on a frozen *random* network learns almost nothing, so the offline default needs a base that
already knows some English. We train one: a byte-level BPE tokenizer and a small Llama on the
docstrings of the installed Python standard library (general technical prose that ships with every
CPython, and is not the sample corpus's domain, the Language Reference). A held-out slice of that
text is saved beside the model as the general-text reference for forgetting checks.

The result is an ordinary Hugging Face checkpoint folder, cached under ``$DOCQA_CACHE_DIR/bases``
keyed by the bootstrap settings; from then on it is loaded with ``from_pretrained`` like any other.
"""

from __future__ import annotations

import ast
import inspect
import logging
import math
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    get_cosine_schedule_with_warmup,
)

from docqa.modeling import token_stream
from docqa.outputs import bootstrap_dir
from docqa.settings import BootstrapSettings
from docqa.workspace import new_tmp_dir, publish_dir, write_json_atomic

log = logging.getLogger(__name__)

SKIPPED_STDLIB_PARTS = {"site-packages", "test", "tests", "idle_test", "pydoc_data", "__pycache__"}
MIN_DOCSTRING_CHARS = 40
GENERAL_HELDOUT_FILE = "general_heldout.txt"
BOS, EOS, PAD = "<|endoftext|>", "<|end|>", "<|pad|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
# Zephyr-style: each turn is "<|role|>\ncontent<|end|>\n"; generation stops at <|end|> (the eos token).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def stdlib_docstrings(limit_chars: int) -> list[str]:
    """Docstrings of the standard library's modules, classes and functions, in a stable order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    texts: list[str] = []
    total = 0
    for path in sorted(root.rglob("*.py")):
        if SKIPPED_STDLIB_PARTS.intersection(path.relative_to(root).parts):
            continue
        for text in _docstrings(path):
            texts.append(text)
            total += len(text)
            if total >= limit_chars:
                return texts
    return texts


def _docstrings(path: Path) -> Iterator[str]:
    try:
        tree = ast.parse(path.read_bytes())
    except SyntaxError:  # a few stdlib files are templates or target another Python; not general text
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            text = ast.get_docstring(node)
            if text and len(text) >= MIN_DOCSTRING_CHARS:
                yield inspect.cleandoc(text)


def split_general_text(texts: list[str], heldout_fraction: float) -> tuple[list[str], list[str]]:
    """Every k-th distinct text is held out, so both parts sample the whole library. Distinct: the
    library repeats some docstrings word for word (overridden methods), which would otherwise land on
    both sides and put trained-on text into the forgetting reference."""
    texts = list(dict.fromkeys(texts))
    every = max(2, round(1 / heldout_fraction))
    heldout = [t for i, t in enumerate(texts) if i % every == every - 1]
    train = [t for i, t in enumerate(texts) if i % every != every - 1]
    return train, heldout


DATA_DIR = Path(__file__).parent / "data"
GENERAL_REFERENCE_FILE = DATA_DIR / "alice.txt"
GENERAL_REFERENCE_SOURCE = "Alice's Adventures in Wonderland (Lewis Carroll, 1865), shipped with docqa"
GENERAL_REPLAY_FILE = DATA_DIR / "as_you_like_it.txt"


def general_reference() -> list[str]:
    """The default forgetting reference, one text per chapter: *Alice's Adventures in Wonderland*, general
    English outside any technical domain, shipped offline (``docqa/data/SOURCE.md``). Never trained on:
    the default replay text is another book (:func:`general_replay`)."""
    text = GENERAL_REFERENCE_FILE.read_text(encoding="utf-8")
    return [f"CHAPTER {part}".strip() for part in text.split("CHAPTER ")[1:]]


def general_replay(path: str | None = None, setting: str = "general_text") -> list[str]:
    """The general text that training replays against forgetting (``pretrain.general_mix_ratio``,
    ``sft.general_kl_weight``): the UTF-8 file ``path``, else Shakespeare's *As You Like It*, shipped
    offline, by another author in another form than the forgetting reference, so that replay cannot pass
    the forgetting gate by rehearsing the reference's own style and names."""
    if path is None:
        return [GENERAL_REPLAY_FILE.read_text(encoding="utf-8")]
    if not Path(path).is_file():
        raise FileNotFoundError(f"{setting} {path} is not a file; give a UTF-8 text file")
    return [Path(path).read_text(encoding="utf-8")]


def general_text_split(settings: BootstrapSettings) -> tuple[list[str], list[str]]:
    """The standard library's docstrings split as the bootstrap base splits them: (train, held out).

    The bootstrap base trains on the first part and keeps the second beside it as its forgetting
    reference (``general_heldout.txt``)."""
    return split_general_text(stdlib_docstrings(settings.general_text_chars), settings.heldout_fraction)


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD, *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(settings: BootstrapSettings, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=settings.hidden_size,
        intermediate_size=settings.intermediate_size,
        num_hidden_layers=settings.num_layers,
        num_attention_heads=settings.num_heads,
        num_key_value_heads=settings.num_heads,
        max_position_embeddings=settings.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(settings.seed)
    return LlamaForCausalLM(config)


def train_from_scratch(
    model: LlamaForCausalLM, stream: torch.Tensor, settings: BootstrapSettings
) -> list[float]:
    """All parameters, random contiguous blocks of the token stream, AdamW with cosine decay."""
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.1)
    schedule = get_cosine_schedule_with_warmup(optimizer, settings.warmup_steps, settings.max_steps)
    starts_limit = len(stream) - settings.block_size - 1
    if starts_limit <= 0:
        raise ValueError(
            f"bootstrap text has {len(stream)} tokens, fewer than one block of {settings.block_size}: "
            "raise model.bootstrap.general_text_chars"
        )
    model.train()
    losses = []
    for _ in range(settings.max_steps):
        starts = torch.randint(0, starts_limit, (settings.batch_size,), generator=generator)
        batch = torch.stack([stream[s : s + settings.block_size] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def block_perplexity(model: LlamaForCausalLM, stream: torch.Tensor, block_size: int) -> float:
    """Perplexity over non-overlapping blocks (a quick figure for the bootstrap's own record)."""
    blocks = stream[: len(stream) // block_size * block_size].view(-1, block_size)
    if not len(blocks):
        raise ValueError("held-out general text is shorter than one block")
    losses = [model(input_ids=b.unsqueeze(0), labels=b.unsqueeze(0)).loss.item() for b in blocks]
    return math.exp(sum(losses) / len(losses))


def ensure_bootstrap_base(settings: BootstrapSettings) -> tuple[Path, bool]:
    """The cached base folder, built now if missing. Returns (folder, built_now)."""
    final = bootstrap_dir(settings)
    if (final / "config.json").is_file():
        return final, False
    started = time.perf_counter()
    texts = stdlib_docstrings(settings.general_text_chars)
    train_texts, heldout_texts = split_general_text(texts, settings.heldout_fraction)
    tokenizer = train_tokenizer(train_texts, settings.vocab_size)
    model = build_model(settings, tokenizer)
    log.info(
        "bootstrapping a %.1fM-parameter base on %d docstrings", model.num_parameters() / 1e6, len(texts)
    )
    losses = train_from_scratch(model, torch.tensor(token_stream(tokenizer, train_texts)), settings)
    heldout = torch.tensor(token_stream(tokenizer, heldout_texts))
    heldout_ppl = block_perplexity(model, heldout, settings.block_size)
    tmp = new_tmp_dir(final.parent)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / GENERAL_HELDOUT_FILE).write_text("\n\n".join(heldout_texts), encoding="utf-8")
    write_json_atomic(
        tmp / "bootstrap.json",
        {
            "settings": settings.model_dump(),
            "parameters": model.num_parameters(),
            "train_texts": len(train_texts),
            "heldout_texts": len(heldout_texts),
            "final_train_loss": sum(losses[-10:]) / len(losses[-10:]),
            "general_heldout_perplexity": heldout_ppl,
            "seconds": time.perf_counter() - started,
        },
    )
    return publish_dir(tmp, final), True
