"""The work a run would do, stage by stage (documents → chunks → Q&A → pretraining blocks → SFT rows →
questions), and its time at the rates chosen for each stage: the estimate itself."""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import BaseModel

from docqa.estimate.figures import DEFAULT_THROUGHPUTS, Device, Figure, candidates, load_figures
from docqa.estimate.rates import (
    Rate,
    RateBook,
    Unknown,
    acceptance,
    chunk_rate,
    fmt_count,
    generation_rate,
    ingest_rate_of,
    scoring_rate,
    sft_example_tokens,
    synthesis_rate,
    training_rate,
)
from docqa.estimate.survey import (
    CHARS_PER_TOKEN,
    DocumentEstimate,
    corpus_notes,
    model_size,
    survey,
    token_counter,
)
from docqa.settings import Recipe, TrainSettings

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
# --- evaluation -------------------------------------------------------------------------------------
EVAL_ANSWER_PASSES = 3  # every question is answered by the base, the pretrained and the final model
EVAL_OPEN_BOOK_PASSES = 2  # knowledge questions answered open-book by the base: oracle and RAG
EVAL_PPL_STATES = 3  # perplexity of base, pretrained and final on trained and on held-out text
EVAL_GENERAL_STATES = 3  # general-text perplexity of base, pretrained and final
SECONDS_PER_HOUR = 3600


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
            f"{fmt_count(work.tokens)} tokens, {recipe.chunk.chunk_tokens}-token chunks",
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
            f"{fmt_count(evaluate.max_general_tokens)} general tokens × {EVAL_GENERAL_STATES}, windows "
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


def reference_notes(figures: dict[str, Figure], recipe: Recipe) -> list[str]:
    """End-to-end runs measured with a recipe of this name, as a cross-check of the per-stage sum."""
    return [
        f"Reference: {key}: a whole `docqa run` of {figure.conditions.get('recipe')} took "
        f"{figure.value:.1f} s for {figure.conditions.get('chunks')} chunks ({figure.device}, {figure.date})."
        for key, figure in candidates(figures, metric="run_seconds")
        if figure.conditions.get("recipe") == recipe.name
    ]
