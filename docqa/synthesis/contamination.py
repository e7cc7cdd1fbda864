"""Decontamination of the held-out Q&A: drop eval pairs whose wording the training data already holds.

The split is by document, but the same passage can still sit in two documents (a licence, a repeated
definition, a copied paragraph), and a training Q&A pair can ask the held-out question word for word.
An eval pair whose question or answer shares a long word n-gram with training text measures memory,
not generalisation, so it is removed before evaluation and the removals are written as an artifact.

The test is the one GPT-3 and later reports use: a shared word n-gram (default 8 words, casefolded
unicode word tokens, punctuation ignored) between an eval text and any training text. The n-grams of
all training text are hashed into one dictionary once (100k n-grams for the ~500 × 200-word sample
corpus), so each eval text costs one lookup per n-gram.

Texts shorter than n words cannot share an n-gram. For a question that short (at least
:data:`MIN_VERBATIM_WORDS` words) the whole question appearing verbatim inside a training text counts as
contamination: a six-word question copied from a training Q&A pair is the same question. Short answers
are not checked that way: answers are spans of their chunk by design, and a short one ("100 degrees
Celsius", "True") recurs in any corpus on the topic without saying anything about leakage. Scripts
written without spaces (Chinese, Japanese) tokenize into whole phrases, so this test barely applies
to them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from pydantic import BaseModel

WORD = re.compile(r"\w+")
MIN_VERBATIM_WORDS = 5  # shorter questions ("What is a decorator?") are too generic to call copied
SOURCE_SEPARATOR = ":"  # source labels are "<kind>:<id>", e.g. "qa_train:17", "chunk:ab12…"


class ContaminationResult(BaseModel):
    """What :func:`decontaminate` found; ``removed_indices`` index the eval pairs as given."""

    n: int
    checked: int
    removed_indices: list[int]
    examples: list[dict]
    by_source: dict[str, int]
    unchecked: int  # pairs where neither question nor answer was long enough to be checked
    training_texts: dict[str, int]  # training texts indexed, by source kind


def words(text: str) -> list[str]:
    return WORD.findall(text.casefold())


def source_kind(label: str) -> str:
    """``"qa_train:17"`` → ``"qa_train"``; a label without a kind is its own kind."""
    return label.split(SOURCE_SEPARATOR, 1)[0]


class _NgramIndex:
    """Hashes of the word n-grams (one or several lengths) of every training text.

    Each hash maps to the first text that has it (for the examples) and to the set of source kinds
    that have it (for ``by_source``). Python's string hash is salted per process, which is harmless for
    an index that lives only in memory; a 64-bit collision among ~1e5 n-grams is vanishingly unlikely.
    """

    def __init__(self, texts: Sequence[tuple[str, str]], lengths: Iterable[int]) -> None:
        self.labels = [label for label, _ in texts]
        self.kinds = sorted({source_kind(label) for label in self.labels})
        self._first: dict[int, int] = {}
        self._kind_bits: dict[int, int] = {}
        kind_bit = {kind: 1 << i for i, kind in enumerate(self.kinds)}
        for position, (label, text) in enumerate(texts):
            tokens = words(text)
            bit = kind_bit[source_kind(label)]
            for n in set(lengths):
                for gram in _ngrams(tokens, n):
                    key = hash(gram)
                    self._first.setdefault(key, position)
                    self._kind_bits[key] = self._kind_bits.get(key, 0) | bit

    def find(self, gram: tuple[str, ...]) -> tuple[str, list[str]] | None:
        """The first training text holding ``gram`` and every source kind that does, or None."""
        key = hash(gram)
        position = self._first.get(key)
        if position is None:
            return None
        bits = self._kind_bits[key]
        return self.labels[position], [kind for i, kind in enumerate(self.kinds) if bits >> i & 1]


def _ngrams(tokens: Sequence[str], n: int) -> Iterable[tuple[str, ...]]:
    return (tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _grams_to_check(text: str, field: str, n: int) -> list[tuple[str, ...]]:
    """The n-grams of an eval text; a short question's whole word sequence; nothing for a short answer."""
    tokens = words(text)
    if len(tokens) >= n:
        return list(_ngrams(tokens, n))
    if field == "question" and len(tokens) >= MIN_VERBATIM_WORDS:
        return [tuple(tokens)]
    return []


def decontaminate(
    eval_pairs: list[tuple[str, str]],
    training_texts: list[tuple[str, str]],
    n: int,
    max_examples: int = 20,
) -> ContaminationResult:
    """The eval ``(question, answer)`` pairs that share a word n-gram with any training text.

    A pair is contaminated when its question or its answer shares a word n-gram (``n`` casefolded word
    tokens, punctuation ignored) with any training text, or when its question, shorter than ``n`` words
    but at least :data:`MIN_VERBATIM_WORDS`, appears whole inside one. Eval texts shorter than ``n``
    words can otherwise not match. ``examples`` (up to ``max_examples``) show, per removed pair, the first
    shared n-gram and the first training text holding it; ``by_source`` counts the removed pairs that share
    an n-gram with each source kind (the label's part before ":"), so a pair may count under two kinds.
    """
    if n < 1:
        raise ValueError(f"the decontamination n-gram length must be at least 1, got {n}")
    short_questions = {len(words(q)) for q, _ in eval_pairs} & set(range(MIN_VERBATIM_WORDS, n))
    index = _NgramIndex(training_texts, {n} | short_questions)
    removed: list[int] = []
    examples: list[dict] = []
    by_source = {kind: 0 for kind in index.kinds}
    unchecked = 0
    for position, (question, answer) in enumerate(eval_pairs):
        hits, checkable = _pair_hits(index, question, answer, n)
        unchecked += not checkable
        if not hits:
            continue
        removed.append(position)
        for kind in sorted({kind for _, _, _, kinds in hits for kind in kinds}):
            by_source[kind] += 1
        if len(examples) < max_examples:
            field, gram, label, _ = hits[0]
            examples.append(
                {
                    "index": position,
                    "question": question,
                    "answer": answer,
                    "field": field,
                    "ngram": " ".join(gram),
                    "source": label,
                }
            )
    return ContaminationResult(
        n=n,
        checked=len(eval_pairs),
        removed_indices=removed,
        examples=examples,
        by_source=by_source,
        unchecked=unchecked,
        training_texts={kind: sum(source_kind(lb) == kind for lb in index.labels) for kind in index.kinds},
    )


def _pair_hits(
    index: _NgramIndex, question: str, answer: str, n: int
) -> tuple[list[tuple[str, tuple[str, ...], str, list[str]]], bool]:
    """Every ``(field, n-gram, first source label, source kinds)`` hit of a pair; whether it was checkable."""
    hits = []
    checkable = False
    for field, text in (("question", question), ("answer", answer)):
        grams = _grams_to_check(text, field, n)
        checkable = checkable or bool(grams)
        for gram in grams:
            found = index.find(gram)
            if found is not None:
                hits.append((field, gram, *found))
    return hits, checkable


def contamination_report(result: ContaminationResult, max_examples: int | None = None) -> dict:
    """A JSON-ready summary for the run's artifacts: counts, shares, removed indices and examples."""
    removed = len(result.removed_indices)
    examples = result.examples if max_examples is None else result.examples[:max_examples]
    return {
        "ngram": result.n,
        "min_verbatim_question_words": MIN_VERBATIM_WORDS,
        "pairs_checked": result.checked,
        "pairs_removed": removed,
        "pairs_kept": result.checked - removed,
        "removed_share": round(removed / result.checked, 4) if result.checked else 0.0,
        "removed_by_source": dict(result.by_source),
        "pairs_too_short_to_check": result.unchecked,
        "training_texts": dict(result.training_texts),
        "removed_indices": list(result.removed_indices),
        "examples": [dict(example) for example in examples],
    }


class RewriteCheck(BaseModel):
    """What :func:`contaminated_rewrites` found; ``removed_indices`` index the rewrites as given."""

    n: int
    checked: int
    held_out_pairs: int
    removed_indices: list[int]
    by_split: dict[str, int]  # removed rewrites per held-out split they echo
    examples: list[dict]


def contaminated_rewrites(
    rewrites: Sequence[tuple[str, str, str]],
    held_out: Sequence[tuple[str, str, str]],
    n: int,
    max_examples: int = 20,
) -> RewriteCheck:
    """The rewrites that carry a held-out pair's wording that their own source chunk does not.

    ``rewrites`` are ``(label, text, source chunk text)``; ``held_out`` are ``(split, question, answer)``
    (knowledge and control pairs). A rewrite is contaminated when it shares a word n-gram with a held-out
    question or answer that its source chunk does not hold, or holds a held-out question of
    :data:`MIN_VERBATIM_WORDS` to ``n - 1`` words whole where its source does not. The source's own
    wording is the document's, which pretraining reads anyway; what a rewrite must never add is the
    question, or an answer's wording, that the evaluation asks about.
    """
    if n < 1:
        raise ValueError(f"the decontamination n-gram length must be at least 1, got {n}")
    index: dict[tuple[str, ...], tuple[str, str, str]] = {}
    for split, question, answer in held_out:
        for field, text in (("question", question), ("answer", answer)):
            tokens = words(text)
            grams = list(_ngrams(tokens, n))
            if field == "question" and MIN_VERBATIM_WORDS <= len(tokens) < n:
                grams.append(tuple(tokens))
            for gram in grams:
                index.setdefault(gram, (split, field, question))
    lengths = {len(gram) for gram in index}
    removed: list[int] = []
    examples: list[dict] = []
    by_split: dict[str, int] = {}
    for position, (label, text, source) in enumerate(rewrites):
        tokens, source_tokens = words(text), words(source)
        hit = None
        for length in sorted(lengths):
            new = set(_ngrams(tokens, length)) - set(_ngrams(source_tokens, length))
            hit = next((gram for gram in new if gram in index), None)
            if hit is not None:
                break
        if hit is None:
            continue
        split, field, question = index[hit]
        removed.append(position)
        by_split[split] = by_split.get(split, 0) + 1
        if len(examples) < max_examples:
            examples.append(
                {
                    "rewrite": label,
                    "split": split,
                    "field": field,
                    "question": question,
                    "ngram": " ".join(hit),
                }
            )
    return RewriteCheck(
        n=n,
        checked=len(rewrites),
        held_out_pairs=len(held_out),
        removed_indices=removed,
        by_split=by_split,
        examples=examples,
    )
