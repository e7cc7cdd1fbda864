"""Quality filters for synthesized Q&A pairs, and near-duplicate chunks found before any request is sent.

A generator (an LLM or the extractive rules) writes pairs that are too short or too long, lean on "the
passage" instead of naming their subject, loop on one phrase, drift into another language, answer from
outside the chunk, or repeat a question already asked. Each such pair teaches the fine-tuned model the
wrong thing, so :func:`rejection_reasons` gives every candidate the FIRST reason it fails, in the fixed
order of :data:`REJECTION_REASONS`, and the stage counts rejections by reason (a high count points at the
prompt, the model or a setting).

The order runs from cheap to expensive: string checks, then lingua's language identification (well
under a millisecond per pair), then lexical support against the chunk, then one batched MiniLM
embedding call for the pairs still standing (question + answer against the best-matching window of
the chunk), and last the duplicate checks, which only consider pairs that passed everything else (so
the earliest *kept* pair of a group wins, never a rejected one).
``wrong_language`` runs before the two support checks on purpose: an answer in the wrong language has
no words in common with the chunk and would otherwise be counted as unsupported, hiding the real cause.

Near duplicates are found with MinHash LSH (datasketch) and then confirmed with the exact Jaccard
similarity of the shingle sets: the LSH index only proposes candidates, tuned for recall (a pair exactly
at the threshold is proposed ~98% of the time, see :data:`LSH_WEIGHTS`), and the exact check makes the
verdict independent of MinHash noise. Everything is deterministic: fixed MinHash seed and permutations,
earliest item wins.

The embedder (:mod:`docqa.synthesis.embedder`) and the language identifier
(:mod:`docqa.synthesis.language`) are slow to load, so callers create them once and pass them in.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from datasketch import MinHash, MinHashLSH

from docqa.settings import SynthesizeSettings

if TYPE_CHECKING:
    from docqa.synthesis.language import LanguageIdentifier

# --- rejection reasons, in the order they are checked -------------------------------------------------

QUESTION_TOO_SHORT = "question_too_short"
ANSWER_TOO_SHORT = "answer_too_short"
QUESTION_TOO_LONG = "question_too_long"
ANSWER_TOO_LONG = "answer_too_long"
QUESTION_REFERS_TO_PASSAGE = "question_refers_to_passage"
REPETITIVE = "repetitive"
WRONG_LANGUAGE = "wrong_language"
ANSWER_NOT_IN_CHUNK = "answer_not_in_chunk"
ANSWER_UNLIKE_CHUNK = "answer_unlike_chunk"
DUPLICATE_QUESTION = "duplicate_question"
NEAR_DUPLICATE_QUESTION = "near_duplicate_question"
REJECTION_REASONS = (
    QUESTION_TOO_SHORT,
    ANSWER_TOO_SHORT,
    QUESTION_TOO_LONG,
    ANSWER_TOO_LONG,
    QUESTION_REFERS_TO_PASSAGE,
    REPETITIVE,
    WRONG_LANGUAGE,
    ANSWER_NOT_IN_CHUNK,
    ANSWER_UNLIKE_CHUNK,
    DUPLICATE_QUESTION,
    NEAR_DUPLICATE_QUESTION,
)

ANSWER_LENGTH_SLACK = 1.5  # answers up to max_answer_words × this are kept: the prompt's limit is soft

# --- tokens -------------------------------------------------------------------------------------------

WORD = re.compile(r"\w+")  # unicode word tokens; punctuation and symbols are dropped
# Function words that say nothing about whether an answer comes from the chunk (English; in other
# languages no word is dropped, which only makes the support check more lenient).
STOP_WORDS = frozenset((
    "a", "an", "the", "and", "or", "but", "nor", "if", "then", "else", "so", "than", "that", "this",
    "these", "those", "there", "here", "it", "its", "is", "are", "was", "were", "be", "been", "being",
    "am", "has", "have", "had", "having", "do", "does", "did", "done", "can", "could", "may", "might",
    "must", "shall", "should", "will", "would", "of", "to", "in", "on", "at", "by", "for", "with", "from",
    "as", "into", "onto", "over", "under", "about", "between", "through", "during", "before", "after",
    "above", "below", "up", "down", "out", "off", "not", "no", "also", "such", "very", "just", "only",
    "both", "each", "any", "all", "some", "more", "most", "other", "same", "own", "too", "i", "me", "my",
    "we", "our", "you", "your", "he", "him", "his", "she", "her", "they", "them", "their", "what", "which",
    "who", "whom", "whose", "when", "where", "why", "how", "s", "t", "d", "ll", "re", "ve", "m",
))  # fmt: skip
STEM_CHARS = 5  # alphabetic words sharing their first 5 letters count as one (return / returns / returned)


def words(text: str) -> list[str]:
    """Casefolded unicode word tokens, punctuation ignored."""
    return WORD.findall(text.casefold())


def content_words(text: str) -> list[str]:
    """Word tokens minus :data:`STOP_WORDS`; numbers are kept (they are what many answers are)."""
    return [word for word in words(text) if word not in STOP_WORDS]


def normalised_question(question: str) -> str:
    """The key of the exact-duplicate check: casefolded words, whitespace and punctuation dropped."""
    return " ".join(words(question))


# --- candidates ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One generated pair and the chunk it was generated from."""

    question: str
    answer: str
    chunk_id: str
    chunk_text: str


# --- questions that lean on the passage ---------------------------------------------------------------

_SOURCE = (
    r"(?:passage|excerpt|snippet|extract|paragraph|text|document|article|section|chapter|context"
    r"|chunk|source|material|content)s?"
)
_QUALIFIER = (
    r"(?:given|provided|above|preceding|following|accompanying|attached|supplied|quoted|cited"
    r"|current|original|previous|same)"
)
# "the text attribute", "this document root", "the context manager" name a thing, not the passage.
_NOT_COMPOUND = (
    r"(?!\s*(?:files?|editors?|attributes?|nodes?|fields?|box|boxes|modes?|objects?|strings?|encodings?"
    r"|trees?|roots?|types?|class|classes|elements?|formats?|body|head|stores?|databases?|models?"
    r"|managers?|windows?|blocks?|widgets?|areas?|inputs?|outputs?|streams?|processing|search|length"
    r"|size|methods?|functions?|calls?|options?|commands?|tools?|apis?|headers?|variables?|switch"
    r"|menu|property|properties|layer|window|of)\b)"
)
_REPORTING_VERB = (
    r"(?:say|state|mention|describe|discuss|suggest|claim|argue|note|explain|imply|refer|present|list"
    r"|show|highlight|emphasi[sz]e|conclude|define|recommend|propose|report|indicate|tell)"
)
_PARTICIPLE = (
    r"(?:mentioned|described|discussed|listed|shown|given|stated|cited|quoted|presented|referenced"
    r"|noted|outlined|explained|provided|introduced|covered|defined|used|highlighted|named|specified)"
)
PASSAGE_REFERENCE = re.compile(
    "|".join(
        (
            # according to the passage / the given text / the author
            rf"\baccording to (?:the|this|that|these)\s+(?:{_QUALIFIER}\s+)?(?:{_SOURCE}|authors?|writers?)"
            rf"{_NOT_COMPOUND}",
            # in this passage / from this document / of this excerpt
            rf"\b(?:in|from|within|throughout|by|of) (?:this|these)\s+(?:{_QUALIFIER}\s+)?{_SOURCE}"
            rf"{_NOT_COMPOUND}",
            # the given text / the following section
            rf"\b(?:the|this|these)\s+{_QUALIFIER}\s+{_SOURCE}\b",
            # the passage / this excerpt / this document (a bare reference to the material itself)
            rf"\b(?:the|this)\s+(?:passage|excerpt|snippet)s?{_NOT_COMPOUND}",
            rf"\bthis\s+(?:text|document|article|paragraph|section|chapter|chunk|extract){_NOT_COMPOUND}",
            # the author says / what is the author's view (but "the author of PEP 8" names a person)
            rf"\b(?:the|this|that)\s+(?:authors?|writers?)\b{_NOT_COMPOUND}",
            # mentioned above / described earlier / the text above / the above example
            rf"\b{_PARTICIPLE}\s+(?:above|below|earlier|previously|before|herein)\b",
            rf"\b{_SOURCE}\s+(?:above|below)\b",
            r"\b(?:above-mentioned|aforementioned|aforesaid)\b|\b(?:the|this)\s+above\b",
            # described in the text / defined in the given document
            rf"\b{_PARTICIPLE} (?:in|by|within|throughout) (?:the|this)\s+(?:{_QUALIFIER}\s+)?{_SOURCE}"
            rf"{_NOT_COMPOUND}",
            # what does the text say / the document describes
            rf"\b(?:does|did|do)\s+(?:the|this)\s+(?:{_QUALIFIER}\s+)?(?:{_SOURCE}|authors?|writers?)\s+"
            rf"{_REPORTING_VERB}\b",
            rf"\b(?:the|this)\s+(?:{_QUALIFIER}\s+)?{_SOURCE}\s+"
            rf"(?:{_REPORTING_VERB}s|is about|talks about)\b",
        )
    ),
    re.IGNORECASE,
)


def refers_to_passage(question: str) -> bool:
    """Whether the question points at "the passage" (or text, author, …) instead of naming its subject."""
    return PASSAGE_REFERENCE.search(question) is not None


# --- degenerate repetition ----------------------------------------------------------------------------

REPETITION_NGRAM = 3
REPEATED_TOKEN_MIN_COUNT = 6  # a single word this often …
REPEATED_TOKEN_MIN_SHARE = 0.3  # … and making up this share of all words is a loop
# One unit of up to 8 characters repeated 16+ times in a row: "hahaha…", "--------…", "abcabcabc…".
CHARACTER_LOOP = re.compile(r"(.{1,8}?)\1{15,}", re.DOTALL)


def repeated_ngram_share(tokens: Sequence[str], n: int = REPETITION_NGRAM) -> float:
    """Share of the word n-grams that repeat an earlier one (0 for texts shorter than n words)."""
    grams = list(zip(*(tokens[i:] for i in range(n)), strict=False))
    if not grams:
        return 0.0
    return 1 - len(set(grams)) / len(grams)


def is_repetitive(text: str, max_repetition: float) -> bool:
    """Degenerate output: repeated word 3-grams above ``max_repetition``, a looping word or characters."""
    tokens = words(text)
    if repeated_ngram_share(tokens) > max_repetition:
        return True
    if tokens:
        _, count = Counter(tokens).most_common(1)[0]
        if count >= REPEATED_TOKEN_MIN_COUNT and count / len(tokens) >= REPEATED_TOKEN_MIN_SHARE:
            return True
    return CHARACTER_LOOP.search(text) is not None


# --- lexical support ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ChunkVocabulary:
    words: frozenset[str]
    stems: frozenset[str]


def stem(word: str) -> str | None:
    """The first :data:`STEM_CHARS` letters of an alphabetic word that long, else None."""
    return word[:STEM_CHARS] if word.isalpha() and len(word) >= STEM_CHARS else None


def _vocabulary(text: str) -> _ChunkVocabulary:
    tokens = frozenset(words(text))
    return _ChunkVocabulary(tokens, frozenset(s for s in map(stem, tokens) if s is not None))


def answer_overlap(answer: str, vocabulary: _ChunkVocabulary) -> float:
    """Share of the answer's content words found in the chunk (0 when the answer has none).

    A word counts as found when the chunk has it, or (alphabetic words of 5+ letters) a word with the
    same first :data:`STEM_CHARS` letters: a crude, language-independent allowance for inflection.
    Numbers must match exactly.
    """
    answer_words = content_words(answer)
    if not answer_words:
        return 0.0
    found = sum(w in vocabulary.words or stem(w) in vocabulary.stems for w in answer_words)
    return found / len(answer_words)


# --- string checks (cheap, one candidate at a time) ---------------------------------------------------


def _text_rejection(candidate: Candidate, settings: SynthesizeSettings) -> str | None:
    question, answer = candidate.question.strip(), candidate.answer.strip()
    if len(question) < settings.min_question_chars:
        return QUESTION_TOO_SHORT
    if len(answer) < settings.min_answer_chars:
        return ANSWER_TOO_SHORT
    if len(question.split()) > settings.max_question_words:
        return QUESTION_TOO_LONG
    if len(answer.split()) > settings.max_answer_words * ANSWER_LENGTH_SLACK:
        return ANSWER_TOO_LONG
    if refers_to_passage(question):
        return QUESTION_REFERS_TO_PASSAGE
    if is_repetitive(question, settings.max_repetition) or is_repetitive(answer, settings.max_repetition):
        return REPETITIVE
    return None


# --- the filter ---------------------------------------------------------------------------------------


class PassageScorer(Protocol):
    """What the similarity check needs: :class:`Embedder`, or a wrapper that remembers its scores."""

    def passage_similarities(self, texts: list[str], passages: list[str]) -> list[float]: ...


def rejection_reasons(
    candidates: list[Candidate],
    settings: SynthesizeSettings,
    embedder: PassageScorer | None,
    language_id: LanguageIdentifier | None,
) -> list[str | None]:
    """One entry per candidate: None to keep it, else the first reason of :data:`REJECTION_REASONS` it fails.

    ``answer_unlike_chunk`` compares question + answer with the chunk (see :func:`_reject_unlike_chunk`)
    and is skipped when ``embedder`` is None; ``wrong_language`` when
    ``settings.check_language`` is False or ``language_id`` is None. Duplicates are judged among the
    candidates that passed every other check, in order: the earliest one is kept.
    """
    reasons = [_text_rejection(c, settings) for c in candidates]
    if settings.check_language and language_id is not None:
        _reject(reasons, candidates, WRONG_LANGUAGE, lambda c: _wrong_language(c, language_id, settings))
    vocabularies: dict[str, _ChunkVocabulary] = {}
    _reject(reasons, candidates, ANSWER_NOT_IN_CHUNK, lambda c: _unsupported(c, vocabularies, settings))
    if embedder is not None:
        _reject_unlike_chunk(reasons, candidates, embedder, settings.min_answer_similarity)
    _reject_duplicates(reasons, candidates, settings.near_duplicate_threshold)
    return reasons


def _reject(
    reasons: list[str | None], candidates: list[Candidate], reason: str, fails: Callable[[Candidate], bool]
) -> None:
    for i, candidate in enumerate(candidates):
        if reasons[i] is None and fails(candidate):
            reasons[i] = reason


def _wrong_language(
    candidate: Candidate, language_id: LanguageIdentifier, settings: SynthesizeSettings
) -> bool:
    # Question and answer together: a question alone is often 6–10 words, too few to judge.
    language = language_id.language_of(f"{candidate.question}\n{candidate.answer}")
    return language is not None and language != settings.language


def _unsupported(
    candidate: Candidate, vocabularies: dict[str, _ChunkVocabulary], settings: SynthesizeSettings
) -> bool:
    vocabulary = vocabularies.get(candidate.chunk_text)
    if vocabulary is None:
        vocabulary = vocabularies[candidate.chunk_text] = _vocabulary(candidate.chunk_text)
    return answer_overlap(candidate.answer, vocabulary) < settings.min_answer_overlap


def _reject_unlike_chunk(
    reasons: list[str | None], candidates: list[Candidate], embedder: PassageScorer, min_similarity: float
) -> None:
    """Reject pairs whose question + answer is unlike every window of their chunk.

    The pair, not the answer alone: a short correct answer carries no topic ("Strings.", "Exactly one.",
    "No." score 0.14, 0.01, -0.02 against the os.path.join paragraph of the tests, so answer-alone would
    reject them at 0.3), while with its question the same pairs score 0.64, 0.39, 0.68 and an off-topic
    pair stays near 0. That the answer itself comes from the chunk is ``answer_not_in_chunk``'s job.
    """
    open_ = [i for i, reason in enumerate(reasons) if reason is None]
    if not open_:
        return
    pairs = [f"{candidates[i].question}\n{candidates[i].answer}" for i in open_]
    scores = embedder.passage_similarities(pairs, [candidates[i].chunk_text for i in open_])
    for i, score in zip(open_, scores, strict=True):
        if score < min_similarity:
            reasons[i] = ANSWER_UNLIKE_CHUNK


def _reject_duplicates(reasons: list[str | None], candidates: list[Candidate], threshold: float) -> None:
    seen: set[str] = set()
    index = NearDuplicateIndex(threshold)
    for i, candidate in enumerate(candidates):
        if reasons[i] is not None:
            continue
        key = normalised_question(candidate.question)
        if key in seen:
            reasons[i] = DUPLICATE_QUESTION
            continue
        shingles = question_shingles(candidate.question)
        if index.match(shingles) is not None:
            reasons[i] = NEAR_DUPLICATE_QUESTION
            continue
        seen.add(key)
        index.add(i, shingles)


# --- near duplicates: MinHash LSH proposes, exact Jaccard decides -------------------------------------

MINHASH_NUM_PERM = 128
MINHASH_SEED = 1
# datasketch picks bands × rows minimising weighted false positives/negatives around the threshold. The
# default (0.5, 0.5) proposes a pair exactly at the threshold only 30–40% of the time; weighting
# false negatives 0.99 raises that to ~98% (128 permutations, thresholds 0.8–0.9). The extra false
# candidates cost one exact Jaccard each.
LSH_WEIGHTS = (0.01, 0.99)
LSH_MAX_THRESHOLD = 0.99  # datasketch finds no band layout at 1.0; identical sets collide at 0.99 anyway


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def _minhash(shingles: Iterable[str]) -> MinHash:
    minhash = MinHash(num_perm=MINHASH_NUM_PERM, seed=MINHASH_SEED)
    minhash.update_batch([s.encode("utf-8") for s in shingles])
    return minhash


class NearDuplicateIndex:
    """Shingle sets added so far; :meth:`match` finds the earliest with Jaccard ≥ ``threshold``."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._lsh = MinHashLSH(
            threshold=min(threshold, LSH_MAX_THRESHOLD), num_perm=MINHASH_NUM_PERM, weights=LSH_WEIGHTS
        )
        self._sets: dict[int, frozenset[str]] = {}

    def match(self, shingles: frozenset[str]) -> int | None:
        """Key of the earliest added set at least ``threshold`` similar, or None. Empty sets match nothing."""
        if not shingles:
            return None
        candidates = sorted(self._lsh.query(_minhash(shingles)))
        return next((k for k in candidates if jaccard(shingles, self._sets[k]) >= self.threshold), None)

    def add(self, key: int, shingles: frozenset[str]) -> None:
        if shingles:
            self._lsh.insert(key, _minhash(shingles))
            self._sets[key] = shingles


# English contractions, spelled out so that "What's" and "What is" are one question.
_CONTRACTIONS = (
    (re.compile(r"\bcan't\b"), "cannot"),
    (re.compile(r"\bwon't\b"), "will not"),
    (re.compile(r"n't\b"), " not"),
    (re.compile(r"'s\b"), " is"),
    (re.compile(r"'re\b"), " are"),
    (re.compile(r"'ll\b"), " will"),
    (re.compile(r"'ve\b"), " have"),
    (re.compile(r"'m\b"), " am"),
    (re.compile(r"'d\b"), " would"),
)


def question_shingles(question: str) -> frozenset[str]:
    """The set of the question's words, contractions spelled out.

    Single words, not word n-grams: a question has ~10 words, and with k-word shingles one reworded
    word changes k of them (Jaccard ≈ 0.45 for k = 3), far below any useful threshold. As a bag of
    words, one changed word in ten gives Jaccard 9/11 ≈ 0.82; at the default 0.8 "near duplicate" means
    "at most about one word in ten differs". Word order is lost, which generated questions rarely vary
    alone.
    """
    text = question.casefold().replace("\u2019", "'")
    for pattern, replacement in _CONTRACTIONS:
        text = pattern.sub(replacement, text)
    return frozenset(words(text))


CHUNK_SHINGLE_WORDS = 5


def chunk_shingles(text: str, n: int = CHUNK_SHINGLE_WORDS) -> frozenset[str]:
    """Word n-grams of a chunk (the whole word sequence as one shingle when it has fewer than n words).

    5-grams, as in common corpus deduplication: long enough that chunks about the same topic share few
    of them (stock phrases are shorter), short enough that one edited word in a 256–512-token chunk
    (~200–380 words) changes ~5 of ~200+ shingles (Jaccard ≈ 0.95). For chunks under ~100 words a single
    edit already drops Jaccard below 0.9, so there only near-verbatim copies count as duplicates. A
    chunk with fewer than n words is one shingle, so short chunks match only their exact twins instead
    of all colliding on an empty set.
    """
    tokens = words(text)
    if len(tokens) < n:
        return frozenset([" ".join(tokens)]) if tokens else frozenset()
    return frozenset(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def near_duplicate_chunks(chunks: list[tuple[str, str]], threshold: float) -> dict[str, str]:
    """``(chunk_id, text)`` in order → ``{duplicate chunk id: id of the earlier kept chunk it repeats}``.

    A chunk is a near duplicate when the Jaccard similarity of its word 5-gram sets with an earlier,
    not itself duplicate, chunk is at least ``threshold``; it maps to the earliest such chunk, so every
    value is a chunk that is sent. Chunks without any word are never duplicates.
    """
    index = NearDuplicateIndex(threshold)
    duplicates: dict[str, str] = {}
    for position, (chunk_id, text) in enumerate(chunks):
        shingles = chunk_shingles(text)
        twin = index.match(shingles)
        if twin is None:
            index.add(position, shingles)
        else:
            duplicates[chunk_id] = chunks[twin][0]
    return duplicates
