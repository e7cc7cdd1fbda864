"""What a model's answers to held-out questions carry: per-fact recall, and the errors a reviewer looks for.

Plain functions over strings, so every definition can be read and tested without a model
(``docs/evaluation.md`` states them in words):

- **fact recall** of one answer: the share of the reference answer's content words (casefolded word
  tokens minus stop words; numbers kept; words of 5+ letters match on their first 5 letters, so
  "returns" carries "returned") that the answer contains. A question counts as **recalled** when that
  share is at least ``recall_threshold``. References with no content word are left out and counted.
- **errors** of one answer, each counted with examples: ``empty``; ``too_long`` (more than
  ``long_answer_ratio`` × the reference's words); ``repetitive`` (the synthesis filter's repetition
  test); ``unrelated`` (MiniLM similarity with the question's source chunk below a threshold, computed
  by the caller).
"""

from __future__ import annotations

from pydantic import BaseModel

from docqa.synthesis.quality import content_words, is_repetitive, stem, words

MAX_EXAMPLES = 3
ERROR_KINDS = ("empty", "too_long", "repetitive", "unrelated")


def _terms(text: str) -> set[str]:
    return {stem(w) or w for w in content_words(text)}


def fact_recall(answer: str, reference: str) -> float | None:
    """Share of the reference's content words the answer carries; None when the reference has none."""
    wanted = _terms(reference)
    if not wanted:
        return None
    return len(wanted & _terms(answer)) / len(wanted)


class RecallSummary(BaseModel):
    recalled: float  # share of scored questions whose recall reaches the threshold
    mean_recall: float
    scored: int
    unscored: int  # references without a content word


def recall_summary(answers: list[str], references: list[str], threshold: float) -> RecallSummary:
    scores = [fact_recall(a, r) for a, r in zip(answers, references, strict=True)]
    scored = [s for s in scores if s is not None]
    if not scored:
        raise ValueError("no held-out reference answer has a content word: fact recall cannot be measured")
    return RecallSummary(
        recalled=sum(s >= threshold for s in scored) / len(scored),
        mean_recall=sum(scored) / len(scored),
        scored=len(scored),
        unscored=len(scores) - len(scored),
    )


def answer_errors(
    questions: list[str],
    answers: list[str],
    references: list[str],
    chunk_similarity: list[float],
    long_answer_ratio: float,
    max_repetition: float,
    min_chunk_similarity: float,
) -> dict[str, dict]:
    """Per error kind: how many answers show it, and up to :data:`MAX_EXAMPLES` of them."""
    found: dict[str, dict] = {kind: {"count": 0, "examples": []} for kind in ERROR_KINDS}
    rows = zip(questions, answers, references, chunk_similarity, strict=True)
    for question, answer, reference, similarity in rows:
        kinds = []
        if not answer.strip():
            kinds.append("empty")
        else:
            if len(words(answer)) > long_answer_ratio * max(1, len(words(reference))):
                kinds.append("too_long")
            if is_repetitive(answer, max_repetition):
                kinds.append("repetitive")
            if similarity < min_chunk_similarity:
                kinds.append("unrelated")
        for kind in kinds:
            found[kind]["count"] += 1
            if len(found[kind]["examples"]) < MAX_EXAMPLES:
                found[kind]["examples"].append(
                    {"question": question, "answer": answer, "reference": reference}
                )
    return found
