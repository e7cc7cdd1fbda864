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
    nothing = recall_summary(["x"], ["it is"], threshold=0.5)  # no reference with a content word
    assert (nothing.recalled, nothing.mean_recall, nothing.scored, nothing.unscored) == (None, None, 0, 1)


def test_strict_recall_counts_only_what_the_question_does_not_already_say() -> None:
    question = "What does the global statement declare?"
    reference = "The global statement declares that the listed identifiers are interpreted as globals."
    echo = "The global statement declares things."
    assert fact_recall(echo, reference) == pytest.approx(3 / 6)  # the earlier recall credits the echo
    assert fact_recall(echo, reference, question) == 0.0  # strict recall: it added nothing
    knows = "It declares that the listed identifiers are interpreted as globals."
    assert fact_recall(knows, reference, question) == 1.0
    assert fact_recall("anything", "The global statement.", "What is the global statement?") is None


def test_a_model_that_restates_every_question_scores_zero_strict_recall() -> None:
    questions = ["What is a lambda expression?", "What does the pass statement do?", "What is a decorator?"]
    references = [
        "A lambda expression creates an anonymous function from a single expression.",
        "The pass statement is a null operation: nothing happens when it executes.",
        "A decorator is a callable that takes a function and returns a replacement function.",
    ]
    echoes = [q.replace("What is", "That is").replace("?", ".") for q in questions]
    strict = recall_summary(echoes, references, 0.5, questions)
    assert strict.recalled == 0.0 and strict.mean_recall == 0.0 and strict.scored == 3
    assert recall_summary(references, references, 0.5, questions).recalled == 1.0


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


def test_the_knowledge_gain_subtracts_the_control_and_carries_its_uncertainty() -> None:
    from docqa.figures import AnswerScores, QuestionSet, RecallSummary, RougeScores, knowledge_gain

    def scored(recalled: float) -> AnswerScores:
        summary = RecallSummary(recalled=recalled, mean_recall=recalled, scored=4, unscored=0)
        rouge = RougeScores(rouge1=0, rouge2=0, rougeL=0)
        return AnswerScores(
            strict_recall=summary, recall=summary, rouge=rouge, semantic_similarity=0, errors={}
        )

    def question_set(name, base, final) -> QuestionSet:
        return QuestionSet(
            name=name,
            questions=4,
            answers={"base": scored(base), "pretrained": scored(base), "final": scored(final)},
        )

    sets = {"knowledge": question_set("knowledge", 0.25, 0.75), "control": question_set("control", 0.0, 0.25)}
    flags = {
        "knowledge": {"base": [1.0, 0.0, 0.0, 0.0], "pretrained": [0.0] * 4, "final": [1.0, 1.0, 1.0, 0.0]},
        "control": {"base": [0.0] * 4, "pretrained": [0.0] * 4, "final": [1.0, 0.0, 0.0, 0.0]},
    }
    gain = knowledge_gain(sets, flags)
    assert gain.controlled and gain.value == pytest.approx(0.5 - 0.25)
    # knowledge changes 0,1,1,0 (variance of the mean 1/12); control 1,0,0,0 (1/16)
    assert gain.standard_error == pytest.approx((1 / 12 + 1 / 16) ** 0.5)
    low, high = gain.interval_95
    assert low == pytest.approx(0.25 - 1.96 * gain.standard_error) and high > 0.25
    alone = knowledge_gain({"knowledge": sets["knowledge"]}, {"knowledge": flags["knowledge"]})
    assert not alone.controlled and alone.value == 0.5 and "uncontrolled" in alone.label
    assert alone.standard_error == pytest.approx((1 / 12) ** 0.5)
