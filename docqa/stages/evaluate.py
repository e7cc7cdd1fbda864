"""Held-out evaluation, base and adapted side by side on the same data: perplexity on held-out documents'
text; ROUGE, MiniLM similarity and per-fact recall of greedy answers to held-out questions, with an
error analysis; and forgetting, the perplexity on general text that is not the domain, with a gate.

Nothing here reads a training row: the text comes from documents the split held out, the questions
were synthesised from those documents only. ``docs/evaluation.md`` defines every figure.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import evaluate as hf_evaluate
import pandas as pd
import torch

from docqa.answer_metrics import answer_errors, recall_summary
from docqa.bootstrap import GENERAL_HELDOUT_FILE, general_text_split
from docqa.hashing import json_digest
from docqa.modeling import load_adapted_model, load_tokenizer, token_stream
from docqa.outputs import (
    GENERATIONS_FILE,
    BaseModelRef,
    EvalOutput,
    Generation,
    chunks_file,
    read_document_chunks,
)
from docqa.prompting import encode_prompts
from docqa.settings import EvaluateSettings, ModelSettings, SynthesizeSettings
from docqa.stages.ingest import read_documents
from docqa.stages.synthesize import read_qa
from docqa.workspace import new_tmp_dir, publish_dir, write_json_atomic

ROUGE_MODULE = Path(__file__).resolve().parent.parent / "metrics" / "docqa_rouge"


def heldout_text(ingest_path: Path, chunks_path: Path) -> list[str]:
    """The cleaned full text of every held-out document."""
    splits = {doc_id: info["split"] for doc_id, info in read_document_chunks(chunks_path).items()}
    return [
        "\n\n".join(page.text for page in doc.pages)
        for doc in read_documents(ingest_path)
        if splits.get(doc.doc_id) == "eval"
    ]


def general_text(
    settings: EvaluateSettings, base: BaseModelRef, model_settings: ModelSettings
) -> tuple[list[str], str]:
    """The forgetting reference and where it came from: the configured file, else the bootstrap base's
    held-out general text, else the held-out part of the standard library's docstrings (offline, not
    the user's domain, and never mixed into training: see ``general_text_split``)."""
    if settings.general_text:
        path = Path(settings.general_text)
        if not path.is_file():
            raise FileNotFoundError(f"evaluate.general_text {path} is not a file; give a UTF-8 text file")
        return [path.read_text(encoding="utf-8")], str(path)
    heldout = Path(base.path) / GENERAL_HELDOUT_FILE
    if heldout.is_file():
        return [heldout.read_text(encoding="utf-8")], str(heldout)
    return general_text_split(model_settings.bootstrap)[
        1
    ], "python standard library docstrings (held-out part)"


def source_chunks(chunks_path: Path, chunk_ids: list[str]) -> list[str]:
    texts = pd.read_parquet(chunks_file(chunks_path), columns=["chunk_id", "text"]).set_index("chunk_id")[
        "text"
    ]
    return [texts[chunk_id] for chunk_id in chunk_ids]


def token_ids(tokenizer, texts: list[str], limit: int | None) -> torch.Tensor:
    ids = token_stream(tokenizer, texts)
    return torch.tensor(ids[:limit] if limit else ids, dtype=torch.long)


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
        raise ValueError("held-out text is too short to score: it needs at least two tokens")
    return math.exp(total_nll / total_tokens)


@torch.no_grad()
def generate_answers(
    model, tokenizer, questions: list[str], settings: EvaluateSettings, model_settings
) -> list[str]:
    """One greedy answer per question (no sampling, no best-of-N), batched with left padding."""
    answers: list[str] = []
    for start in range(0, len(questions), settings.batch_size):
        batch = encode_prompts(tokenizer, questions[start : start + settings.batch_size], model_settings)
        batch = batch.to(model.device)
        output = model.generate(
            **batch,
            max_new_tokens=settings.max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        answers.extend(t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    return answers


def rouge(predictions: list[str], references: list[str], use_stemmer: bool) -> dict[str, float]:
    metric = hf_evaluate.load(str(ROUGE_MODULE))
    scores = metric.compute(predictions=predictions, references=references, use_stemmer=use_stemmer)
    return {name: float(value) for name, value in scores.items()}


def _use(model, adapters: list[str]) -> None:
    model.base_model.set_adapter(adapters)


def evaluate_models(
    ingest_path: Path,
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
    """``judge_settings``: the synthesis backend that scores answers when ``settings.llm_judge``."""
    started = time.perf_counter()
    if settings.llm_judge and (judge_settings is None or judge_settings.backend == "extractive"):
        raise ValueError(
            "evaluate.llm_judge needs an LLM synthesis backend: set synthesize.backend=openai (with base_url "
            "and model) or synthesize.backend=transformers"
        )
    tokenizer = load_tokenizer(base.path, model_settings.revision)
    texts = heldout_text(ingest_path, chunks_path)
    ids = token_ids(tokenizer, texts, settings.max_ppl_tokens)
    qa = read_qa(qa_path, "eval")
    qa = qa.select(range(min(len(qa), settings.max_questions or len(qa))))
    questions, references = list(qa["question"]), list(qa["answer"])
    general, general_source = general_text(settings, base, model_settings)
    general_ids = token_ids(tokenizer, general, settings.max_general_tokens)
    model = load_adapted_model(base, model_settings, {"pretrain": pretrain_adapter, "sft": sft_adapter})

    def ppl(token_ids_: torch.Tensor) -> float:
        return sliding_window_perplexity(model, token_ids_, settings.ppl_window, settings.ppl_stride)

    perplexity, general_ppl = {}, {}
    with model.disable_adapter():
        perplexity["base"], general_ppl["base"] = ppl(ids), ppl(general_ids)
        base_answers = generate_answers(model, tokenizer, questions, settings, model_settings)
    _use(model, ["pretrain"])
    perplexity["pretrained"] = ppl(ids)
    _use(model, ["pretrain", "sft"])
    perplexity["sft"], general_ppl["tuned"] = ppl(ids), ppl(general_ids)
    tuned_answers = generate_answers(model, tokenizer, questions, settings, model_settings)

    scores = {
        "base": rouge(base_answers, references, settings.rouge_use_stemmer),
        "sft": rouge(tuned_answers, references, settings.rouge_use_stemmer),
    }
    ratio = general_ppl["tuned"] / general_ppl["base"]
    forgetting = {
        **general_ppl,
        "ratio": ratio,
        "max_ratio": settings.max_forgetting_ratio,
        "passed": ratio <= settings.max_forgetting_ratio,
        "source": general_source,
        "tokens": len(general_ids),
    }
    answers = {"base": base_answers, "sft": tuned_answers}
    chunk_texts = source_chunks(chunks_path, list(qa["chunk_id"]))
    answer_figures = score_answers(questions, answers, references, chunk_texts, settings)
    generations = [
        Generation(
            question=row["question"],
            reference=row["answer"],
            base_answer=base_answer,
            tuned_answer=tuned_answer,
            doc_title=row["doc_title"],
            chunk_id=row["chunk_id"],
        )
        for row, base_answer, tuned_answer in zip(qa, base_answers, tuned_answers, strict=True)
    ]
    extra = {"forgetting": forgetting, **answer_figures}
    if settings.llm_judge:
        extra["llm_judge"] = judge_answers(questions, answers, chunk_texts, judge_settings)
    return _publish(
        perplexity, scores, extra, generations, len(texts), len(ids), out_root, time.perf_counter() - started
    )


def score_answers(
    questions: list[str],
    answers: dict[str, list[str]],
    references: list[str],
    chunks: list[str],
    settings: EvaluateSettings,
) -> dict[str, dict]:
    """Semantic similarity to the reference, per-fact recall and error analysis, per model."""
    from docqa.synthesis.quality import load_embedder  # sentence-transformers: seconds to import

    embedder = load_embedder()
    figures: dict[str, dict] = {"semantic_similarity": {}, "recall": {}, "errors": {}}
    for name, given in answers.items():
        to_reference = embedder.similarities(given, references)
        to_chunk = embedder.passage_similarities(given, chunks)
        figures["semantic_similarity"][name] = sum(to_reference) / len(to_reference)
        figures["recall"][name] = recall_summary(given, references, settings.recall_threshold).model_dump()
        figures["errors"][name] = answer_errors(
            questions, given, references, to_chunk,
            settings.long_answer_ratio, settings.max_repetition, settings.min_chunk_similarity,
        )  # fmt: skip
    return figures


def judge_answers(
    questions: list[str],
    answers: dict[str, list[str]],
    passages: list[str],
    judge_settings: SynthesizeSettings,
) -> dict:
    """Mean 1-5 score per model from the synthesis LLM: a model's opinion, labelled as such."""
    from docqa.synthesis import make_chat_client
    from docqa.synthesis.llm import JudgeItem, judge_pairs

    client = make_chat_client(judge_settings)
    figures: dict = {"judge": client.identity(), "label": "LLM-as-judge, 1-5: an opinion, not a ground truth"}
    for name, given in answers.items():
        items = [
            JudgeItem(item_id=str(i), question=q, answer=a, passage=p)
            for i, (q, a, p) in enumerate(zip(questions, given, passages, strict=True))
        ]
        scores = [v.score for v in judge_pairs(client, items) if v.score is not None]
        figures[name] = sum(scores) / len(scores) if scores else None
        figures[f"{name}_unscored"] = len(items) - len(scores)
    return figures


def _publish(
    perplexity, scores, extra, generations, n_documents, n_tokens, out_root: Path, seconds: float
) -> EvalOutput:
    metrics = {
        "perplexity": perplexity,
        "rouge": scores,
        **extra,
        "eval_documents": n_documents,
        "eval_tokens": n_tokens,
        "eval_questions": len(generations),
    }
    digest = json_digest({"metrics": metrics, "generations": [g.model_dump() for g in generations]})
    tmp = new_tmp_dir(out_root)
    write_json_atomic(tmp / "metrics.json", metrics)
    with open(tmp / GENERATIONS_FILE, "w", encoding="utf-8") as handle:
        for generation in generations:
            handle.write(json.dumps(generation.model_dump(), ensure_ascii=False) + "\n")
    final = publish_dir(tmp, out_root / digest[:16])
    return EvalOutput(path=str(final), digest=digest, seconds=seconds, **metrics)
