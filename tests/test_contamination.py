"""Decontamination: shared word n-grams between held-out pairs and training text, and the report."""

from __future__ import annotations

import json

import pytest

from docqa.synthesis.contamination import (
    MIN_VERBATIM_WORDS,
    ContaminationResult,
    contamination_report,
    decontaminate,
)

CHUNK = (
    "A context manager is an object that defines the runtime context to be established when executing a "
    "with statement. The context manager handles the entry into, and the exit from, the desired runtime "
    "context for the execution of the block of code."
)
TRAINING = [
    ("chunk:c1", CHUNK),
    ("chunk:c2", "The for statement is used to iterate over the elements of a sequence or other iterable."),
    (
        "qa_train:0",
        "What does the pass statement do? Nothing; it is a placeholder where a statement is required.",
    ),
    ("qa_train:1", "Which exception does next() raise when an iterator is exhausted? StopIteration."),
]


def test_copied_8gram_is_found_with_its_source():
    eval_pairs = [
        # answer copies 11 words of chunk c1 (four 8-grams), in other case and punctuation
        (
            "What is a context manager?",
            "An object that DEFINES the runtime context, to be established when it runs.",
        ),
        # shares only the 3-word phrase "the runtime context" and a few common words
        (
            "What does a runtime context hold in asyncio?",
            "The event loop keeps the runtime context of each task.",
        ),
    ]
    result = decontaminate(eval_pairs, TRAINING, n=8)
    assert result.checked == 2
    assert result.removed_indices == [0]
    (example,) = result.examples
    assert example["index"] == 0
    assert example["field"] == "answer"
    assert example["ngram"] == "an object that defines the runtime context to"
    assert example["source"] == "chunk:c1"
    assert result.by_source == {"chunk": 1, "qa_train": 0}


def test_n_is_respected():
    # exactly 8 shared words: "to iterate over the elements of a sequence"
    eval_pairs = [
        ("How do you walk through a list?", "You use a loop to iterate over the elements of a sequence")
    ]
    assert decontaminate(eval_pairs, TRAINING, n=8).removed_indices == [0]
    assert decontaminate(eval_pairs, TRAINING, n=9).removed_indices == []
    assert decontaminate(eval_pairs, TRAINING, n=3).removed_indices == [0]


def test_counts_by_source_kind():
    eval_pairs = [
        ("What is used to iterate over the elements of a sequence?", "The for statement."),  # chunk c2
        (
            "What does the pass statement do in Python code?",
            "Nothing; it is a placeholder where a statement is required.",
        ),
        (
            "What does a context manager handle?",
            "The entry into, and the exit from, the desired runtime context.",
        ),
        ("How are generators created?", "With a function that contains a yield expression."),  # clean
    ]
    result = decontaminate(eval_pairs, TRAINING, n=8)
    assert result.removed_indices == [0, 1, 2]
    assert result.by_source == {"chunk": 2, "qa_train": 1}
    assert [e["source"] for e in result.examples] == ["chunk:c2", "qa_train:0", "chunk:c1"]
    assert result.training_texts == {"chunk": 2, "qa_train": 2}


def test_a_pair_matching_two_kinds_counts_under_both():
    training = [("chunk:c1", CHUNK), ("qa_train:7", "What is a context manager? " + CHUNK[:120])]
    eval_pairs = [("Define it.", "A context manager is an object that defines the runtime context.")]
    result = decontaminate(eval_pairs, training, n=8)
    assert result.removed_indices == [0]
    assert result.by_source == {"chunk": 1, "qa_train": 1}


def test_short_question_copied_verbatim_is_contamination():
    copied = "Which exception does next() raise?"  # 5 words < n, inside qa_train:1
    assert len(copied.split()) == MIN_VERBATIM_WORDS
    eval_pairs = [
        (copied, "It raises StopIteration."),
        ("What is a context?", "Something."),  # 4 words, found in no text; too short anyway
        ("Which exception does open() raise?", "OSError."),  # 5 words, not verbatim anywhere
    ]
    result = decontaminate(eval_pairs, TRAINING, n=8)
    assert result.removed_indices == [0]
    assert result.examples[0]["field"] == "question"
    assert result.examples[0]["ngram"] == "which exception does next raise"
    assert result.examples[0]["source"] == "qa_train:1"
    assert result.unchecked == 1  # the 4-word question with a one-word answer


def test_short_answers_are_not_matched_verbatim():
    # "StopIteration" is in qa_train:1, but a one-word answer says nothing about leakage.
    result = decontaminate(
        [("Which exception ends a for loop over an iterator?", "StopIteration.")], TRAINING, n=8
    )
    assert result.removed_indices == []


def test_examples_are_capped_and_report_is_json_ready():
    eval_pairs = [
        (f"Question number {i} about loops?", "to iterate over the elements of a sequence") for i in range(5)
    ]
    result = decontaminate(eval_pairs, TRAINING, n=8, max_examples=2)
    assert result.removed_indices == [0, 1, 2, 3, 4]
    assert len(result.examples) == 2
    report = contamination_report(result)
    assert json.loads(json.dumps(report)) == report
    assert report["pairs_checked"] == 5
    assert report["pairs_removed"] == 5
    assert report["pairs_kept"] == 0
    assert report["removed_by_source"] == {"chunk": 5, "qa_train": 0}
    assert report["ngram"] == 8
    assert len(contamination_report(result, max_examples=1)["examples"]) == 1
    assert ContaminationResult.model_validate(result.model_dump()) == result


def test_nothing_to_check():
    result = decontaminate([], TRAINING, n=8)
    assert result.removed_indices == [] and result.checked == 0
    assert contamination_report(result)["removed_share"] == 0.0
    with pytest.raises(ValueError, match="at least 1"):
        decontaminate([], TRAINING, n=0)


def test_sample_corpus_size_is_fast():
    import time

    words = [f"w{i % 997}x{i % 13}" for i in range(100_000)]  # ~500 chunks × 200 words
    training = [(f"chunk:c{i}", " ".join(words[i * 200 : (i + 1) * 200])) for i in range(500)]
    eval_pairs = [
        (" ".join(words[i : i + 9]), "An answer that shares nothing.") for i in range(0, 100_000, 500)
    ]
    start = time.perf_counter()
    result = decontaminate(eval_pairs, training, n=8)
    assert time.perf_counter() - start < 5
    assert len(result.removed_indices) == len(eval_pairs)
