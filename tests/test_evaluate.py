"""Held-out evaluation: the sliding-window perplexity is exact, the offline ROUGE keeps non-ASCII
words, and the stage scores base and adapted models on held-out documents only."""

from __future__ import annotations

import json
import math
from pathlib import Path
from pydoc_data.topics import topics

import pytest
import torch
from transformers import AutoModelForCausalLM

from docqa.modeling import load_tokenizer
from docqa.outputs import read_generations
from docqa.stages.evaluate import evaluate_models, heldout_text, rouge, sliding_window_perplexity, token_ids
from docqa.stages.synthesize import read_qa


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


def test_heldout_text_holds_only_held_out_documents(prepared):
    texts = heldout_text(Path(prepared["ingest"].path), Path(prepared["chunks"].path))
    joined = " ".join(" ".join(t.split()) for t in texts)
    assert len(texts) == 1  # names.txt is the one held-out document
    assert " ".join(topics["naming"].split()[:8]) in joined
    assert " ".join(topics["for"].split()[:8]) not in joined  # a training document's text


def test_evaluate_scores_base_and_adapted_on_held_out_questions(trained, tiny_base):
    recipe = trained["recipe"]
    out = evaluate_models(
        Path(trained["ingest"].path), Path(trained["chunks"].path), Path(trained["qa"].path),
        Path(trained["pretrained"].adapter_path), Path(trained["tuned"].adapter_path), tiny_base,
        recipe.model, recipe.evaluate, trained["workspace"] / "evaluate",
    )  # fmt: skip
    assert set(out.perplexity) == {"base", "pretrained", "sft"}
    assert all(math.isfinite(v) and v > 1 for v in out.perplexity.values())
    assert len(set(out.perplexity.values())) == 3  # three different models were scored
    assert set(out.rouge) == {"base", "sft"} and all(
        set(s) == {"rouge1", "rouge2", "rougeL"} for s in out.rouge.values()
    )
    held_out = read_qa(Path(trained["qa"].path), "eval")
    assert out.eval_questions == min(len(held_out), recipe.evaluate.max_questions)
    assert out.eval_tokens == recipe.evaluate.max_ppl_tokens
    generations = read_generations(Path(out.path))
    assert [g.question for g in generations] == list(held_out["question"])[: out.eval_questions]
    assert {g.doc_title for g in generations} <= set(held_out["doc_title"])
    assert all(isinstance(g.base_answer, str) and isinstance(g.tuned_answer, str) for g in generations)
    # forgetting on the base's held-out general text, with the gate's verdict
    forgetting = out.forgetting
    assert forgetting["source"].endswith("general_heldout.txt") and forgetting["tokens"] > 1000
    assert forgetting["ratio"] == pytest.approx(forgetting["tuned"] / forgetting["base"])
    assert forgetting["passed"] == (forgetting["ratio"] <= recipe.evaluate.max_forgetting_ratio)
    for name in ("base", "sft"):
        assert -1 <= out.semantic_similarity[name] <= 1
        recall = out.recall[name]
        assert 0 <= recall["recalled"] <= 1 and recall["scored"] + recall["unscored"] == out.eval_questions
        assert set(out.errors[name]) == {"empty", "too_long", "repetitive", "unrelated"}
    metrics = json.loads((Path(out.path) / "metrics.json").read_text())
    assert metrics["forgetting"] == forgetting and metrics["errors"] == out.errors


def test_the_forgetting_gate_reads_a_configured_general_text_and_can_fail(trained, tiny_base, tmp_path):
    recipe = trained["recipe"]
    general = tmp_path / "general.txt"
    general.write_text(" ".join(["The weather was mild and the river ran high after the spring rains."] * 60))
    settings = recipe.evaluate.model_copy(update={"general_text": str(general), "max_forgetting_ratio": 1e-6})
    out = evaluate_models(
        Path(trained["ingest"].path), Path(trained["chunks"].path), Path(trained["qa"].path),
        Path(trained["pretrained"].adapter_path), Path(trained["tuned"].adapter_path), tiny_base,
        recipe.model, settings, tmp_path / "evaluate",
    )  # fmt: skip
    assert out.forgetting["source"] == str(general) and out.forgetting["passed"] is False


def test_the_optional_llm_judge_scores_both_models_answers_and_is_labelled(trained, tiny_base, tmp_path):
    from conftest import openai_settings

    from bench.openai_stub import StubServer, chat_response

    def judge(body: dict) -> tuple[int, str]:
        answer = body["messages"][-1]["content"].split("Answer: ", 1)[1].split("\n", 1)[0]
        return 200, chat_response(json.dumps({"score": 1 if not answer.strip() else 3}))

    recipe = trained["recipe"]
    settings = recipe.evaluate.model_copy(update={"llm_judge": True})
    with StubServer(judge) as server:
        out = evaluate_models(
            Path(trained["ingest"].path), Path(trained["chunks"].path), Path(trained["qa"].path),
            Path(trained["pretrained"].adapter_path), Path(trained["tuned"].adapter_path), tiny_base,
            recipe.model, settings, tmp_path / "evaluate", openai_settings(server.base_url),
        )  # fmt: skip
    judged = out.llm_judge
    assert len(server.requests) == 2 * out.eval_questions and "not a ground truth" in judged["label"]
    for name in ("base", "sft"):
        assert 1 <= judged[name] <= 3 and judged[f"{name}_unscored"] == 0
    with pytest.raises(ValueError, match="llm_judge needs an LLM synthesis backend"):
        evaluate_models(
            Path(trained["ingest"].path), Path(trained["chunks"].path), Path(trained["qa"].path),
            Path(trained["pretrained"].adapter_path), Path(trained["tuned"].adapter_path), tiny_base,
            recipe.model, settings, tmp_path / "evaluate",
        )  # fmt: skip
