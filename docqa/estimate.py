"""``docqa estimate``: what a run would process and how long each stage should take, before anything runs.

It reads page counts (pypdf, no text extraction), the text of a few pages of each document, the base
model's ``tokenizer.json`` and ``config.json`` when they are on disk, and the throughputs the benchmarks
measured (``docs/throughputs.json``). It loads no model, trains nothing and sends no request.

Every time shown comes from a named measurement, used as measured or scaled by a stated rule (FLOPs per
token: 6·N for training, 2·N for a forward pass, N the parameter count), or it is ``unknown`` with the
reason and the benchmark command that would measure it. Nothing is invented to fill a gap.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError
from rich.console import Console
from rich.table import Table

from docqa.bases import TINY_BOOTSTRAP, prepared_embedded_dir
from docqa.hashing import sha256_file
from docqa.outputs import bootstrap_dir
from docqa.settings import IngestSettings, Recipe, TrainSettings
from docqa.split import document_sides
from docqa.stages.ingest import (
    MALFORMED_PDF_ERRORS,
    PDF_SUFFIX,
    clean_pages,
    extraction_processes,
    list_documents,
)

DEFAULT_THROUGHPUTS = Path(__file__).resolve().parent.parent / "docs" / "throughputs.json"

# --- reading the documents ---------------------------------------------------------------------------
PDF_SAMPLE_PAGES = 8  # pages of a PDF whose text is read (evenly spread); the rest are extrapolated
TEXT_SAMPLE_CHARS = 200_000  # characters of a text file that are tokenised; the rest are extrapolated
CHARS_PER_TEXT_PAGE = 3_000  # a printed page of prose; text files have no pages (ingest counts each as one)
# Without the tokenizer: the usual ratio for English prose with a Llama-style BPE tokenizer.
CHARS_PER_TOKEN = 4.0
# langchain's recursive splitter cuts at paragraph, line and word ends, so a chunk holds less than
# chunk_tokens: on the sample corpus and the test topics, chunk counts at 96/12, 256/32 and 512/64 tokens
# were 1.07, 1.11 and 1.23 × ceil((T - overlap) / (chunk - overlap)); this share is fitted to them.
CHUNK_FILL = 0.88
# --- synthesis, when throughputs.json holds no acceptance figure, and SFT example length ------------------
ASSUMED_ACCEPTANCE = 0.8  # accepted pairs per requested pair
ASSUMED_QUESTION_WORDS = 15
ASSUMED_ANSWER_SHARE = 0.5  # of synthesize.max_answer_words
CHARS_PER_WORD = 6  # English, space included
# --- knowledge augmentation: a rewrite's tokens per token of its chunk --------------------------------
# The rules keep a chunk's prose sentences: a facts list drops its headings and fragments, entity notes
# repeat the sentences that name each term. Measured on the sample corpus's training chunks (facts 0.64,
# entities 1.18); the test topics' short synthetic sentences give about half as much. Shuffled and
# rephrased keep every sentence; an LLM's rewrite is taken as the chunk's length.
REWRITE_TOKENS_PER_CHUNK_TOKEN = {"facts": 0.65, "entities": 1.2, "shuffled": 1.0, "rephrased": 1.0}
LLM_REWRITE_TOKENS_PER_CHUNK_TOKEN = 1.0
# A replayed block under pretrain.replay_loss=distill (and sft.general_kl_weight's block) also runs the
# base forward (no backward): about a third of a training step (forward + backward ≈ 3 forwards).
DISTILL_EXTRA_STEP_COST = 1 / 3
# --- scaling measurements between model sizes ---------------------------------------------------------
TRAIN_FLOPS_PER_PARAMETER = 6  # forward + backward, per token
FORWARD_FLOPS_PER_PARAMETER = 2
# Beyond a factor of ten in size, fixed per-step costs (Python, kernel launches, 4-bit dequantisation)
# break the proportionality of time to FLOPs: such a scaled figure would be a guess.
MAX_SCALE = 10.0
EVAL_ANSWER_PASSES = 3  # every question is answered by the base, the pretrained and the final model
EVAL_OPEN_BOOK_PASSES = 2  # knowledge questions answered open-book by the base: oracle and RAG
EVAL_PPL_STATES = 3  # perplexity of base, pretrained and final on trained and on held-out text
EVAL_GENERAL_STATES = 3  # general-text perplexity of base, pretrained and final
SECONDS_PER_HOUR = 3600

# Published shapes of the bases the shipped recipes name, for when their config.json is not on disk.
KNOWN_ARCHITECTURES: dict[str, dict[str, int | bool]] = {
    "meta-llama/Llama-2-7b-hf": {
        "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 32, "tie_word_embeddings": False,
    },
    "meta-llama/Llama-2-13b-hf": {
        "vocab_size": 32000, "hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40,
        "num_attention_heads": 40, "num_key_value_heads": 40, "tie_word_embeddings": False,
    },
    "meta-llama/Meta-Llama-3-8B": {
        "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "tie_word_embeddings": False,
    },
    # the embedded default (model.embedded), as converted from its GGUF file
    "smollm2-135m-instruct": {
        "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
        "num_attention_heads": 9, "num_key_value_heads": 3, "tie_word_embeddings": True,
    },
}  # fmt: skip
LLAMA_LIKE = ("llama", "mistral")  # no biases, gated MLP, RMS norms: the formula below holds

MEASURE = {
    "ingest": "python bench/ingest_scaling.py",
    "chunk": "python bench/pipeline_cache.py",
    "extractive": "python bench/pipeline_cache.py",
    "openai": "python bench/synthesis_concurrency.py --base-url {base_url} --model {model} --concurrency {n}",
    "transformers": "serve the model (vLLM, `transformers serve`) and run "
    "python bench/synthesis_concurrency.py --base-url URL --model NAME",
    "train-cpu": "python bench/sft_packing.py",
    "train-gpu": "python bench/gpu_qlora.py on a GPU machine (its docstring gives the set-up)",
    "generate": "python bench/generation_batching.py on the target device (it measures the bootstrap base)",
}

Device = Literal["cpu", "gpu"]
Metric = Literal[
    "pages_per_s",
    "chunks_per_s",
    "requests_per_s",
    "tokens_per_s",
    "questions_per_s",
    "acceptance_rate",
    "tokens_per_example",
    "run_seconds",
    "parallel_efficiency",
]
UNITS: dict[str, str] = {
    "pages_per_s": "pages/s",
    "chunks_per_s": "chunks/s",
    "requests_per_s": "requests/s",
    "tokens_per_s": "tokens/s",
    "questions_per_s": "answers/s",
    "acceptance_rate": "accepted pairs per requested pair",
    "tokens_per_example": "tokens per example",
    "run_seconds": "s per run",
    "parallel_efficiency": "of linear speed-up",
}


# --- the throughput file ------------------------------------------------------------------------------


class Figure(BaseModel):
    """One measured figure, as a benchmark recorded it."""

    model_config = ConfigDict(extra="forbid")

    stage: Literal["ingest", "chunk", "synthesize", "train", "generate", "sft", "pipeline"]
    metric: Metric
    value: float
    device_kind: Literal["cpu", "gpu", "server"]
    device: str  # the machine, in words
    model: str  # what ran: a base, a served model, a test double
    parameters: int | None = None  # of that model, when it is one
    backend: str | None = None  # synthesis backend
    conditions: dict[str, Any] = {}  # batch size, lengths, concurrency, ... as measured
    note: str = ""
    source: str  # where the figure is published
    date: str
    command: str


class ThroughputFile(BaseModel):
    """docs/throughputs.json: each benchmark merges its figures in by key (bench.report.record_figures)."""

    model_config = ConfigDict(extra="forbid")

    about: str
    figures: dict[str, Figure]


def load_figures(path: Path) -> tuple[dict[str, Figure], str | None]:
    """The figures in ``path``, and why there are none when the file is missing (a bad file raises)."""
    if not path.is_file():
        return {}, f"{path} does not exist"
    return ThroughputFile.model_validate_json(path.read_text(encoding="utf-8")).figures, None


# --- the estimate -----------------------------------------------------------------------------------


class DocumentEstimate(BaseModel):
    name: str
    kind: Literal["pdf", "text"]
    pages: int = 0  # PDF pages; text files: characters / CHARS_PER_TEXT_PAGE, rounded up
    pages_read: int = 0  # pages (or text-file samples) whose text was read
    chars: int = 0
    tokens: int = 0
    chunks: int = 0
    split: Literal["train", "eval"] | None = None  # None: not chunked (a duplicate, or unreadable)
    duplicate_of: str | None = None
    problem: str | None = None  # why ingest would fail this file


class StageRow(BaseModel):
    stage: str
    quantity: float
    unit: str
    detail: str
    device: str  # cpu, gpu, or the LLM server
    throughput: float | None = None
    throughput_unit: str | None = None
    source: str | None = None  # the figure used and how (measured, scaled by a rule)
    seconds: float | None = None  # None: unknown
    gpu_hours: float | None = None
    unknown: str | None = None  # why there is no time, and what would measure it


class Work(BaseModel):
    """What a run would process, before any time is attached."""

    documents: int
    pages: int
    tokens: int
    chars_per_token: float
    chunks: int
    train_chunks: int
    eval_chunks: int
    train_tokens: int
    heldout_tokens: int
    synthesis_requests: int  # one per chunk
    pairs_requested: int
    judge_requests: int  # one per pair the filters keep
    acceptance_rate: float
    acceptance_source: str
    qa_train: int
    qa_knowledge: int
    qa_eval: int
    pretrain_blocks: int
    pretrain_steps: int
    pretrain_tokens: int  # processed, all epochs
    sft_example_tokens: float
    sft_example_source: str
    sft_examples: int
    sft_rows: int
    sft_steps: int
    sft_tokens: int  # processed, all epochs
    eval_questions: int  # closed-book questions over the three sets
    open_book_questions: int  # knowledge questions asked again with passages (oracle, RAG)
    scored_tokens: int  # forward tokens of the perplexity windows, every state


class Estimate(BaseModel):
    recipe: str
    docs: str
    device: Device
    device_reason: str
    model: str
    parameters: int | None
    parameters_source: str
    token_method: str
    tokenizer_used: bool  # tokens counted with the model's tokenizer (on the pages read)
    documents: list[DocumentEstimate]
    work: Work
    rows: list[StageRow]
    total_seconds: float | None  # None when a stage's time is unknown
    known_seconds: float
    gpu_hours: float | None
    throughputs: str  # the file read, or why there was none
    figures_used: dict[str, Figure]
    notes: list[str]


@dataclass(frozen=True)
class Rate:
    value: float
    unit: str
    label: str  # how the figure was used
    keys: tuple[str, ...]  # the figures it came from


@dataclass(frozen=True)
class Unknown:
    reason: str


# --- model size and tokenizer ---------------------------------------------------------------------------


def llama_parameters(config: dict[str, Any]) -> int:
    """Every parameter of a Llama-shaped causal LM (no biases; lm_head counted unless tied)."""
    hidden, vocab = config["hidden_size"], config["vocab_size"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    kv = config.get("num_key_value_heads", heads) * head_dim
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv
    layer = attention + 3 * hidden * config["intermediate_size"] + 2 * hidden
    lm_head = 0 if config.get("tie_word_embeddings", False) else vocab * hidden
    return vocab * hidden + config["num_hidden_layers"] * layer + hidden + lm_head


def _local_file(recipe: Recipe, filename: str) -> tuple[Path | None, str]:
    """``filename`` of the recipe's base on this disk (bootstrap folder, local folder, hub cache)."""
    base = recipe.model.base
    if not base and recipe.model.embedded == TINY_BOOTSTRAP:
        path = bootstrap_dir(recipe.model.bootstrap) / filename
        if path.is_file():
            return path, f"the bootstrap base's {path}"
        return None, f"{path} is not built yet"
    if not base:
        folder = prepared_embedded_dir(recipe.model.embedded)
        if folder is not None and (folder / filename).is_file():
            return folder / filename, f"the embedded base's {folder / filename}"
        return None, f"the embedded base {recipe.model.embedded} is not prepared yet"
    if Path(base).is_dir():
        path = Path(base) / filename
        return (path, str(path)) if path.is_file() else (None, f"{base} has no {filename}")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(base, filename, revision=recipe.model.revision)
    if isinstance(cached, str):
        return Path(cached), f"{base}'s {filename} in the Hugging Face cache"
    return None, f"{base}'s {filename} is not in the local Hugging Face cache"


def model_size(recipe: Recipe) -> tuple[str, int | None, str]:
    """(name, parameter count or None, where the count came from)."""
    name = recipe.model.base or recipe.model.embedded
    config_path, where = _local_file(recipe, "config.json")
    if config_path is not None:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if config.get("model_type") not in LLAMA_LIKE:
            return (
                name,
                None,
                f"{where}: no parameter formula here for model_type {config.get('model_type')!r}",
            )
        return name, llama_parameters(config), f"computed from {where}"
    if not recipe.model.base and recipe.model.embedded in KNOWN_ARCHITECTURES:
        config = KNOWN_ARCHITECTURES[recipe.model.embedded]
        return name, llama_parameters(config), "its published architecture (not prepared yet)"
    if not recipe.model.base:
        shape = recipe.model.bootstrap
        config = {
            "vocab_size": shape.vocab_size,
            "hidden_size": shape.hidden_size,
            "intermediate_size": shape.intermediate_size,
            "num_hidden_layers": shape.num_layers,
            "num_attention_heads": shape.num_heads,
            "tie_word_embeddings": True,  # as docqa.bootstrap builds it
        }
        return name, llama_parameters(config), "computed from model.bootstrap (the base is not built yet)"
    if recipe.model.base in KNOWN_ARCHITECTURES:
        return name, llama_parameters(KNOWN_ARCHITECTURES[recipe.model.base]), "its published architecture"
    return name, None, f"{where}, and it is not among the known architectures"


@dataclass(frozen=True)
class TokenCounter:
    count: Callable[[str], int]
    method: str
    from_tokenizer: bool


def token_counter(recipe: Recipe) -> TokenCounter:
    """The base's tokenizer when its tokenizer.json is on disk, else characters / CHARS_PER_TOKEN."""
    path, where = _local_file(recipe, "tokenizer.json")
    if path is None:
        return TokenCounter(
            count=lambda text: round(len(text) / CHARS_PER_TOKEN),
            method=f"APPROXIMATION: {CHARS_PER_TOKEN:g} characters per token ({where})",
            from_tokenizer=False,
        )
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    return TokenCounter(
        count=lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids),
        method=f"the model's tokenizer ({where})",
        from_tokenizer=True,
    )


# --- documents -----------------------------------------------------------------------------------------


def sample_indices(n_pages: int, wanted: int) -> list[int]:
    """``wanted`` page indices spread evenly over ``n_pages`` (all of them when there are fewer)."""
    if n_pages <= wanted:
        return list(range(n_pages))
    return sorted({round(i * (n_pages - 1) / (wanted - 1)) for i in range(wanted)})


def read_pdf_sample(path: Path, mode: str) -> tuple[int, list[str]]:
    """(pages, raw text of the sampled pages); pages are counted from the page tree, not extracted."""
    reader = PdfReader(path)
    if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
        raise FileNotDecryptedError("encrypted with a user password")
    n_pages = len(reader.pages)
    return n_pages, [
        reader.pages[i].extract_text(extraction_mode=mode) for i in sample_indices(n_pages, PDF_SAMPLE_PAGES)
    ]


def _kind(path: Path) -> Literal["pdf", "text"]:
    return "pdf" if path.suffix.lower() == PDF_SUFFIX else "text"


def survey_document(path: Path, recipe: Recipe, counter: TokenCounter) -> DocumentEstimate:
    """Pages, characters and tokens of one file (extrapolated from the pages read), or why ingest fails it."""
    kind = _kind(path)
    blank = DocumentEstimate(name=path.name, kind=kind)
    size = path.stat().st_size
    if size == 0:
        return blank.model_copy(update={"problem": "the file is empty (0 bytes)"})
    if size > recipe.ingest.max_file_mb * 2**20:
        return blank.model_copy(
            update={"problem": f"larger than ingest.max_file_mb={recipe.ingest.max_file_mb:g}"}
        )
    if kind == "pdf":
        try:
            n_pages, raw = read_pdf_sample(path, recipe.ingest.pdf_extraction_mode)
        except DependencyError:
            raise  # a missing package is the installation's fault, not the file's
        except MALFORMED_PDF_ERRORS as err:  # ingest records these as the file's fault, and so does this
            return blank.model_copy(update={"problem": f"pypdf cannot read it ({type(err).__name__}: {err})"})
        scale = n_pages / len(raw) if raw else 0.0
    else:
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError:
            return blank.model_copy(update={"problem": "not valid UTF-8 text"})
        raw = [text[:TEXT_SAMPLE_CHARS]]
        scale = len(text) / len(raw[0]) if raw[0] else 0.0
        n_pages = max(1, math.ceil(len(text) / CHARS_PER_TEXT_PAGE))
    pages = clean_pages(raw, recipe.ingest)
    chars = round(sum(len(page) for page in pages) * scale)
    tokens = round(counter.count("\n\n".join(pages)) * scale)
    found = blank.model_copy(
        update={"pages": n_pages, "pages_read": len(raw), "chars": chars, "tokens": tokens}
    )
    if chars == 0:
        return found.model_copy(update={"problem": "no text could be extracted (a scan without OCR?)"})
    if kind == "pdf" and chars / n_pages < recipe.ingest.min_chars_per_page:
        return found.model_copy(
            update={"problem": f"{chars / n_pages:.0f} characters a page: probably scanned (ingest fails it)"}
        )
    return found.model_copy(update={"chunks": estimate_chunks(tokens, recipe)})


def estimate_chunks(tokens: int, recipe: Recipe) -> int:
    """Chunks of a document of ``tokens`` tokens: its stride is CHUNK_FILL of (chunk - overlap)."""
    size, overlap = recipe.chunk.chunk_tokens, recipe.chunk.overlap_tokens
    if tokens < recipe.chunk.min_chunk_tokens:
        return 0
    if tokens <= size:
        return 1
    return math.ceil((tokens - overlap) / (CHUNK_FILL * (size - overlap)))


def survey(docs: Path, recipe: Recipe, counter: TokenCounter) -> list[DocumentEstimate]:
    """Every document ingest would read; identical files counted once, as ingest does."""
    seen: dict[str, str] = {}
    found: list[tuple[DocumentEstimate, str | None]] = []
    for path in list_documents(docs, recipe.ingest):
        digest = sha256_file(path)
        if digest in seen:
            found.append(
                (DocumentEstimate(name=path.name, kind=_kind(path), duplicate_of=seen[digest]), None)
            )
            continue
        seen[digest] = path.name
        found.append((survey_document(path, recipe, counter), digest))
    readable = [(document.name, digest) for document, digest in found if digest and document.problem is None]
    sides = document_sides(readable, recipe.split)
    return [
        document.model_copy(update={"split": sides[digest]}) if digest in sides else document
        for document, digest in found
    ]


# --- choosing and scaling measured figures --------------------------------------------------------------


def _fmt_count(value: float) -> str:
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def _fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _size_ratio(figure: Figure, parameters: int | None) -> float:
    if figure.parameters is None or parameters is None:
        return math.inf
    ratio = figure.parameters / parameters
    return max(ratio, 1 / ratio)


def scaled_rate(
    key: str, figure: Figure, parameters: int | None, flops: int, extra: float = 1.0, extra_label: str = ""
) -> Rate | Unknown:
    """``figure`` as is for a model of its size, else scaled by N_measured / N (time ∝ flops·N·T)."""
    if figure.parameters is None or parameters is None:
        return Unknown(
            f"{key} was measured on {figure.model}; the parameter count needed to compare is unknown"
        )
    factor = figure.parameters / parameters
    if _size_ratio(figure, parameters) > MAX_SCALE:
        return Unknown(
            f"the nearest figure, {key}, was measured at {_fmt_count(figure.parameters)} parameters; "
            f"{_fmt_count(parameters)} is more than {MAX_SCALE:g}× away, too far to scale"
        )
    value = figure.value * factor * extra
    how = "measured"
    if factor != 1:
        how = (
            f"scaled ×{factor:.3g} from {_fmt_count(figure.parameters)} to {_fmt_count(parameters)} "
            f"parameters ({flops}·N FLOPs per token)"
        )
    if extra_label:
        how += f"; {extra_label}"
    return Rate(value, UNITS[figure.metric], f"{how}: {key}", (key,))


def _candidates(figures: dict[str, Figure], **wanted: Any) -> list[tuple[str, Figure]]:
    return [(k, f) for k, f in figures.items() if all(getattr(f, n) == v for n, v in wanted.items())]


def training_rate(
    figures: dict[str, Figure], device: Device, parameters: int | None, packing: bool
) -> Rate | Unknown:
    found = _candidates(figures, stage="train", metric="tokens_per_s", device_kind=device)
    if not found:
        return Unknown(
            f"no {device.upper()} training throughput in the throughputs file; measure it: "
            f"{MEASURE['train-' + device]}"
        )
    key, figure = min(
        found, key=lambda kf: (_size_ratio(kf[1], parameters), kf[1].conditions.get("packing") != packing)
    )
    caveat = ""
    if figure.conditions.get("packing") != packing:
        caveat = f"measured with packing={figure.conditions.get('packing')}, the stage uses packing={packing}"
    rate = scaled_rate(key, figure, parameters, TRAIN_FLOPS_PER_PARAMETER, extra_label=caveat)
    if isinstance(rate, Unknown):
        return Unknown(f"{rate.reason}; measure it: {MEASURE['train-' + device]}")
    return rate


def generation_rate(
    figures: dict[str, Figure], device: Device, parameters: int | None, batch_size: int, new_tokens: int
) -> Rate | Unknown:
    found = _candidates(figures, stage="generate", metric="questions_per_s", device_kind=device)
    if not found:
        return Unknown(
            f"no {device.upper()} generation throughput measured; measure it: {MEASURE['generate']}"
        )
    key, figure = min(
        found,
        key=lambda kf: (
            _size_ratio(kf[1], parameters),
            abs(kf[1].conditions.get("batch_size", 0) - batch_size),
        ),
    )
    measured_tokens = figure.conditions["max_new_tokens"]
    caveats = []
    if measured_tokens != new_tokens:  # decoding dominates: time ∝ new tokens
        caveats.append(
            f"×{measured_tokens / new_tokens:.3g} for {new_tokens} new tokens, not {measured_tokens}"
        )
    if figure.conditions.get("batch_size") != batch_size:
        caveats.append(
            f"measured at batch {figure.conditions.get('batch_size')}, the recipe uses {batch_size}"
        )
    factor = measured_tokens / new_tokens
    rate = scaled_rate(key, figure, parameters, FORWARD_FLOPS_PER_PARAMETER, factor, "; ".join(caveats))
    if isinstance(rate, Unknown):
        return Unknown(f"{rate.reason}; measure it: {MEASURE['generate']}")
    return rate


def scoring_rate(figures: dict[str, Figure], device: Device, parameters: int | None) -> Rate | Unknown:
    """Forward-only tokens/s, from a training figure: 2·N FLOPs per token against 6·N."""
    rate = training_rate(figures, device, parameters, packing=True)
    if isinstance(rate, Unknown):
        return rate
    factor = TRAIN_FLOPS_PER_PARAMETER / FORWARD_FLOPS_PER_PARAMETER
    label = f"training rate ×{factor:g} (a forward pass is 2·N FLOPs per token, training 6·N); {rate.label}"
    return Rate(rate.value * factor, rate.unit, label, rate.keys)


def cpu_stage_rate(
    figures: dict[str, Figure], stage: str, metric: str, measure: str, **wanted: Any
) -> Rate | Unknown:
    """The latest CPU figure of a stage that runs on the CPU whatever the recipe (time ∝ its quantity)."""
    found = _candidates(figures, stage=stage, metric=metric, device_kind="cpu", **wanted)
    if not found:
        return Unknown(f"no {stage} throughput measured; measure it: {measure}")
    key, figure = max(found, key=lambda kf: kf[1].date)
    return Rate(figure.value, UNITS[figure.metric], f"measured: {key}", (key,))


def ingest_rate_of(figures: dict[str, Figure], settings: IngestSettings, documents: int) -> Rate | Unknown:
    """Pages/s with the recipe's ``ingest.workers`` processes (0: this machine's cores): the measured
    one-process rate × processes × the measured parallel efficiency (linear when none was measured)."""
    found = _candidates(figures, stage="ingest", metric="pages_per_s", device_kind="cpu")
    per_process = [(k, f) for k, f in found if f.conditions.get("processes") == 1]
    if not per_process:  # a whole-stage figure (bench/pipeline_cache.py), one process
        return cpu_stage_rate(figures, "ingest", "pages_per_s", MEASURE["ingest"])
    key, figure = max(per_process, key=lambda kf: kf[1].date)
    processes = extraction_processes(settings, documents)
    if processes == 1:
        return Rate(figure.value, UNITS["pages_per_s"], f"measured: {key}", (key,))
    efficiency = _candidates(figures, stage="ingest", metric="parallel_efficiency")
    if not efficiency:
        label = f"measured: {key} × {processes} processes (linear speed-up assumed: not measured)"
        return Rate(figure.value * processes, UNITS["pages_per_s"], label, (key,))
    eff_key, eff = max(efficiency, key=lambda kf: kf[1].date)
    used = min(eff.value, 1.0)  # a noisy run can measure more than linear; never promise that
    label = (
        f"measured: {key} × {processes} processes × {used:.2f} ({eff_key}, at "
        f"{eff.conditions.get('processes')} processes)"
    )
    return Rate(figure.value * processes * used, UNITS["pages_per_s"], label, (key, eff_key))


def synthesis_rate(figures: dict[str, Figure], recipe: Recipe, device: Device) -> Rate | Unknown:
    settings = recipe.synthesize
    if settings.backend == "extractive":
        return cpu_stage_rate(
            figures, "synthesize", "requests_per_s", MEASURE["extractive"], backend="extractive"
        )
    kind = "server" if settings.backend == "openai" else device
    found = _candidates(
        figures,
        stage="synthesize",
        metric="requests_per_s",
        backend=settings.backend,
        device_kind=kind,
        model=settings.model,
    )
    if not found:
        command = MEASURE[settings.backend].format(
            base_url=settings.base_url, model=settings.model, n=settings.concurrency
        )
        return Unknown(
            f"no throughput measured for {settings.model} ({settings.backend}); measure it: {command}"
        )
    key, figure = min(
        found, key=lambda kf: abs(kf[1].conditions.get("concurrency", 1) - settings.concurrency)
    )
    label = f"measured: {key}"
    if figure.conditions.get("concurrency") != settings.concurrency:
        label += (
            f"; at {figure.conditions.get('concurrency')} in flight, the recipe sends {settings.concurrency}"
        )
    return Rate(figure.value, UNITS[figure.metric], label, (key,))


def acceptance(figures: dict[str, Figure], recipe: Recipe) -> tuple[float, str, tuple[str, ...]]:
    """Accepted pairs per requested pair: measured with this generator, else with another model of the same
    backend (labelled so), else assumed. Backends differ too much (rules against an LLM) to share figures."""
    settings = recipe.synthesize
    found = _candidates(figures, stage="synthesize", metric="acceptance_rate", backend=settings.backend)
    same = [(k, f) for k, f in found if settings.backend == "extractive" or f.model == settings.model]
    if found:
        key, figure = max(same or found, key=lambda kf: kf[1].date)
        how = "measured" if same else f"measured with {figure.model}, not {settings.model}"
        return figure.value, f"{how}: {key} ({figure.date})", (key,)
    reason = f"no {settings.backend} acceptance figure in the throughputs file"
    return ASSUMED_ACCEPTANCE, f"ASSUMED {ASSUMED_ACCEPTANCE:g}: {reason}", ()


def sft_example_tokens(
    figures: dict[str, Figure], recipe: Recipe, parameters: int | None, chars_per_token: float
) -> tuple[float, str, tuple[str, ...]]:
    """Tokens in one SFT example: measured with this generator and a model of this size (so the same
    tokenizer, in practice), else from assumed lengths."""
    for key, figure in _candidates(figures, stage="sft", metric="tokens_per_example"):
        if figure.backend == recipe.synthesize.backend and figure.parameters == parameters:
            return figure.value, f"measured: {key} ({figure.date})", (key,)
    words = ASSUMED_QUESTION_WORDS + ASSUMED_ANSWER_SHARE * recipe.synthesize.max_answer_words
    tokens = (words * CHARS_PER_WORD + len(recipe.model.prompt_template)) / chars_per_token
    source = (
        f"ASSUMED {tokens:.0f} tokens: a {ASSUMED_QUESTION_WORDS}-word question, an answer of "
        f"{ASSUMED_ANSWER_SHARE:g} × max_answer_words, the prompt template, {CHARS_PER_WORD} characters a "
        f"word, {chars_per_token:.2f} characters a token"
    )
    return tokens, source, ()


# --- stage quantities -----------------------------------------------------------------------------------


def steps_per_epoch(rows: int, settings: TrainSettings) -> int:
    """Optimizer steps in one pass over ``rows`` training rows, as the Trainer counts them."""
    batches = math.ceil(rows / (settings.batch_size * settings.num_processes))
    return max(batches // settings.gradient_accumulation_steps, 1)


def optimizer_steps(rows: int, settings: TrainSettings) -> int:
    """Optimizer steps the Trainer takes (max_steps wins when set)."""
    if settings.max_steps > 0:
        return settings.max_steps
    return math.ceil(settings.epochs * steps_per_epoch(rows, settings))


def rows_per_step(settings: TrainSettings) -> int:
    return settings.batch_size * settings.gradient_accumulation_steps * settings.num_processes


def mixed(count: int, ratio: float) -> int:
    """``count`` domain rows plus the general rows a mix ratio adds (the stages' rule)."""
    return count + round(count * ratio / (1 - ratio))


def timed_row(
    stage: str,
    quantity: float,
    unit: str,
    detail: str,
    device: str,
    rate: Rate | Unknown,
    processes: int = 1,
) -> StageRow:
    """A stage's row: its work, and the time at ``rate`` (× ``processes`` run side by side, DDP)."""
    common = {"stage": stage, "quantity": quantity, "unit": unit, "detail": detail, "device": device}
    if isinstance(rate, Unknown):
        return StageRow(**common, unknown=rate.reason)
    seconds = quantity / (rate.value * processes)
    source = rate.label if processes == 1 else f"{rate.label}; ×{processes} processes, assumed linear"
    return StageRow(
        **common,
        throughput=rate.value * processes,
        throughput_unit=rate.unit,
        source=source,
        seconds=seconds,
        gpu_hours=seconds * processes / SECONDS_PER_HOUR if device == "gpu" else None,
    )


def target_device(recipe: Recipe, device: Device | None) -> tuple[Device, str]:
    if device is not None:
        return device, "as asked"
    if recipe.model.base:
        return "gpu", "model.base names a model: assumed to train on a GPU; --device cpu for a CPU run"
    return "cpu", "the tiny bootstrap base trains on the CPU; --device gpu for a GPU run"


@dataclass
class RateBook:
    """The measured figures, and which of them an estimate used."""

    figures: dict[str, Figure]
    missing: str | None  # why there are no figures at all
    used: set[str] = field(default_factory=set)

    def use(self, rate: Rate | Unknown) -> Rate | Unknown:
        if isinstance(rate, Rate):
            self.used.update(rate.keys)
        elif self.missing:
            return Unknown(f"{rate.reason} ({self.missing})")
        return rate


def measure_work(
    documents: list[DocumentEstimate], recipe: Recipe, book: RateBook, parameters: int | None
) -> Work:
    usable = [d for d in documents if d.split is not None]
    train = [d for d in usable if d.split == "train"]
    heldout = [d for d in usable if d.split == "eval"]
    tokens, chars = sum(d.tokens for d in usable), sum(d.chars for d in usable)
    train_chunks, eval_chunks = sum(d.chunks for d in train), sum(d.chunks for d in heldout)
    chunks = train_chunks + eval_chunks
    per_chunk = recipe.synthesize.pairs_per_chunk
    accepted, acceptance_source, keys = acceptance(book.figures, recipe)
    book.used.update(keys)
    qa_pretrained = round(train_chunks * per_chunk * accepted)
    qa_knowledge = round(qa_pretrained * recipe.split.knowledge_fraction)
    qa_train, qa_eval = qa_pretrained - qa_knowledge, round(eval_chunks * per_chunk * accepted)
    chars_per_token = chars / tokens if tokens else CHARS_PER_TOKEN
    example_tokens, example_source, keys = sft_example_tokens(
        book.figures, recipe, parameters, chars_per_token
    )
    book.used.update(keys)
    train_tokens = sum(d.tokens for d in train)
    return Work(
        documents=len(usable),
        pages=sum(d.pages for d in usable),
        tokens=tokens,
        chars_per_token=chars_per_token,
        chunks=chunks,
        train_chunks=train_chunks,
        eval_chunks=eval_chunks,
        train_tokens=train_tokens,
        heldout_tokens=sum(d.tokens for d in heldout),
        synthesis_requests=chunks,
        pairs_requested=chunks * per_chunk,
        judge_requests=round(chunks * per_chunk * accepted) if recipe.synthesize.judge else 0,
        acceptance_rate=accepted,
        acceptance_source=acceptance_source,
        qa_train=qa_train,
        qa_knowledge=qa_knowledge,
        qa_eval=qa_eval,
        **pretrain_work(
            train_tokens
            + train_chunks
            + augmented_tokens(train_tokens, train_chunks, qa_train, example_tokens, recipe),
            recipe,
        ),  # token_stream puts eos after each chunk and each augmented text
        **sft_work(qa_train, example_tokens, recipe),
        sft_example_tokens=example_tokens,
        sft_example_source=example_source,
        **evaluation_work(
            (qa_knowledge, qa_train, qa_eval), train_tokens, sum(d.tokens for d in heldout), recipe
        ),
    )


def augmented_tokens(
    train_tokens: int, train_chunks: int, qa_train: int, example_tokens: float, recipe: Recipe
) -> int:
    """Tokens the augment stage adds to pretraining: each chunk's rewrites (kinds in turn, each a share
    of the chunk's length) and, with ``mix_qa``, the SFT pairs as SFT shows them; an eos after each."""
    settings = recipe.augment
    shares = [
        REWRITE_TOKENS_PER_CHUNK_TOKEN.get(kind, LLM_REWRITE_TOKENS_PER_CHUNK_TOKEN)
        if settings.backend == "rules" or kind == "shuffled"
        else LLM_REWRITE_TOKENS_PER_CHUNK_TOKEN
        for kind in (settings.kinds[v % len(settings.kinds)] for v in range(settings.versions_per_chunk))
    ]
    rewrites = sum(share * train_tokens for share in shares) + len(shares) * train_chunks
    pairs = qa_train * (example_tokens + 1) if settings.mix_qa else 0
    return round(rewrites + pairs)


def pretrain_work(stream_tokens: int, recipe: Recipe) -> dict[str, int]:
    settings = recipe.pretrain
    domain = stream_tokens // settings.block_size
    blocks = mixed(domain, settings.general_mix_ratio)
    steps = optimizer_steps(blocks, settings)
    processed = round(blocks * settings.block_size * steps / steps_per_epoch(blocks, settings))
    if settings.replay_loss == "distill":  # the base's forward on each replayed block, counted as tokens
        processed = round(processed * (1 + DISTILL_EXTRA_STEP_COST * (blocks - domain) / max(blocks, 1)))
    return {"pretrain_blocks": blocks, "pretrain_steps": steps, "pretrain_tokens": processed}


def sft_work(qa_train: int, example_tokens: float, recipe: Recipe) -> dict[str, int]:
    """Examples, rows (packed best-fit: nearly full rows of max_seq_length), steps, tokens processed."""
    settings = recipe.sft
    examples = mixed(qa_train, settings.general_mix_ratio)
    total = examples * example_tokens
    rows = math.ceil(total / settings.max_seq_length) if settings.packing else examples
    steps = optimizer_steps(rows, settings)
    processed = round(total * steps / steps_per_epoch(rows, settings))
    if settings.general_kl_weight > 0:  # a general block per micro-step, trained and read by the base
        general = steps * settings.gradient_accumulation_steps * settings.max_seq_length
        processed += round(general * (1 + DISTILL_EXTRA_STEP_COST))
    return {"sft_examples": examples, "sft_rows": rows, "sft_steps": steps, "sft_tokens": processed}


def evaluation_work(
    questions: tuple[int, int, int], trained_tokens: int, heldout_tokens: int, recipe: Recipe
) -> dict[str, int]:
    """Questions answered (knowledge, memorisation, control; each capped), and the tokens the perplexity
    windows run forward (trained and held-out text at their cap, general text at its cap)."""
    settings = recipe.evaluate
    asked = [min(n, settings.max_questions or n) for n in questions]
    scored = sum(min(n, settings.max_ppl_tokens or n) for n in (trained_tokens, heldout_tokens))
    windows = settings.ppl_window / settings.ppl_stride
    forward = (EVAL_PPL_STATES * scored + EVAL_GENERAL_STATES * settings.max_general_tokens) * windows
    return {
        "eval_questions": sum(asked),
        "open_book_questions": EVAL_OPEN_BOOK_PASSES * asked[0] if settings.open_book else 0,
        "scored_tokens": round(forward),
    }


def stage_rows(
    work: Work, recipe: Recipe, book: RateBook, target: Device, parameters: int | None
) -> list[StageRow]:
    figures, evaluate = book.figures, recipe.evaluate
    synth_device = {"extractive": "cpu", "openai": "llm server", "transformers": target}
    synth_device = synth_device[recipe.synthesize.backend]
    synth_rate = book.use(synthesis_rate(figures, recipe, target))
    ingest_rate = book.use(ingest_rate_of(figures, recipe.ingest, work.documents))
    pretrain_rate = book.use(training_rate(figures, target, parameters, packing=True))
    sft_rate = book.use(training_rate(figures, target, parameters, packing=recipe.sft.packing))
    answer_rate = book.use(
        generation_rate(figures, target, parameters, evaluate.batch_size, evaluate.max_new_tokens)
    )
    answers = EVAL_ANSWER_PASSES * work.eval_questions + work.open_book_questions
    rows = [
        timed_row("ingest", work.pages, "pages", "page tree read, text extracted", "cpu", ingest_rate),
        timed_row(
            "chunk",
            work.chunks,
            "chunks",
            f"{_fmt_count(work.tokens)} tokens, {recipe.chunk.chunk_tokens}-token chunks",
            "cpu",
            book.use(chunk_rate(figures, recipe)),
        ),
        timed_row(
            "synthesize",
            work.synthesis_requests,
            "requests",
            f"one a chunk asking {recipe.synthesize.pairs_per_chunk} pairs ({work.pairs_requested:,} in all)",
            synth_device,
            synth_rate,
        ),
    ]
    if recipe.synthesize.judge:
        detail = "one per pair the filters keep, at the generation request rate"
        rows.append(
            timed_row("synthesize · judge", work.judge_requests, "requests", detail, synth_device, synth_rate)
        )
    pretrain = recipe.pretrain
    rows += [
        timed_row(
            "pretrain",
            work.pretrain_tokens,
            "tokens",
            f"{work.pretrain_steps:,} steps × {rows_per_step(pretrain)} blocks of {pretrain.block_size} "
            f"tokens ({work.pretrain_blocks:,} blocks, epochs={pretrain.epochs:g})",
            target,
            pretrain_rate,
            pretrain.num_processes,
        ),
        timed_row(
            "sft",
            work.sft_tokens,
            "tokens",
            f"{work.sft_examples:,} examples × {work.sft_example_tokens:.0f} tokens, {work.sft_rows:,} rows, "
            f"{work.sft_steps:,} steps",
            target,
            sft_rate,
            recipe.sft.num_processes,
        ),
        timed_row(
            "evaluate · answers",
            answers,
            "answers",
            f"{work.eval_questions:,} questions × base, pretrained and final + {work.open_book_questions:,} "
            f"open-book, ≤ {evaluate.max_new_tokens} new tokens",
            target,
            answer_rate,
        ),
        timed_row(
            "evaluate · perplexity",
            work.scored_tokens,
            "tokens",
            f"trained and held-out text × {EVAL_PPL_STATES} states, ≤ "
            f"{_fmt_count(evaluate.max_general_tokens)} general tokens × {EVAL_GENERAL_STATES}, windows "
            f"{evaluate.ppl_window}/{evaluate.ppl_stride}",
            target,
            book.use(scoring_rate(figures, target, parameters)),
        ),
    ]
    if evaluate.llm_judge:
        rows.append(
            timed_row("evaluate · llm judge", answers, "requests", "one per answer", synth_device, synth_rate)
        )
    return rows


def estimate(
    docs: Path, recipe: Recipe, throughputs: Path = DEFAULT_THROUGHPUTS, device: Device | None = None
) -> Estimate:
    """What a run of ``recipe`` on ``docs`` would process, and how long each stage should take."""
    target, device_reason = target_device(recipe, device)
    counter = token_counter(recipe)
    documents = survey(docs, recipe, counter)
    book = RateBook(*load_figures(throughputs))
    name, parameters, parameters_source = model_size(recipe)
    work = measure_work(documents, recipe, book, parameters)
    rows = stage_rows(work, recipe, book, target, parameters)
    known = [row.seconds for row in rows if row.seconds is not None]
    gpu_hours = [row.gpu_hours for row in rows if row.device == "gpu"]
    notes = corpus_notes(documents, recipe, counter)
    if work.pretrain_blocks == 0:
        notes.append(
            f"The training documents hold less than one block of {recipe.pretrain.block_size} "
            "tokens: pretraining will stop; add documents or lower pretrain.block_size."
        )
    notes.append(f"SFT example length: {work.sft_example_source}.")
    notes += reference_notes(book.figures, recipe)
    notes.append(
        "Not counted: model loading, the bootstrap build, checkpoint saves, periodic eval loss, answer "
        "scoring (ROUGE, MiniLM), Prefect start-up."
    )
    return Estimate(
        recipe=recipe.name,
        docs=str(docs),
        device=target,
        device_reason=device_reason,
        model=name,
        parameters=parameters,
        parameters_source=parameters_source,
        token_method=counter.method,
        tokenizer_used=counter.from_tokenizer,
        documents=documents,
        work=work,
        rows=rows,
        total_seconds=sum(known) if len(known) == len(rows) else None,
        known_seconds=sum(known),
        gpu_hours=None if None in gpu_hours else sum(gpu_hours),
        throughputs=book.missing or str(throughputs),
        figures_used={key: book.figures[key] for key in sorted(book.used)},
        notes=notes,
    )


def chunk_rate(figures: dict[str, Figure], recipe: Recipe) -> Rate | Unknown:
    """Chunks/s, corrected for chunk size: tokenising dominates, so time ∝ chunks × chunk_tokens."""
    rate = cpu_stage_rate(figures, "chunk", "chunks_per_s", MEASURE["chunk"])
    if isinstance(rate, Unknown):
        return rate
    measured = figures[rate.keys[0]].conditions["chunk_tokens"]
    factor = measured / recipe.chunk.chunk_tokens
    if factor == 1:
        return rate
    label = f"×{factor:.3g} for {recipe.chunk.chunk_tokens}-token chunks (time ∝ tokens); {rate.label}"
    return Rate(rate.value * factor, rate.unit, label, rate.keys)


def corpus_notes(documents: list[DocumentEstimate], recipe: Recipe, counter: TokenCounter) -> list[str]:
    notes = [f"Tokens: {counter.method}; counted on up to {PDF_SAMPLE_PAGES} pages a PDF and extrapolated."]
    if any(d.kind == "text" for d in documents):
        notes.append(
            f"Text files: pages at {CHARS_PER_TEXT_PAGE:,} characters a page (ingest counts each as 1)."
        )
    notes.append(
        f"Chunks: per document, ceil((tokens - overlap) / ({CHUNK_FILL:g} × (chunk - overlap))); the "
        "splitter cuts at paragraph and line ends, so chunks run short of chunk_tokens."
    )
    for document in documents:
        if document.problem:
            notes.append(f"{document.name}: ingest would fail it: {document.problem}.")
        if document.duplicate_of:
            notes.append(f"{document.name}: identical to {document.duplicate_of}, counted once.")
    if not any(document.split == "eval" for document in documents):
        notes.append(
            "No held-out document (a corpus of fewer than split.min_documents_for_control documents): the "
            "knowledge gain will be uncontrolled."
        )
    if not any(document.split == "train" for document in documents):
        notes.append(
            "No training document: the chunk stage will stop; name fewer files in split.eval_documents."
        )
    return notes


def reference_notes(figures: dict[str, Figure], recipe: Recipe) -> list[str]:
    """End-to-end runs measured with a recipe of this name, as a cross-check of the per-stage sum."""
    return [
        f"Reference: {key}: a whole `docqa run` of {figure.conditions.get('recipe')} took "
        f"{figure.value:.1f} s for {figure.conditions.get('chunks')} chunks ({figure.device}, {figure.date})."
        for key, figure in _candidates(figures, metric="run_seconds")
        if figure.conditions.get("recipe") == recipe.name
    ]


# --- output ---------------------------------------------------------------------------------------------


def format_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * SECONDS_PER_HOUR:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / SECONDS_PER_HOUR:.1f} h"


def render_estimate(result: Estimate) -> Table:
    """The per-stage table: work, device, the throughput used and where it came from, time, GPU hours."""
    table = Table(title=f"docqa estimate · recipe {result.recipe} · {result.docs}", show_lines=True)
    table.add_column("stage", no_wrap=True)
    table.add_column("work", ratio=2, overflow="fold")
    table.add_column("device", no_wrap=True)
    table.add_column("throughput used", ratio=3, overflow="fold")
    table.add_column("time", no_wrap=True, justify="right")
    table.add_column("GPU h", no_wrap=True, justify="right")
    for row in result.rows:
        work = f"{row.quantity:,.0f} {row.unit}\n[dim]{row.detail}[/dim]"
        if row.seconds is None:
            table.add_row(
                row.stage, work, row.device, f"[yellow]{row.unknown}[/yellow]", "[yellow]unknown[/yellow]", ""
            )
            continue
        used = f"{_fmt_rate(row.throughput)} {row.throughput_unit}\n[dim]{row.source}[/dim]"
        hours = "" if row.gpu_hours is None else f"{row.gpu_hours:.3g}"
        table.add_row(row.stage, work, row.device, used, format_seconds(row.seconds), hours)
    total = f"unknown (≥ {format_seconds(result.known_seconds)} known)"
    if result.total_seconds is not None:
        total = format_seconds(result.total_seconds)
    gpu = "unknown" if result.gpu_hours is None else f"{result.gpu_hours:.3g}"
    if not any(row.device == "gpu" for row in result.rows):
        gpu = ""
    table.add_row("[bold]total[/bold]", "", "", "", f"[bold]{total}[/bold]", gpu)
    return table


def summary_lines(result: Estimate) -> list[str]:
    work = result.work
    readable = sum(d.split is not None for d in result.documents)
    parameters = "unknown" if result.parameters is None else _fmt_count(result.parameters)
    judge = f", {work.judge_requests:,} judge requests" if work.judge_requests else ""
    return [
        f"documents: {readable} readable of {len(result.documents)}; pages: {work.pages:,}; tokens: "
        f"{work.tokens:,}{'' if result.tokenizer_used else ' (APPROXIMATION)'}",
        f"chunks: {work.chunks:,} (train {work.train_chunks:,}, held-out {work.eval_chunks:,}, by the "
        "document split)",
        f"synthesis: {work.synthesis_requests:,} requests, {work.pairs_requested:,} pairs asked{judge}; "
        f"acceptance {work.acceptance_rate:.3g} ({work.acceptance_source})",
        f"expected Q&A: {work.qa_train:,} SFT, {work.qa_knowledge:,} knowledge questions, {work.qa_eval:,} "
        "control questions",
        f"pretraining: {work.pretrain_tokens:,} tokens in {work.pretrain_steps:,} steps; SFT: "
        f"{work.sft_examples:,} examples in {work.sft_steps:,} steps; evaluation: {work.eval_questions:,} "
        f"questions × {EVAL_ANSWER_PASSES} models + {work.open_book_questions:,} open-book",
        f"model: {result.model}, {parameters} parameters ({result.parameters_source})",
        f"device: {result.device} ({result.device_reason})",
    ]


def print_estimate(
    docs: Path | None,
    recipe: Recipe,
    device: Device | None = None,
    throughputs: Path = DEFAULT_THROUGHPUTS,
    workspace: Path = Path("workspace"),
    console: Console | None = None,
) -> Estimate:
    """What ``docqa estimate`` prints; ``docs`` None: the sample corpus, where ``docqa run`` puts it."""
    if docs is None:
        from docqa.sample_corpus import ensure_sample_corpus

        docs = ensure_sample_corpus(workspace.resolve() / "sample-corpus")
    result = estimate(docs, recipe, throughputs, device)
    console = console or Console()
    for line in summary_lines(result):
        console.print(line, soft_wrap=True, highlight=False)
    console.print(render_estimate(result))
    for key, figure in result.figures_used.items():
        console.print(
            f"[dim]{key}: {figure.value:,.4g} {UNITS[figure.metric]}, {figure.model}, {figure.device}, "
            f"{figure.date}; `{figure.command}` ({figure.source})[/dim]",
            soft_wrap=True,
        )
    for note in result.notes:
        console.print(f"- {note}", soft_wrap=True, highlight=False)
    return result
