"""Per-fact recall and the answer error analysis, on strings: each definition can fail."""

from __future__ import annotations

import pytest

from docqa.answer_metrics import answer_errors, fact_recall, recall_summary


def test_fact_recall_counts_the_references_content_words_the_answer_carries() -> None:
    reference = "The assert statement raises AssertionError when the expression is false."
    assert fact_recall("It raises AssertionError if the expression is false.", reference) == pytest.approx(
        4 / 5
    )
    assert fact_recall("assert raises assertionerror expression false statement", reference) == 1.0
    assert fact_recall("A loop repeats a block.", reference) == 0.0
    assert fact_recall("returned values", "It returns the value.") == 1.0  # inflections share a stem
    assert fact_recall("anything", "It is what it is.") is None  # stop words only: nothing to recall


def test_recall_summary_applies_the_threshold_and_counts_unscored_references() -> None:
    answers = ["raises AssertionError", "nothing useful", "whatever"]
    references = ["assert raises AssertionError", "the loop repeats", "it is"]
    summary = recall_summary(answers, references, threshold=0.5)
    assert (summary.recalled, summary.scored, summary.unscored) == (0.5, 2, 1)
    assert summary.mean_recall == pytest.approx((1 + 0) / 2)  # "assert" and "AssertionError" share a stem
    with pytest.raises(ValueError, match="content word"):
        recall_summary(["x"], ["it is"], threshold=0.5)


def test_answer_errors_counts_each_kind_with_examples() -> None:
    questions = ["q1", "q2", "q3", "q4", "q5"]
    answers = [
        "",
        "word " * 40,
        "the cache the cache the cache the cache the cache the cache",
        "Paris.",
        "Short.",
    ]
    references = ["ref one", "a short reference", "the cache holds results", "Lyon.", "Short."]
    similarity = [0.9, 0.9, 0.9, 0.05, 0.8]
    errors = answer_errors(questions, answers, references, similarity, 3.0, 0.5, 0.2)
    counts = {kind: entry["count"] for kind, entry in errors.items()}
    assert counts == {"empty": 1, "too_long": 1, "repetitive": 2, "unrelated": 1}
    assert errors["unrelated"]["examples"] == [{"question": "q4", "answer": "Paris.", "reference": "Lyon."}]
