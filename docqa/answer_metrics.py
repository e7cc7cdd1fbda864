"""What a model's answers to held-out questions carry: per-fact recall, and the errors a reviewer looks for.

Plain functions over strings, so every definition can be read and tested without a model
(``docs/evaluation.md`` states them in words):

- **fact recall** of one answer: the share of the reference answer's content words (casefolded word
  tokens minus stop words; numbers kept; words of 5+ letters match on their first 5 letters, so
  "returns" carries "returned") that the answer contains. A question counts as **recalled** when that
  share is at least ``recall_threshold``. References with no content word are left out and counted.
- **strict recall** (the headline): the same, over the reference's content words that are *not* in the
  question. An answer that only restates the question carries none of them and scores zero; a reference
  that adds nothing to its question is left out (unscored).
- **errors** of one answer, each counted with examples: ``empty``; ``too_long`` (more than
  ``long_answer_ratio`` × the reference's words); ``repetitive`` (the synthesis filter's repetition
  test); ``unrelated`` (MiniLM similarity with the question's source chunk below a threshold, computed
  by the caller).
"""

from __future__ import annotations

from docqa.figures import RecallSummary
from docqa.synthesis.quality import content_words, is_repetitive, stem, words

MAX_EXAMPLES = 3
ERROR_KINDS = ("empty", "too_long", "repetitive", "unrelated")


def _terms(text: str) -> set[str]:
    return {stem(w) or w for w in content_words(text)}


def fact_recall(answer: str, reference: str, question: str | None = None) -> float | None:
    """Share of the reference's content words the answer carries, leaving out those of ``question``
    when given (strict recall); None when no content word is left to look for."""
    wanted = _terms(reference)
    if question is not None:
        wanted -= _terms(question)
    if not wanted:
        return None
    return len(wanted & _terms(answer)) / len(wanted)


def recalled_flags(
    answers: list[str], references: list[str], threshold: float, questions: list[str]
) -> list[float | None]:
    """Per question, 1.0 when its strict recall reaches ``threshold``, else 0.0; None when unscored."""
    scores = [fact_recall(a, r, q) for a, r, q in zip(answers, references, questions, strict=True)]
    return [None if score is None else float(score >= threshold) for score in scores]


def recall_summary(
    answers: list[str], references: list[str], threshold: float, questions: list[str] | None = None
) -> RecallSummary:
    """Recall over a question set; strict (words not in the question) when ``questions`` are given."""
    asked = questions if questions is not None else [None] * len(answers)
    scores = [fact_recall(a, r, q) for a, r, q in zip(answers, references, asked, strict=True)]
    scored = [s for s in scores if s is not None]
    if not scored:
        return RecallSummary(recalled=None, mean_recall=None, scored=0, unscored=len(scores))
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
