"""Does the model now know the documents? Three question sets, three models, two open-book references.

- **knowledge** (the headline): questions about chunks of *training* documents that pretraining read,
  whose Q&A pairs were held out of SFT (the chunk split, ``split.knowledge_fraction``) and removed if
  SFT's pairs or generated training text held their wording (synthesis' decontamination);
- **memorisation**: a sample of SFT's own questions;
- **control**: questions from held-out documents, never trained on (none in a corpus too small to hold
  a document out; the report says so).

Each set is answered, greedily and closed-book, by the base, by base + pretraining adapter and by the
final model (both adapters), and scored by strict recall (the reference's content words that are not in
the question), the earlier recall, ROUGE, MiniLM similarity and an error analysis. On the knowledge
questions the base also answers open-book, given the question's source chunk (oracle) and the top-k
training chunks MiniLM retrieves (RAG). Perplexity is measured on the training documents' text and on
the held-out documents', and forgetting on general text that is not the domain. ``docs/evaluation.md``
defines every figure.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import evaluate as hf_evaluate
import pandas as pd
import torch

from docqa.answer_metrics import answer_errors, recall_summary, recalled_flags
from docqa.bootstrap import GENERAL_HELDOUT_FILE, GENERAL_REFERENCE_SOURCE, general_reference
from docqa.figures import (
    AnswerScores,
    EvaluationFigures,
    Forgetting,
    OpenBook,
    Perplexities,
    QuestionSet,
    RougeScores,
    SetName,
    State,
    knowledge_gain,
    rag_recovery,
)
from docqa.hashing import json_digest
from docqa.modeling import load_adapted_model, load_tokenizer, token_stream
from docqa.outputs import (
    ADAPTER_ORDER,
    GENERATIONS_FILE,
    PRETRAIN_ADAPTER,
    SFT_ADAPTER,
    BaseModelRef,
    EvalOutput,
    Generation,
    chunks_file,
)
from docqa.progress import Progress
from docqa.prompting import encode_prompts, open_book_question
from docqa.settings import EvaluateSettings, ModelSettings, SynthesizeSettings
from docqa.split import PRETRAIN_SIDES
from docqa.stages.synthesize import read_qa
from docqa.workspace import new_tmp_dir, publish_dir, read_json, write_json_atomic, write_jsonl_atomic

ROUGE_MODULE = Path(__file__).resolve().parent.parent / "metrics" / "docqa_rouge"
QA_SPLIT_OF_SET: dict[SetName, str] = {"knowledge": "knowledge", "memorisation": "train", "control": "eval"}
ADAPTERS_OF_STATE: dict[State, list[str] | None] = {
    "base": None,
    "pretrained": [PRETRAIN_ADAPTER],
    "final": list(ADAPTER_ORDER),
}


@dataclass
class Questions:
    """One set's questions as asked: reference answers and where each question came from."""

    name: SetName
    questions: list[str]
    references: list[str]
    chunk_ids: list[str]
    doc_titles: list[str]


def sample_indices(n: int, limit: int | None, seed: int) -> list[int]:
    """``limit`` of ``n`` rows drawn with ``seed`` (all of them when ``limit`` is None), in row order."""
    if limit is None or n <= limit:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), limit))


def question_sets(
    qa_path: Path, chunks: pd.DataFrame, settings: EvaluateSettings
) -> tuple[dict[SetName, Questions], dict[SetName, str]]:
    """The sets asked, each capped at ``max_questions``; and the sets left out, with the reason."""
    sets: dict[SetName, Questions] = {}
    omitted: dict[SetName, str] = {}
    for name, split in QA_SPLIT_OF_SET.items():
        rows = read_qa(qa_path, split)
        if not len(rows):
            omitted[name] = _why_empty(name, chunks)
            continue
        rows = rows.select(sample_indices(len(rows), settings.max_questions, settings.seed))
        sets[name] = Questions(
            name=name,
            questions=list(rows["question"]),
            references=list(rows["answer"]),
            chunk_ids=list(rows["chunk_id"]),
            doc_titles=list(rows["doc_title"]),
        )
    return sets, omitted


def _why_empty(name: SetName, chunks: pd.DataFrame) -> str:
    if name == "control" and not (chunks["split"] == "eval").any():
        return (
            "no held-out document (the corpus is smaller than split.min_documents_for_control): "
            "the gain is uncontrolled"
        )
    source = {"knowledge": "the chunks held out of SFT", "control": "the held-out documents"}.get(name, "")
    return f"no question from {source} survived synthesis and decontamination"


def sampled_ids(tokenizer, texts: list[str], limit: int | None, seed: int) -> torch.Tensor:
    """Token ids of ``texts`` drawn in a seeded order (so a cap samples every document) up to ``limit``."""
    order = list(texts)
    random.Random(seed).shuffle(order)
    ids = token_stream(tokenizer, order)
    return torch.tensor(ids[:limit] if limit else ids, dtype=torch.long)


def general_text(
    settings: EvaluateSettings, base: BaseModelRef, model_settings: ModelSettings
) -> tuple[list[str], str]:
    """The forgetting reference and where it came from: the configured file, else the bootstrap base's
    held-out general text, else docqa's general English reference (offline, outside any technical
    domain, never mixed into training: see ``general_reference``)."""
    if settings.general_text:
        path = Path(settings.general_text)
        if not path.is_file():
            raise FileNotFoundError(f"evaluate.general_text {path} is not a file; give a UTF-8 text file")
        return [path.read_text(encoding="utf-8")], str(path)
    heldout = Path(base.path) / GENERAL_HELDOUT_FILE
    if heldout.is_file():
        return [heldout.read_text(encoding="utf-8")], str(heldout)
    return general_reference(), GENERAL_REFERENCE_SOURCE


@torch.no_grad()
def sliding_window_perplexity(model, ids: torch.Tensor, window: int, stride: int) -> float:
    """Perplexity of ``ids`` with a sliding window: each token is scored once, with up to
    ``window - stride`` tokens of context carried over from the previous window."""
    total_nll, total_tokens, scored_until = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + window, len(ids))
        chunk = ids[begin:end].unsqueeze(0).to(model.device)
        logits = model(input_ids=chunk).logits[0, :-1].float()
        targets = chunk[0, 1:]
        nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        new_from = max(scored_until - begin - 1, 0)  # targets before this index were scored already
        total_nll += nll[new_from:].sum().item()
        total_tokens += nll[new_from:].numel()
        scored_until = end
        if end == len(ids):
            break
    if not total_tokens:
        raise ValueError("the text is too short to score: it needs at least two tokens")
    return math.exp(total_nll / total_tokens)


@torch.no_grad()
def generate_answers(
    model,
    tokenizer,
    questions: list[str],
    settings: EvaluateSettings,
    model_settings: ModelSettings,
    progress: Progress | None = None,
) -> list[str]:
    """One greedy answer per question (no sampling, no best-of-N), batched with left padding. Batches
    are formed from questions of similar length (less padding); answers come back in question order."""
    order = sorted(range(len(questions)), key=lambda i: len(questions[i]))
    answers: dict[int, str] = {}
    for start in range(0, len(order), settings.batch_size):
        indices = order[start : start + settings.batch_size]
        batch = encode_prompts(tokenizer, [questions[i] for i in indices], model_settings).to(model.device)
        output = model.generate(
            **batch,
            max_new_tokens=settings.max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        decoded = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        answers.update({i: text.strip() for i, text in zip(indices, decoded, strict=True)})
        if progress is not None:
            progress.advance(len(indices))
    return [answers[i] for i in range(len(questions))]


def rouge(predictions: list[str], references: list[str], use_stemmer: bool) -> dict[str, float]:
    metric = hf_evaluate.load(str(ROUGE_MODULE))
    scores = metric.compute(predictions=predictions, references=references, use_stemmer=use_stemmer)
    return {name: float(value) for name, value in scores.items()}


@contextmanager
def answering_as(model, state: State) -> Iterator[None]:
    """``model`` answers as ``state`` inside the block: the base alone, or with the state's adapters."""
    adapters = ADAPTERS_OF_STATE[state]
    if adapters is None:
        with model.disable_adapter():
            yield
    else:
        model.base_model.set_adapter(adapters)
        yield


def open_book_prompts(
    questions: Questions, chunk_texts: dict[str, str], pretrained_ids: list[str], top_k: int, embedder
) -> dict[OpenBook, list[str]]:
    """The knowledge questions with their source chunk (oracle) and with the ``top_k`` pretrained chunks
    MiniLM retrieves for them (RAG), as prompts."""
    passages = [chunk_texts[chunk_id] for chunk_id in pretrained_ids]
    retrieved = embedder.top_k(questions.questions, passages, top_k)
    return {
        "oracle": [
            open_book_question(q, [chunk_texts[c]])
            for q, c in zip(questions.questions, questions.chunk_ids, strict=True)
        ],
        "rag": [
            open_book_question(q, [passages[i] for i in hits])
            for q, hits in zip(questions.questions, retrieved, strict=True)
        ],
    }


def evaluate_models(
    chunks_path: Path,
    qa_path: Path,
    pretrain_adapter: Path,
    sft_adapter: Path,
    base: BaseModelRef,
    model_settings: ModelSettings,
    settings: EvaluateSettings,
    out_root: Path,
    judge_settings: SynthesizeSettings | None = None,
) -> EvalOutput:
    """Every figure of the protocol above for one pair of adapters; ``judge_settings``: the synthesis
    backend that scores answers when ``settings.llm_judge``."""
    started = time.perf_counter()
    if settings.llm_judge and (judge_settings is None or judge_settings.backend == "extractive"):
        raise ValueError(
            "evaluate.llm_judge needs an LLM synthesis backend: set synthesize.backend=openai (with base_url "
            "and model) or synthesize.backend=transformers"
        )
    from docqa.synthesis.embedder import load_embedder  # sentence-transformers: seconds to import

    chunks = pd.read_parquet(chunks_file(chunks_path), columns=["chunk_id", "text", "split"])
    chunk_texts = dict(zip(chunks["chunk_id"], chunks["text"], strict=True))
    pretrained_ids = list(chunks.loc[chunks["split"].isin(PRETRAIN_SIDES), "chunk_id"])
    heldout_texts = list(chunks.loc[chunks["split"] == "eval", "text"])
    sets, omitted = question_sets(qa_path, chunks, settings)
    embedder = load_embedder()

    tokenizer = load_tokenizer(base.path, model_settings.revision)
    pretrained_texts = [chunk_texts[c] for c in pretrained_ids]
    general, general_source = general_text(settings, base, model_settings)
    texts = {
        "trained": sampled_ids(tokenizer, pretrained_texts, settings.max_ppl_tokens, settings.seed),
        "heldout": sampled_ids(tokenizer, heldout_texts, settings.max_ppl_tokens, settings.seed),
        "general": sampled_ids(tokenizer, general, settings.max_general_tokens, settings.seed),
    }
    books: dict[OpenBook, list[str]] = {}
    if settings.open_book and "knowledge" in sets:
        books = open_book_prompts(
            sets["knowledge"], chunk_texts, pretrained_ids, settings.rag_top_k, embedder
        )
    model = load_adapted_model(
        base, model_settings, {PRETRAIN_ADAPTER: pretrain_adapter, SFT_ADAPTER: sft_adapter}
    )

    total = len(ADAPTERS_OF_STATE) * sum(len(q.questions) for q in sets.values())
    progress = Progress("evaluate · answers", total + sum(len(p) for p in books.values()), "answers")
    closed: dict[SetName, dict[State, list[str]]] = {name: {} for name in sets}
    open_answers: dict[OpenBook, list[str]] = {}
    ppl: dict[str, dict[State, float]] = {name: {} for name in texts}

    def answer(questions: list[str]) -> list[str]:
        return generate_answers(model, tokenizer, questions, settings, model_settings, progress)

    for state in ADAPTERS_OF_STATE:
        with answering_as(model, state):
            for name, ids in texts.items():
                if len(ids) > 1:
                    ppl[name][state] = sliding_window_perplexity(
                        model, ids, settings.ppl_window, settings.ppl_stride
                    )
            for name, questions in sets.items():
                closed[name][state] = answer(questions.questions)
            if state == "base":
                open_answers = {book: answer(prompts) for book, prompts in books.items()}
    progress.close()

    scored = {
        name: {state: score_answers(q, closed[name][state], chunk_texts, embedder, settings)
               for state in ADAPTERS_OF_STATE}
        for name, q in sets.items()
    }  # fmt: skip
    question_figures = {
        name: QuestionSet(
            name=name,
            questions=len(sets[name].questions),
            answers={state: result[0] for state, result in by_state.items()},
        )
        for name, by_state in scored.items()
    }
    open_book_figures: dict[OpenBook, AnswerScores] = {
        book: score_answers(sets["knowledge"], given, chunk_texts, embedder, settings)[0]
        for book, given in open_answers.items()
    }
    threshold = settings.recall_threshold
    flags = {
        name: {state: recalled_flags(closed[name][state], q.references, threshold, q.questions)
               for state in ADAPTERS_OF_STATE}
        for name, q in sets.items()
    }  # fmt: skip
    ratio = ppl["general"]["final"] / ppl["general"]["base"]
    figures = EvaluationFigures(
        sets=question_figures,
        omitted=omitted,
        knowledge_gain=knowledge_gain(question_figures, flags),
        open_book=open_book_figures,
        rag_top_k=settings.rag_top_k,
        rag_recovery=rag_recovery(question_figures.get("knowledge"), open_book_figures.get("rag")),
        perplexity=Perplexities(
            trained_text=ppl["trained"],
            heldout_text=ppl["heldout"] or None,
            trained_tokens=len(texts["trained"]),
            heldout_tokens=len(texts["heldout"]),
        ),
        forgetting=Forgetting(
            base=ppl["general"]["base"],
            pretrained=ppl["general"]["pretrained"],
            tuned=ppl["general"]["final"],
            ratio=ratio,
            max_ratio=settings.max_forgetting_ratio,
            passed=ratio <= settings.max_forgetting_ratio,
            source=general_source,
            tokens=len(texts["general"]),
        ),
        decontamination=read_json(Path(qa_path) / "summary.json")["contamination"],
    )
    if settings.llm_judge and "knowledge" in sets:
        figures.llm_judge = judge_answers(sets["knowledge"], closed["knowledge"], chunk_texts, judge_settings)
    examples = {
        name: {state: result[1] for state, result in by_state.items()} for name, by_state in scored.items()
    }
    generations = [
        Generation(
            set=name,
            question=question,
            reference=q.references[i],
            answers={
                **{state: closed[name][state][i] for state in ADAPTERS_OF_STATE},
                **({book: given[i] for book, given in open_answers.items()} if name == "knowledge" else {}),
            },
            doc_title=q.doc_titles[i],
            chunk_id=q.chunk_ids[i],
        )
        for name, q in sets.items()
        for i, question in enumerate(q.questions)
    ]
    return _publish(figures, examples, generations, out_root, time.perf_counter() - started)


def score_answers(
    questions: Questions, given: list[str], chunk_texts: dict[str, str], embedder, settings: EvaluateSettings
) -> tuple[AnswerScores, dict[str, dict]]:
    """Strict and lenient recall, ROUGE, similarity to the reference and errors (with examples)."""
    sources = [chunk_texts[c] for c in questions.chunk_ids]
    to_reference = embedder.similarities(given, questions.references)
    to_chunk = embedder.passage_similarities(given, sources)
    errors = answer_errors(
        questions.questions, given, questions.references, to_chunk,
        settings.long_answer_ratio, settings.max_repetition, settings.min_chunk_similarity,
    )  # fmt: skip
    scores = AnswerScores(
        strict_recall=recall_summary(given, questions.references, settings.recall_threshold,
                                     questions.questions),
        recall=recall_summary(given, questions.references, settings.recall_threshold),
        rouge=RougeScores(**rouge(given, questions.references, settings.rouge_use_stemmer)),
        semantic_similarity=sum(to_reference) / len(to_reference),
        errors={kind: entry["count"] for kind, entry in errors.items()},
    )  # fmt: skip
    return scores, errors


def judge_answers(
    questions: Questions,
    answers: dict[State, list[str]],
    chunk_texts: dict[str, str],
    judge_settings: SynthesizeSettings,
) -> dict:
    """Mean 1-5 score per model state on the knowledge questions, from the synthesis LLM: a model's
    opinion, labelled as such."""
    from docqa.synthesis import make_chat_client
    from docqa.synthesis.llm import JudgeItem, judge_pairs

    client = make_chat_client(judge_settings)
    figures: dict = {"judge": client.identity(), "label": "LLM-as-judge, 1-5: an opinion, not a ground truth"}
    passages = [chunk_texts[c] for c in questions.chunk_ids]
    for state, given in answers.items():
        items = [
            JudgeItem(item_id=str(i), question=q, answer=a, passage=p)
            for i, (q, a, p) in enumerate(zip(questions.questions, given, passages, strict=True))
        ]
        scores = [v.score for v in judge_pairs(client, items) if v.score is not None]
        figures[state] = sum(scores) / len(scores) if scores else None
        figures[f"{state}_unscored"] = len(items) - len(scores)
    return figures


def _publish(
    figures: EvaluationFigures,
    examples: dict,
    generations: list[Generation],
    out_root: Path,
    seconds: float,
) -> EvalOutput:
    digest = json_digest({"figures": figures, "generations": [g.model_dump() for g in generations]})
    tmp = new_tmp_dir(out_root)
    write_json_atomic(tmp / "metrics.json", {**figures.model_dump(mode="json"), "error_examples": examples})
    write_jsonl_atomic(tmp / GENERATIONS_FILE, generations)
    final = publish_dir(tmp, out_root / digest[:16])
    return EvalOutput(path=str(final), digest=digest, seconds=seconds, figures=figures)
