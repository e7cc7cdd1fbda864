"""Extractive Q&A: a deterministic, rule-based bootstrap generator. It is NOT a language model.

It lets the pipeline run end to end offline (tests, CPU demos, a first look at a new collection)
without a chat model. From each chunk's own prose sentences it turns definitions and factual
statements into questions, and takes the sentence itself as the answer, so every answer is a span of
the chunk (after whitespace normalisation) and nothing is paraphrased or invented:

    "X is a Y."             → "What is X?"
    "X is used to Y."       → "What is X used for?"
    "X returns Y." (raises, contains, means, refers to, …)  → "What does X return?"
    "If C, M."              → "What happens if C?"
    "X must/can V Y."       → "What must/can X V?"
    "X is bound to Y."      → "What is X bound to?"
    "str.lower()" + "Return a copy …"  → "What does str.lower() return?"  (API reference layouts)

Questions name their subject; a sentence whose subject is a vague pronoun ("It", "This", "These …")
or longer than ``MAX_SUBJECT_WORDS`` is skipped, as are code and grammar lines. Up to
``pairs_per_chunk`` pairs are kept per chunk, by rule priority then position. Its questions are
templated and its answers whole sentences: good enough to exercise training and evaluation, not a
substitute for an LLM backend when answer quality matters.

Bump ``RULES_VERSION`` whenever a rule changes: it is part of the synthesis cache key.

Longer than 500 lines on purpose: the rules, and the sentence handling they need (prose segments,
subjects, signatures), read best as one table.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from docqa.settings import SynthesizeSettings
from docqa.synthesis.base import ChunkRequest, ChunkResult, QAPair

RULES_VERSION = "extractive-v1"
NO_MATCH_REASON = "no statement matched the extraction rules"
MAX_SUBJECT_WORDS = 8
MIN_CONDITION_WORDS = 3
MAX_CONDITION_WORDS = 25
MIN_SENTENCE_WORDS = 5
MIN_PASSIVE_REST_WORDS = 3
HEAVY_LINE_SHARE = 0.10  # share of code symbols above which a line counts as code
HEAVY_SENTENCE_SHARE = 0.06
MAX_TERM_WORDS = 4  # a shorter unpunctuated line above an indented one is a heading or term
CODE_INDENT = 3  # an indented line ending in ":" or starting with an assignment/call is code

_CODE_SYMBOLS = set("=<>{}[]|\\*^~$#@%&;+")
_VAGUE_WORDS = {
    "it", "its", "this", "that", "these", "those", "they", "them", "their", "he", "she", "we", "you",
    "i", "such", "above", "below", "following", "former", "latter", "here", "there", "which", "what",
    "who", "whose", "same", "said", "previous",
}  # fmt: skip
BAD_FIRST_WORDS = _VAGUE_WORDS | {
    "in", "on", "at", "for", "with", "by", "from", "to", "of", "as", "when", "if", "while", "since",
    "because", "although", "though", "unless", "after", "before", "during", "however", "thus", "hence",
    "therefore", "also", "so", "but", "and", "or", "then", "otherwise", "note", "see", "usually",
    "typically", "normally", "generally", "finally", "first", "second", "previously", "now", "changed",
    "new", "only", "instead", "whether", "where", "how", "why", "not", "no", "called", "like", "unlike",
}  # fmt: skip
_VERB_WORDS = {
    "is", "are", "was", "were", "be", "been", "being", "has", "have", "had", "can", "cannot", "may",
    "must", "will", "would", "should", "could", "does", "do", "did", "not",
}  # fmt: skip
_SENTENCE_OPENERS = set('.!?:;"“(*-•]')
_CLAUSE_CONTINUATIONS = {"and", "or", "but", "nor", "which", "who", "as", "unless", "if", "e.g.", "i.e."}
_CONJUNCTIONS = {"and", "or", "but", "nor", "then"}
_NOT_IMPERATIVE = ("s", "ed", "ing", "ly")  # endings of a first word that is no imperative verb
_SUBORDINATORS = {"if", "when", "while", "because", "although", "unless", "whether", "since", "until"}
_SINGULAR_DETERMINERS = {"a", "an", "each", "every"}
_DETERMINERS = {"the", "a", "an", "every", "each", "all", "any", "some", "most", "many", "both"}
_PREPOSITIONS = {
    "in", "on", "at", "for", "with", "by", "from", "to", "of", "as", "into", "onto", "out", "up", "off",
    "about", "over", "under", "through", "via", "when", "if", "before", "after", "during", "once",
    "whenever", "while", "unless", "using", "not", "be", "been", "have", "only", "also", "back", "away",
}  # fmt: skip
_IRREGULAR_PARTICIPLES = {
    "bound", "built", "given", "done", "made", "taken", "written", "known", "found", "shown", "held",
    "kept", "set", "read", "run", "thrown", "seen", "split", "sent", "put", "chosen", "drawn", "left",
    "hidden", "broken", "brought", "caught", "thought", "lost", "meant", "said", "told", "struck",
}  # fmt: skip
_INFINITIVE_PARTICIPLES = {
    "intended", "designed", "meant", "allowed", "required", "supposed", "expected", "needed", "used",
    "guaranteed", "permitted", "forced", "encouraged", "asked", "called", "advised", "believed",
}  # fmt: skip
_ABBREVIATIONS = {
    "e.g", "i.e", "etc", "vs", "cf", "fig", "no", "mr", "mrs", "dr", "st", "approx", "al", "resp",
}  # fmt: skip

# "X returns Y" → "What does X return?": third-person form → (base form, priority).
_STATEMENT_VERBS = {
    "means": ("mean", 2), "refers to": ("refer to", 2), "denotes": ("denote", 2),
    "stands for": ("stand for", 2), "represents": ("represent", 2),
    "returns": ("return", 3), "raises": ("raise", 3), "yields": ("yield", 3),
    "evaluates to": ("evaluate to", 3),
    "contains": ("contain", 4), "consists of": ("consist of", 4), "defines": ("define", 4),
    "specifies": ("specify", 4), "determines": ("determine", 4), "provides": ("provide", 4),
    "produces": ("produce", 4), "creates": ("create", 4), "accepts": ("accept", 4),
    "supports": ("support", 4), "allows": ("allow", 4), "requires": ("require", 4),
    "includes": ("include", 4), "describes": ("describe", 4), "indicates": ("indicate", 4),
    "controls": ("control", 4), "has": ("have", 4), "holds": ("hold", 4), "stores": ("store", 4),
    "implements": ("implement", 4), "applies to": ("apply to", 4), "overrides": ("override", 4),
    "takes": ("take", 4), "uses": ("use", 4), "calls": ("call", 4), "receives": ("receive", 4),
    "generates": ("generate", 4), "modifies": ("modify", 4), "converts": ("convert", 4),
    "compares": ("compare", 4), "identifies": ("identify", 4), "matches": ("match", 4),
    "invokes": ("invoke", 4), "executes": ("execute", 4), "affects": ("affect", 4),
    "binds": ("bind", 4), "changes": ("change", 4), "prints": ("print", 4), "removes": ("remove", 4),
    "adds": ("add", 4), "replaces": ("replace", 4), "prevents": ("prevent", 4), "emits": ("emit", 4),
}  # fmt: skip
_BASE_VERBS = {base: (base, priority) for base, priority in _STATEMENT_VERBS.values()}
_ALL_VERBS = {**_STATEMENT_VERBS, **_BASE_VERBS}

_SUBJECT = r"(?P<subj>[^,;:()]+?)"
_ADVERB = r"(?:[a-z]+ly|always|also|only|often|first|then|still|just|thus)"  # never "not" or "never"
_USED_FOR = re.compile(
    rf"^{_SUBJECT} (?P<be>is|are) (?:also |often |commonly |typically |mainly |usually |only )?"
    r"used (?P<prep>to|for|as) \S"
)
_CALLED = re.compile(rf"^{_SUBJECT} (?P<be>is|are) (?:also |sometimes |often )?(?:called|known as|named) \S")
_EQUIVALENT = re.compile(rf"^{_SUBJECT} (?P<be>is|are) (?:roughly |semantically |exactly )?equivalent to \S")
_DEFINITION = re.compile(
    rf"^{_SUBJECT} (?P<be>is|are) (?:also |always |usually |often |simply |essentially |merely |just )?"
    r"(?:a|an|the|one of|any) \S"
)
_STATEMENT_VERB = re.compile(
    rf" (?P<verb>{'|'.join(sorted(map(re.escape, _ALL_VERBS), key=len, reverse=True))}) (?P<obj>\S+)"
)
_CONDITION = re.compile(r"^(?P<kw>If|When) (?P<rest>.+)$")
_MODAL = re.compile(
    rf"^{_SUBJECT} (?P<modal>must|can|cannot|may|should) (?P<neg>not )?(?:also |only |always )?"
    r"(?P<verb>[a-z]+) (?P<obj>\S+)(?P<tail>.*)$"
)
_PASSIVE = re.compile(
    rf"^{_SUBJECT} (?P<be>is|are) (?:{_ADVERB} )?(?P<part>[a-z]+) (?P<prep>[a-z]+) (?P<rest>.+)$"
)
_PASSIVE_WHAT = {"by", "to", "into", "from", "on", "as", "for", "with", "in"}
_PASSIVE_WHEN = {"when", "if", "before", "after", "during", "once", "whenever", "while", "unless"}
_PASSIVE_HOW = {"using", "through", "via"}
_DISCOURSE_MARKER = re.compile(
    r"^(?:Note that|However,|Accordingly,|Otherwise,|In particular,|Also,|Thus,|Hence,|Therefore,"
    r"|For example,|In addition,|Similarly,|Consequently,|By default,|In general,|Normally,|Usually,) "
)
_KINDS = re.compile(
    r"^There (?:is|are) (?:\w+ )?(?P<kind>kinds|types|sorts|forms|ways|classes|categories|flavors|flavours) "
    r"of (?P<what>[^:;,.()]+?)[:;,.]"
)
_LEADING_MARK = re.compile(r"^(?:\[\d+\]\s*|\(?\d{1,2}[.)]\s+|[*•-]\s+)+")
_SENTENCE_END = re.compile(r"[.!?][\"”’)]*\s+")
_ASSIGNMENT_OR_CALL = re.compile(r"^\s*[\w.]+\s*(?:=|\()")
# An API signature heading its description: "str.count(sub[, start[, end]])", "class int(x=0)".
_SIGNATURE = re.compile(
    r"^\s*(?:(?:class|classmethod|staticmethod|async|abstractmethod) )?"
    r"(?P<name>[A-Za-z_][\w.]*)\((?P<args>[^()]*(?:\([^()]*\)[^()]*)*)\)\s*(?:->.*)?:?\s*$"
)
_RETURN_IMPERATIVE = re.compile(r"^Returns? (?:a |an |the )?\S")
_CALLED_IMPERATIVE = re.compile(r"^Called (?:to|when|after|before|by|from|with|on|for|as|if) \S")


@dataclass(frozen=True)
class Sentence:
    """A prose sentence of the chunk, and the API signature it documents when it sits under one."""

    text: str
    term: str | None = None
    opens_term: bool = False  # the first sentence under its signature


@dataclass(frozen=True)
class _Candidate:
    priority: int
    position: int
    rule: str
    question: str
    answer: str


class ExtractiveBackend:
    """The offline default: rule-based questions over the chunk's own sentences (no model)."""

    def __init__(self, settings: SynthesizeSettings) -> None:
        if settings.language != "en":
            raise ValueError(
                f"the extractive backend writes English questions only, but synthesize.language is "
                f"{settings.language!r}: set it to en, or use an LLM backend (openai or transformers)"
            )
        self.settings = settings

    def identity(self) -> dict[str, str]:
        # The length limits shape which candidates it keeps, so they are part of what it is.
        return {
            "backend": "extractive",
            "model": "rules",
            "prompt_version": RULES_VERSION,
            "min_question_chars": str(self.settings.min_question_chars),
            "min_answer_chars": str(self.settings.min_answer_chars),
        }

    def generate(self, requests: list[ChunkRequest]) -> Iterator[ChunkResult]:
        for request in requests:
            yield self._generate_one(request)

    def _generate_one(self, request: ChunkRequest) -> ChunkResult:
        started = time.perf_counter()
        chosen = extract_candidates(request.text, self.settings)
        raw = json.dumps([{"question": c.question, "answer": c.answer, "rule": c.rule} for c in chosen])
        return ChunkResult(
            chunk_id=request.chunk_id,
            status="ok",
            pairs=[QAPair(question=c.question, answer=c.answer) for c in chosen],
            reason=None if chosen else NO_MATCH_REASON,
            raw_reply=raw,
            attempts=1,
            latency_s=time.perf_counter() - started,
        )


def extract_candidates(text: str, settings: SynthesizeSettings) -> list[_Candidate]:
    """At most ``pairs_per_chunk`` pairs, chosen by rule priority then position, returned in text order."""
    candidates = []
    for position, sentence in enumerate(prose_sentences(text)):
        candidate = _first_match(sentence, position, text)
        if candidate is not None and _fits(candidate, settings):
            candidates.append(candidate)
    chosen: list[_Candidate] = []
    seen: set[str] = set()
    for candidate in sorted(candidates, key=lambda c: (c.priority, c.position)):
        key = " ".join(candidate.question.lower().split())
        if key not in seen and len(chosen) < settings.pairs_per_chunk:
            seen.add(key)
            chosen.append(candidate)
    return sorted(chosen, key=lambda c: c.position)


def _fits(candidate: _Candidate, settings: SynthesizeSettings) -> bool:
    return (
        len(candidate.question) >= settings.min_question_chars
        and len(candidate.answer) >= settings.min_answer_chars
        and len(candidate.answer.split()) <= settings.max_answer_words
    )


# --- prose sentences ----------------------------------------------------------------------------


def _heavy_share(text: str) -> float:
    visible = [char for char in text if not char.isspace()]
    return sum(char in _CODE_SYMBOLS for char in visible) / max(len(visible), 1)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def is_code_line(line: str) -> bool:
    """Grammar, interpreter sessions, symbol-heavy lines, and indented lines that look like code."""
    stripped = line.strip()
    return (
        "::=" in stripped
        or stripped.startswith((">>>", "... ", "$ "))
        or _heavy_share(stripped) > HEAVY_LINE_SHARE
        or (
            _indent(line) >= CODE_INDENT
            and (stripped.endswith(":") or bool(_ASSIGNMENT_OR_CALL.match(stripped)))
        )
    )


def is_term_line(line: str, next_line: str) -> bool:
    """A short unpunctuated heading or definition-list term followed by a more indented line."""
    stripped = line.strip()
    return (
        len(stripped.split()) <= MAX_TERM_WORDS
        and stripped[-1:] not in ".,;:!?"
        and bool(next_line.strip())
        and _indent(next_line) > _indent(line)
    )


def prose_segments(text: str) -> list[tuple[str | None, str]]:
    """Runs of consecutive prose lines, whitespace-normalised, each with the signature it sits under.

    Blank, code, heading and signature lines end a run; a signature ("str.count(sub)") stays the
    term of the more indented lines below it.
    """
    segments: list[tuple[str | None, str]] = []
    current: list[str] = []
    term, term_indent = None, -1
    lines = text.splitlines()
    for line, next_line in zip(lines, [*lines[1:], ""][: len(lines)], strict=True):
        signature = _SIGNATURE.match(line)
        if line.strip() and not signature and _indent(line) <= term_indent:
            term, term_indent = None, -1
        if not line.strip() or signature or is_code_line(line) or is_term_line(line, next_line):
            if current:
                segments.append((term, " ".join(current)))
            current = []
            if signature:
                term, term_indent = f"{signature['name']}()", _indent(line)
        else:
            current.append(" ".join(line.split()))
    if current:
        segments.append((term, " ".join(current)))
    return segments


def split_sentences(segment: str) -> list[str]:
    sentences, start = [], 0
    for end in _SENTENCE_END.finditer(segment):
        before = segment[start : end.start()].rsplit(" ", 1)[-1].lower()
        after = segment[end.end() : end.end() + 1]
        if before in _ABBREVIATIONS or (len(before) == 1 and before.isalpha()) or not after:
            continue
        if after.isupper() or after.isdigit() or after in '"“‘([':
            sentences.append(segment[start : end.end()].strip())
            start = end.end()
    sentences.append(segment[start:].strip())
    return [s for s in sentences if s]


def _balanced(sentence: str) -> bool:
    return (
        sentence.count("(") == sentence.count(")")
        and sentence.count("[") == sentence.count("]")
        and sentence.count('"') % 2 == 0
        and sentence.count("“") == sentence.count("”")
    )


def _is_statement(sentence: str) -> bool:
    return (
        sentence[:1].isupper()
        and sentence.endswith(".")
        and len(sentence.split()) >= MIN_SENTENCE_WORDS
        and "::=" not in sentence
        and _heavy_share(sentence) <= HEAVY_SENTENCE_SHARE
        and _balanced(sentence)
    )


def prose_sentences(text: str) -> list[Sentence]:
    """Whole prose statements of the chunk: capitalised, ending in a full stop, not code-like."""
    kept = []
    previous_term = None
    for term, segment in prose_segments(text):
        for index, sentence in enumerate(split_sentences(segment)):
            sentence = _LEADING_MARK.sub("", sentence)
            opens_term = term is not None and term != previous_term and index == 0
            if _is_statement(sentence):
                kept.append(Sentence(sentence, term, opens_term))
        previous_term = term
    return kept


# --- subjects -----------------------------------------------------------------------------------


def question_subject(subject: str, text: str) -> str | None:
    """The subject as it reads inside a question, or None when it is vague, too long or not a noun phrase."""
    words = subject.split()
    lowered = [word.strip("\"“”‘’'").lower() for word in words]
    if not words or len(words) > MAX_SUBJECT_WORDS or lowered[0] in BAD_FIRST_WORDS:
        return None
    if any(mark in subject for mark in ",;:"):
        return None  # "Note, adding …": an aside, not a noun phrase
    if lowered[0].endswith("ly") or any(word in _SUBORDINATORS for word in lowered):
        return None  # "Formally a …", "Return True if the string …": not a plain noun phrase
    if any(word in _VAGUE_WORDS or word in _VERB_WORDS or word in _STATEMENT_VERBS for word in lowered):
        return None
    if lowered[-1] in _PREPOSITIONS | _CONJUNCTIONS or all(word in _DETERMINERS for word in lowered):
        return None
    if any(word[:1].isupper() and word.lower() in _DETERMINERS for word in words[1:]):
        return None  # a heading run into the sentence: "Bytes A bytes object is …"
    if lowered[0] == "the" and len(words) <= 2 and words[-1].isalpha():
        return None  # "the result", "the table": which one depends on the passage
    if _common_word(words[0], text):
        words[0] = words[0].lower()
    return " ".join(words)


def _common_word(word: str, text: str) -> bool:
    """Whether a sentence's capitalised first word is an ordinary word, not a name.

    A name ("Python") is written capitalised in the middle of sentences too; an ordinary word is
    capitalised only at the start of one.
    """
    if word.lower() in _DETERMINERS:
        return True
    if not (word[:1].isupper() and word[1:].islower()):
        return False
    for found in re.finditer(rf"\b{re.escape(word)}\b", text):
        before = text[max(found.start() - 20, 0) : found.start()].rstrip(" ")
        starts_line = not before or before.endswith("\n")
        if not starts_line and before.rstrip()[-1:] not in _SENTENCE_OPENERS:
            return False
    return True


# --- rules --------------------------------------------------------------------------------------
# Each rule reads one statement and returns (priority, rule name, question) or None; lower priority
# numbers are kept first when a chunk has more candidates than ``pairs_per_chunk``.

_Found = tuple[int, str, str] | None


def _signature_returns(statement: str, term: str | None, text: str) -> _Found:
    if term and _RETURN_IMPERATIVE.match(statement):
        return 0, "signature_returns", f"What does {term} return?"
    return None


def _signature_called(statement: str, term: str | None, text: str) -> _Found:
    if term and _CALLED_IMPERATIVE.match(statement):
        return 0, "signature_called", f"When is {term} called?"
    return None


def _signature_does(statement: str, term: str | None, text: str) -> _Found:
    """ "str.lower()" / "Return a copy of …": a description opening with an imperative verb."""
    first = statement.split(" ", 1)[0]
    if first.lower() in BAD_FIRST_WORDS | _DETERMINERS | _VERB_WORDS or first.endswith(_NOT_IMPERATIVE):
        return None
    return 1, "signature_does", f"What does {term} do?"


def _used_for(statement: str, term: str | None, text: str) -> _Found:
    match = _USED_FOR.match(statement)
    subject = match and question_subject(match["subj"], text)
    if not subject:
        return None
    tail = "used as" if match["prep"] == "as" else "used for"
    return 0, "used_for", f"What {match['be']} {subject} {tail}?"


def _kinds(statement: str, term: str | None, text: str) -> _Found:
    match = _KINDS.match(statement)
    if not match or len(match["what"].split()) > MAX_SUBJECT_WORDS:
        return None
    return 1, "kinds", f"What {match['kind']} of {match['what']} are there?"


def _called(statement: str, term: str | None, text: str) -> _Found:
    match = _CALLED.match(statement)
    subject = match and question_subject(match["subj"], text)
    return (1, "called", f"What {match['be']} {subject} called?") if subject else None


def _equivalent(statement: str, term: str | None, text: str) -> _Found:
    match = _EQUIVALENT.match(statement)
    subject = match and question_subject(match["subj"], text)
    return (1, "equivalent", f"What {match['be']} {subject} equivalent to?") if subject else None


def _definition(statement: str, term: str | None, text: str) -> _Found:
    match = _DEFINITION.match(statement)
    subject = match and question_subject(match["subj"], text)
    return (1, "definition", f"What {match['be']} {subject}?") if subject else None


def _statement(statement: str, term: str | None, text: str) -> _Found:
    """ "X returns Y" → "What does X return?"; the first verb after a valid subject is the one read."""
    for match in _STATEMENT_VERB.finditer(statement):
        before, verb = statement[: match.start()], match["verb"]
        subject = question_subject(before, text)
        if not subject or match["obj"].lower() in _PREPOSITIONS or before.endswith(" to"):
            continue  # "users wanting to override …": an infinitive, not the sentence's verb
        if verb in _BASE_VERBS and subject.split()[0].lower() in _SINGULAR_DETERMINERS:
            continue  # "a function call …": a noun, not a plural verb
        base, priority = _ALL_VERBS[verb]
        auxiliary = "do" if verb in _BASE_VERBS else "does"
        return priority, f"verb:{base}", f"What {auxiliary} {subject} {base}?"
    return None


def _condition(statement: str, term: str | None, text: str) -> _Found:
    match = _CONDITION.match(statement)
    condition = match and _condition_clause(match["rest"])
    if not condition or not _names_its_subject(condition):
        return None
    return 5, "condition", f"What happens {match['kw'].lower()} {condition}?"


def _condition_clause(rest: str) -> str | None:
    """The condition of "If C, M.": up to the first comma after which a main clause starts."""
    for comma in re.finditer(r", (?:then )?", rest):
        next_word = rest[comma.end() :].split(" ", 1)[0].lower()
        starts_clause = next_word[:1].isalpha() or next_word[:1] in '"“*'
        if starts_clause and next_word not in _CLAUSE_CONTINUATIONS and next_word not in _VERB_WORDS:
            return rest[: comma.start()]
    return None


def _names_its_subject(condition: str) -> bool:
    """ "the guard evaluates as true" does; "it is missing", "present", "loaded from a file" do not."""
    words = [word.strip('"“”*,').lower() for word in condition.split()]
    if not MIN_CONDITION_WORDS <= len(words) <= MAX_CONDITION_WORDS:
        return False
    if words[0] in _VAGUE_WORDS - {"there"} or words[0] in {"not", "so"} or words[0].endswith(("ed", "ing")):
        return False
    return not any(word in _VAGUE_WORDS - {"that", "which", "what", "who"} for word in words[1:])


def _modal(statement: str, term: str | None, text: str) -> _Found:
    match = _MODAL.match(statement)
    subject = match and question_subject(match["subj"], text)
    if not subject:
        return None
    modal = "can" if match["modal"] == "cannot" else match["modal"]
    negation = " not" if match["neg"] or match["modal"] == "cannot" else ""
    verb, obj, next_word = match["verb"], match["obj"].lower(), match["tail"].split(" ", 2)[1:2]
    if verb == "be":
        question = _modal_be(f"{modal} {subject}{negation}", obj, next_word[0] if next_word else "")
        return (6, "modal", question) if question else None
    if (
        verb.endswith(("ed", "ing", "ly"))
        or verb in _VERB_WORDS
        or obj in _PREPOSITIONS
        or obj.endswith("ly")
    ):
        return None
    return 6, "modal", f"What {modal} {subject}{negation} {verb}?"


def _modal_be(head: str, obj: str, next_word: str) -> str | None:
    """ "X can be used for Y", "X must be a Y", "X may be created when Y", "X must be passed to Y"."""
    if obj in {"a", "an", "the", "one", "either", "any"}:
        return f"What {head} be?"
    if not _is_participle(obj):
        return None
    if obj == "used" and next_word in {"for", "to", "as"}:
        return f"What {head} be used {'as' if next_word == 'as' else 'for'}?"
    if next_word in _PASSIVE_WHAT and not (next_word == "to" and obj in _INFINITIVE_PARTICIPLES):
        return f"What {head} be {obj} {next_word}?"
    if next_word in _PASSIVE_WHEN:
        return f"When {head} be {obj}?"
    return None


def _is_participle(word: str) -> bool:
    return word in _IRREGULAR_PARTICIPLES or (len(word) >= 5 and word.endswith("ed") and word != "indeed")


def _passive(statement: str, term: str | None, text: str) -> _Found:
    match = _PASSIVE.match(statement)
    subject = match and question_subject(match["subj"], text)
    if (
        not subject
        or not _is_participle(match["part"])
        or len(match["rest"].split()) < MIN_PASSIVE_REST_WORDS
    ):
        return None
    be, part, prep = match["be"], match["part"], match["prep"]
    if prep == "to" and part in _INFINITIVE_PARTICIPLES:
        return None  # "X is intended to ease …": "to" starts an infinitive
    if prep in _PASSIVE_WHAT:
        return 7, "passive", f"What {be} {subject} {part} {prep}?"
    if prep in _PASSIVE_WHEN:
        return 7, "passive", f"When {be} {subject} {part}?"
    if prep in _PASSIVE_HOW:
        return 7, "passive", f"How {be} {subject} {part}?"
    return None


RULES: tuple[Callable[[str, str | None, str], _Found], ...] = (
    _signature_returns,
    _signature_called,
    _used_for,
    _kinds,
    _called,
    _equivalent,
    _definition,
    _statement,
    _condition,
    _modal,
    _passive,
)


def _first_match(sentence: Sentence, position: int, text: str) -> _Candidate | None:
    """One question per sentence: the first rule (in ``RULES`` order) that reads it.

    A leading discourse marker ("Note that", "However,") is skipped for matching; the answer is still
    the whole sentence.
    """
    statement = _DISCOURSE_MARKER.sub("", sentence.text)
    statement = statement[:1].upper() + statement[1:]
    rules = (*RULES, _signature_does) if sentence.opens_term else RULES
    for rule in rules:
        found = rule(statement, sentence.term, text)
        if found is not None:
            priority, name, question = found
            return _Candidate(priority, position, name, question, sentence.text)
    return None
