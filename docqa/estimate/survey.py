"""What the documents hold, read before anything runs: pages (pypdf's page tree, no extraction), the text
of a few pages of each document, tokens (the base's tokenizer when it is on disk), chunks, the split, and
the base model's size (its config.json, else its published architecture)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError

from docqa.bases import TINY_BOOTSTRAP, prepared_embedded_dir
from docqa.hashing import sha256_file
from docqa.outputs import bootstrap_dir
from docqa.settings import Recipe
from docqa.split import document_sides
from docqa.stages.ingest import MALFORMED_PDF_ERRORS, PDF_SUFFIX, list_documents
from docqa.text_cleaning import clean_pages

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
