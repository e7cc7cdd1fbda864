"""Evaluation: the sliding-window perplexity is exact, the offline ROUGE keeps non-ASCII words, and the
stage asks knowledge, memorisation and control questions of the base, pretrained and final models, with
open-book references, on the data each set must come from."""

from __future__ import annotations

import json
import math
from pathlib import Path
from pydoc_data.topics import topics

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM

from docqa.figures import STATES
from docqa.modeling import load_tokenizer
from docqa.outputs import chunks_file, read_generations
from docqa.stages.evaluate import (
    evaluate_models,
    open_book_prompts,
    question_sets,
    rouge,
    sampled_ids,
    sliding_window_perplexity,
)
from docqa.stages.synthesize import read_qa


def token_ids(tokenizer, texts: list[str], limit: int) -> torch.Tensor:
    return sampled_ids(tokenizer, texts, limit, seed=0)


@pytest.fixture(scope="module")
def fp_model(tiny_base):
    return AutoModelForCausalLM.from_pretrained(tiny_base.path).eval()


def _full_context_perplexity(model, ids: torch.Tensor) -> float:
    with torch.no_grad():
        return math.exp(model(input_ids=ids.unsqueeze(0), labels=ids.unsqueeze(0)).loss.item())


def test_sliding_window_equals_full_context_when_the_text_fits(fp_model, tiny_base):
    ids = token_ids(load_tokenizer(tiny_base.path), [topics["for"]], limit=120)
    expected = _full_context_perplexity(fp_model, ids)
    assert sliding_window_perplexity(fp_model, ids, window=200, stride=100) == pytest.approx(
        expected, rel=1e-4
    )


def test_sliding_window_without_overlap_equals_disjoint_windows(fp_model, tiny_base):
    ids = token_ids(load_tokenizer(tiny_base.path), [topics["while"] + topics["if"]], limit=160)
    disjoint = [ids[i : i + 40] for i in range(0, 160, 40)]  # each scored from its own first token
    with torch.no_grad():
        losses = [fp_model(input_ids=w.unsqueeze(0), labels=w.unsqueeze(0)).loss.item() for w in disjoint]
    expected = math.exp(
        sum(loss * (len(w) - 1) for loss, w in zip(losses, disjoint, strict=True)) / (160 - 4)
    )
    assert sliding_window_perplexity(fp_model, ids, window=40, stride=40) == pytest.approx(expected, rel=1e-4)


def test_overlapping_windows_score_new_tokens_with_carried_context(fp_model, tiny_base):
    ids = token_ids(load_tokenizer(tiny_base.path), [topics["while"] + topics["if"]], limit=120)

    def token_nll(window: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = fp_model(input_ids=window.unsqueeze(0)).logits[0, :-1]
        return torch.nn.functional.cross_entropy(logits, window[1:], reduction="none")

    # window [0, 80) scores tokens 1..79; window [40, 120) scores only tokens 80..119, with 40 of context
    first, second = token_nll(ids[0:80]), token_nll(ids[40:120])[39:]
    expected = math.exp((first.sum() + second.sum()).item() / (len(first) + len(second)))
    assert sliding_window_perplexity(fp_model, ids, window=80, stride=40) == pytest.approx(expected, rel=1e-4)


def test_rouge_loads_offline_and_keeps_non_ascii_words():
    same = rouge(["Der Motor läuft ruhig"], ["Der Motor läuft ruhig"], use_stemmer=True)
    assert same == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    partial = rouge(["das läuft"], ["es läuft"], use_stemmer=False)
    assert partial["rouge1"] == pytest.approx(0.5)  # "läuft" matches as one word
    assert rouge(["完全に違う"], ["まったく別の文"], use_stemmer=False)["rouge1"] == 0.0
    assert rouge(["running tests"], ["run test"], use_stemmer=True)["rouge1"] == 1.0


def chunk_frame(prepared) -> pd.DataFrame:
    return pd.read_parquet(chunks_file(Path(prepared["chunks"].path)))


def test_each_set_asks_questions_from_where_it_must(prepared):
    chunks = chunk_frame(prepared)
    split_of = dict(zip(chunks["chunk_id"], chunks["split"], strict=True))
    settings = prepared["recipe"].evaluate.model_copy(update={"max_questions": None})
    sets, omitted = question_sets(Path(prepared["qa"].path), chunks, settings)
    assert set(sets) == {"knowledge", "memorisation", "control"} and not omitted
    assert {split_of[c] for c in sets["knowledge"].chunk_ids} == {"knowledge"}  # pretrained, not SFT'd
    assert {split_of[c] for c in sets["memorisation"].chunk_ids} == {"train"}
    assert {split_of[c] for c in sets["control"].chunk_ids} == {"eval"}
    assert set(sets["knowledge"].doc_titles) <= set(chunks.loc[chunks["split"] != "eval", "doc_title"])
    sft_questions = set(read_qa(Path(prepared["qa"].path), "train")["question"])
    assert not set(sets["knowledge"].questions) & sft_questions  # never trained on as a question


def test_a_capped_set_is_a_seeded_sample(prepared):
    chunks = chunk_frame(prepared)
    capped = prepared["recipe"].evaluate.model_copy(update={"max_questions": 3})
    first, _ = question_sets(Path(prepared["qa"].path), chunks, capped)
    again, _ = question_sets(Path(prepared["qa"].path), chunks, capped)
    other, _ = question_sets(Path(prepared["qa"].path), chunks, capped.model_copy(update={"seed": 5}))
    assert all(len(q.questions) == 3 for q in first.values())
    assert first["memorisation"].questions == again["memorisation"].questions
    assert first["memorisation"].questions != other["memorisation"].questions


def test_rag_retrieves_the_source_chunk_and_the_oracle_is_given_it(prepared, checkers):
    chunks = chunk_frame(prepared)
    texts = dict(zip(chunks["chunk_id"], chunks["text"], strict=True))
    pretrained = list(chunks.loc[chunks["split"] != "eval", "chunk_id"])
    sets, _ = question_sets(Path(prepared["qa"].path), chunks, prepared["recipe"].evaluate)
    knowledge = sets["knowledge"]
    prompts = open_book_prompts(knowledge, texts, pretrained, 3, checkers.embedder)
    for prompt, question, chunk_id in zip(prompts["oracle"], knowledge.questions, knowledge.chunk_ids,
                                          strict=True):  # fmt: skip
        assert texts[chunk_id] in prompt and prompt.endswith(question)
    assert all(prompt.count("Passage ") == 3 for prompt in prompts["rag"])
    found = sum(texts[c] in p for p, c in zip(prompts["rag"], knowledge.chunk_ids, strict=True))
    assert found >= 0.6 * len(knowledge.questions)  # MiniLM finds the chunk a question was written from


def test_evaluate_answers_every_set_with_three_models_and_scores_them(trained, tiny_base):
    recipe = trained["recipe"]
    out = evaluate_models(
        Path(trained["chunks"].path), Path(trained["qa"].path), Path(trained["pretrained"].adapter_path),
        Path(trained["tuned"].adapter_path), tiny_base, recipe.model, recipe.evaluate,
        trained["workspace"] / "evaluate",
    )  # fmt: skip
    figures = out.figures
    assert set(figures.sets) == {"knowledge", "memorisation", "control"} and not figures.omitted
    for question_set in figures.sets.values():
        split = {"knowledge": "knowledge", "memorisation": "train", "control": "eval"}[question_set.name]
        available = len(read_qa(Path(trained["qa"].path), split))
        assert question_set.questions == min(available, recipe.evaluate.max_questions) > 0
        assert set(question_set.answers) == set(STATES)
        for scores in question_set.answers.values():
            for recall in (scores.strict_recall, scores.recall):
                assert recall.scored + recall.unscored == question_set.questions
            assert set(scores.errors) == {"empty", "too_long", "repetitive", "unrelated"}
    gain = figures.knowledge_gain
    knowledge, control = figures.sets["knowledge"], figures.sets["control"]
    assert gain.controlled and gain.knowledge == knowledge.recall("final") - knowledge.recall("base")
    assert gain.value == pytest.approx(gain.knowledge - (control.recall("final") - control.recall("base")))
    assert set(figures.open_book) == {"oracle", "rag"}
    ppl = figures.perplexity
    for by_state in (ppl.trained_text, ppl.heldout_text):
        assert set(by_state) == set(STATES) and all(math.isfinite(v) and v > 1 for v in by_state.values())
        assert len(set(by_state.values())) == 3  # three different models were scored
    assert ppl.trained_tokens == ppl.heldout_tokens == recipe.evaluate.max_ppl_tokens
    forgetting = figures.forgetting
    assert forgetting.source.endswith("general_heldout.txt") and forgetting.tokens > 1000
    assert forgetting.ratio == pytest.approx(forgetting.tuned / forgetting.base)
    assert forgetting.passed == (forgetting.ratio <= recipe.evaluate.max_forgetting_ratio)
    assert figures.decontamination["knowledge_pairs_checked"] >= knowledge.questions
    generations = read_generations(Path(out.path))
    assert len(generations) == sum(q.questions for q in figures.sets.values())
    for g in generations:
        expected = {*STATES, "oracle", "rag"} if g.set == "knowledge" else set(STATES)
        assert set(g.answers) == expected and all(isinstance(a, str) for a in g.answers.values())
    metrics = json.loads((Path(out.path) / "metrics.json").read_text())
    assert metrics["knowledge_gain"] == gain.model_dump(mode="json")
    assert set(metrics["error_examples"]) == set(figures.sets)


def test_the_forgetting_gate_reads_a_configured_general_text_and_can_fail(trained, tiny_base, tmp_path):
    recipe = trained["recipe"]
    general = tmp_path / "general.txt"
    general.write_text(" ".join(["The weather was mild and the river ran high after the spring rains."] * 60))
    settings = recipe.evaluate.model_copy(
        update={"general_text": str(general), "max_forgetting_ratio": 1e-6, "open_book": False}
    )
    out = evaluate_models(
        Path(trained["chunks"].path), Path(trained["qa"].path), Path(trained["pretrained"].adapter_path),
        Path(trained["tuned"].adapter_path), tiny_base, recipe.model, settings, tmp_path / "evaluate",
    )  # fmt: skip
    assert out.figures.forgetting.source == str(general) and out.figures.forgetting.passed is False
    assert out.figures.open_book == {} and out.figures.rag_recovery is None


def test_the_optional_llm_judge_scores_the_knowledge_answers_and_is_labelled(trained, tiny_base, tmp_path):
    from conftest import openai_settings
    from openai_stub import StubServer, chat_response

    def judge(body: dict) -> tuple[int, str]:
        answer = body["messages"][-1]["content"].split("Answer: ", 1)[1].split("\n", 1)[0]
        return 200, chat_response(json.dumps({"score": 1 if not answer.strip() else 3}))

    recipe = trained["recipe"]
    settings = recipe.evaluate.model_copy(update={"llm_judge": True, "open_book": False})
    arguments = (
        Path(trained["chunks"].path), Path(trained["qa"].path), Path(trained["pretrained"].adapter_path),
        Path(trained["tuned"].adapter_path), tiny_base, recipe.model, settings, tmp_path / "evaluate",
    )  # fmt: skip
    with StubServer(judge) as server:
        out = evaluate_models(*arguments, openai_settings(server.base_url))
    judged = out.figures.llm_judge
    assert len(server.requests) == 3 * out.figures.sets["knowledge"].questions
    assert "not a ground truth" in judged["label"]
    for state in STATES:
        assert 1 <= judged[state] <= 3 and judged[f"{state}_unscored"] == 0
    with pytest.raises(ValueError, match="llm_judge needs an LLM synthesis backend"):
        evaluate_models(*arguments)
