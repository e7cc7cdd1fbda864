"""Reading question–answer pairs out of a model's reply, whatever shape the model chose.

Tried in order: JSON (a list of ``{"question", "answer"}`` objects, or an object holding such a list),
inside code fences or surrounded by prose, repaired by ``json_repair`` when it is almost JSON (trailing
commas, single quotes, cut off mid-list); then plain text (``Question: … Answer: …``, ``Q1: … A1: …``,
numbered questions followed by their answers). Only items with both a question and an answer are
kept, a reply cut off mid-item loses that item rather than keeping half an answer, and nothing is ever
made up: an unreadable reply returns no pairs and the reason.
"""

from __future__ import annotations

import json
import re
from typing import Any

import json_repair

from docqa.synthesis.base import QAPair

QUESTION_KEYS = ("question", "q")
ANSWER_KEYS = ("answer", "a")
MAX_JSON_STARTS = 20  # opening brackets tried as the start of the JSON before giving up

# Degenerate repetition ("X is X is X is …"): this many words or more, few of them distinct.
DEGENERATE_MIN_WORDS = 12
DEGENERATE_DISTINCT_SHARE = 0.35

_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)(?:```|$)", re.DOTALL)
_LABEL = re.compile(
    r"^(?P<kind>[Qq]uestion|QUESTION|Q|[Aa]nswer|ANSWER|A)\s*#?\s*\d*\s*[:.)\-–]\s*(?P<rest>.*)$"
)
_NUMBERED = re.compile(r"^\(?\d{1,3}[.)]\s+(?P<rest>.+)$")
_INLINE_LABEL = re.compile(
    r"(?<=\S)[ \t]+(?=(?:\*\*)?(?:Answer|Question|A|Q)[ \t]*\d*[ \t]*(?:\*\*)?[ \t]*:)"
)
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_MARKUP = re.compile(r"^(?:[-*•]\s+|#+\s*)")


def parse_reply(text: str) -> tuple[list[QAPair], str | None]:
    """The pairs a reply holds, and when it holds none, why."""
    if not text or not text.strip():
        return [], "empty reply"
    found_json, pairs = _pairs_from_json(text)
    if not pairs:
        pairs = _pairs_from_text(text)
    if not pairs:
        if found_json:
            return [], "JSON held no item with both a non-empty question and answer"
        return [], "no JSON list and no Question/Answer text found"
    kept = _clean(pairs)
    if not kept:
        return [], "every pair read was empty or degenerate repetition"
    return kept, None


# --- JSON ---------------------------------------------------------------------------------------


def _pairs_from_json(text: str) -> tuple[bool, list[QAPair]]:
    """(whether any JSON structure was read, the pairs in the first one that holds some)."""
    found = False
    for candidate in _json_candidates(text):
        value = json_repair.loads(_complete_prefix(candidate))
        if not isinstance(value, list | dict):
            continue
        found = True
        pairs = [pair for item in _items(value) if (pair := _pair_from_item(item)) is not None]
        if pairs:
            return found, pairs
    return found, []


def _json_candidates(text: str) -> list[str]:
    """Fenced blocks first, then the text from each opening bracket on."""
    fenced = [block for block in _FENCE.findall(text) if block.strip()]
    starts = [i for i, char in enumerate(text) if char in "[{"][:MAX_JSON_STARTS]
    return fenced + [text[i:] for i in starts]


def _complete_prefix(candidate: str) -> str:
    """The candidate up to where its outer bracket closes (prose after it dropped).

    When it never closes, the reply was cut off: keep it up to the last closed object, so that the
    item being written when the reply stopped is dropped instead of kept half-written.
    """
    depth = 0
    quote: str | None = None
    escaped = False
    last_object_end = -1
    for i, char in enumerate(candidate):
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
            continue
        if char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 0:
                return candidate[: i + 1]
            if char == "}":
                last_object_end = i
    return candidate[: last_object_end + 1] if last_object_end >= 0 else candidate[:1]


def _items(value: Any) -> list[Any]:
    """The pair-like items of a parsed reply: the list itself, or a list held in an object."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        if _field(value, QUESTION_KEYS) is not None:
            return [value]
        for inner in value.values():
            if isinstance(inner, list | dict) and (items := _items(inner)):
                return items
    return []


def _field(item: dict, keys: tuple[str, ...]) -> str | None:
    for key, value in item.items():
        if isinstance(key, str) and key.strip().lower() in keys and isinstance(value, str | int | float):
            return str(value)
    return None


def _pair_from_item(item: Any) -> QAPair | None:
    if not isinstance(item, dict):
        return None
    question, answer = _field(item, QUESTION_KEYS), _field(item, ANSWER_KEYS)
    if not question or not answer or not question.strip() or not answer.strip():
        return None
    return QAPair(question=question.strip(), answer=answer.strip())


# --- plain text ---------------------------------------------------------------------------------


class _TextPairs:
    """A line-by-line reader of ``Question:/Answer:``, ``Q1:/A1:`` and numbered layouts."""

    def __init__(self) -> None:
        self.pairs: list[QAPair] = []
        self.question: list[str] = []
        self.answer: list[str] = []
        self.field: str | None = None  # "q", "a" or None (outside any pair)

    def feed(self, raw_line: str) -> None:
        line = _MARKUP.sub("", _BOLD.sub(r"\1", raw_line.strip())).strip()
        if not line:
            if self.field == "a":
                self.flush()
            return
        numbered = _NUMBERED.match(line)
        if numbered and not _LABEL.match(line):
            line = numbered["rest"]
            if not _LABEL.match(line):
                self.start_numbered(line)
                return
        label = _LABEL.match(line)
        if label:
            self.start(label["kind"][0].lower(), label["rest"])
        elif line.endswith("?") and len(line.split()) >= 3 and self.field != "q":
            self.start("q", line)
        else:
            self.continue_with(line)

    def start_numbered(self, line: str) -> None:
        mark = line.find("?")
        if mark < 0:
            self.continue_with(line)
            return
        self.start("q", line[: mark + 1])
        rest = line[mark + 1 :].strip(" -–:")
        if rest:
            self.start("a", rest)

    def start(self, field: str, text: str) -> None:
        if field == "q":
            self.flush()
            self.question = [text] if text else []
        elif not self.question:
            return  # an answer with no question before it
        else:
            self.answer = [text] if text else []
        self.field = field

    def continue_with(self, line: str) -> None:
        if self.field == "q" and self.question and self.question[-1].endswith("?"):
            self.start("a", line)
        elif self.field == "q":
            self.question.append(line)
        elif self.field == "a":
            self.answer.append(line)

    def flush(self) -> None:
        question, answer = " ".join(self.question).strip(), " ".join(self.answer).strip()
        if question and answer:
            self.pairs.append(QAPair(question=question, answer=answer))
        self.question, self.answer, self.field = [], [], None


def _pairs_from_text(text: str) -> list[QAPair]:
    reader = _TextPairs()
    for line in _INLINE_LABEL.sub("\n", text).splitlines():
        reader.feed(line)
    reader.flush()
    return reader.pairs


# --- clean-up -----------------------------------------------------------------------------------


def _is_degenerate(text: str) -> bool:
    words = text.lower().split()
    return len(words) >= DEGENERATE_MIN_WORDS and len(set(words)) / len(words) < DEGENERATE_DISTINCT_SHARE


def _clean(pairs: list[QAPair]) -> list[QAPair]:
    """Drop degenerate items and repeats of an identical item (a repeated item is not a new pair)."""
    kept: list[QAPair] = []
    seen: set[str] = set()
    for pair in pairs:
        if _is_degenerate(pair.question) or _is_degenerate(pair.answer):
            continue
        key = json.dumps([" ".join(pair.question.lower().split()), " ".join(pair.answer.lower().split())])
        if key not in seen:
            seen.add(key)
            kept.append(pair)
    return kept
