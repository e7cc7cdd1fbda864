"""Reading question–answer pairs out of a model's reply, whatever shape the model chose.

The principle: recover every well-formed pair, never garbage. A half-written answer, a label left in a
field or a prose sentence read as a question is worse than a lost pair, so where a layout is ambiguous
the reader gives the pair up. ``tests/fixtures/replies`` holds a real-looking reply for every format and
choice below; ``bench/parsing_recovery.py`` measures the recovery on them.

Around the reply
    Leaked chat-template tokens are dropped: everything up to the last assistant-turn marker
    (``[/INST]``, ``<|im_start|>assistant``, ``<|assistant|>``, Llama 3's header, Gemma's
    ``<start_of_turn>model``; an echoed prompt, with its format example, goes with it) and everything
    from the first end-of-turn token after the content (``<|im_end|>``, ``<|eot_id|>``, ``</s>``…: what
    follows is a made-up next turn). Of a reasoning block (``<think>…</think>``, or only ``</think>``)
    only the text after it is read; a reply whose reasoning block never closes holds no pairs, since
    drafts are not answers. A reply HTML-escaped throughout (``&quot;`` and no ``"``) is unescaped.

JSON, tried first
    Every top-level JSON value is read, in fences (```json or bare ```) or amid prose: a list of pair
    objects; objects holding such lists at any depth (``{"pairs": …}``, ``{"qa_pairs": …}``,
    ``{"questions": …}``, ``{"pair_1": {…}}``); one object per line; an object mapping each question to
    its answer. ``json_repair`` repairs near-JSON (trailing commas, unquoted keys, Python
    ``True``/``None``, comments, unescaped inner quotes); single- and smart-quoted strings are given
    double quotes first, so that an apostrophe inside one is not read as its end. A reply cut off by
    ``max_tokens`` keeps only the strings, objects and lists closed before the cut: an item whose
    question or answer was being written is dropped, never kept half-written. Two JSON values with
    pairs: a later list that repeats a question replaces the earlier pairs (the model corrected itself),
    one with new questions is added to them (the model went on).

Items
    The question comes from the key ``question``, ``q``, ``query``, ``prompt`` or ``frage``, the answer
    from ``answer``, ``a``, ``response``, ``completion`` or ``antwort``, in any case, numbered or not
    (``"Question 1"``); other fields are ignored. Alpaca's ``instruction``/``input``/``output`` is not
    read (its instruction is rarely the question). A number is kept as Python writes it (``42`` →
    ``"42"``, ``3e8`` → ``"300000000.0"``), a list of strings joined with commas. A string in a list is
    read as text: ``"Q: … A: …"`` gives a pair, a bare question gives none.

Plain text, when no JSON holds a pair
    Labelled: ``Question:``/``Answer:`` (any case), ``Q1:``/``A1:``, ``Q.``/``A.``, ``**Q:**``/``**A:**``,
    ``Frage``/``Antwort``, labels as headings (``### Question 1``), several labels on one line,
    ``<question>``/``<answer>`` tags. Unlabelled: numbered questions (``1. What …?``) and questions
    written as a bold line or a heading, each followed by its answer (next line, indented below, or
    ``1. What …? – answer``). A question may run over several lines; an answer runs until the next
    question, a heading, or a blank line, unless it ends with ``:`` (a list follows) or the next line
    is indented. Bullets and bold markers are dropped and the lines of a field joined with spaces.
    Lines neither labelled, numbered nor emphasised never start a question, so prose ("Would you like
    more questions?") never becomes a pair, and plain ``What …?`` lines followed by answers, markdown
    tables, and all questions listed before all answers are not read. Without answer labels, a reply
    in which at least half the questions have no answer is a list of questions: no pairs. The last
    answer is dropped when it stops mid-sentence while the others end with punctuation (cut off).

Every pair
    HTML entities are unescaped, a field's own label inside it (``"answer": "Answer: …"``) is removed,
    pairs with a field that is empty, a placeholder (``"..."``) or degenerate repetition ("the the
    the …") are dropped, and a pair repeated (same text, ignoring case and spacing) is returned once.
    Languages are not filtered here.

Longer than 500 lines on purpose: every reply layout models were seen to choose, each with why it is
read the way it is, in the order ``tests/fixtures/replies`` follows.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import json_repair

from docqa.synthesis.base import QAPair

QUESTION_KEYS = frozenset({"question", "q", "query", "prompt", "frage"})
ANSWER_KEYS = frozenset({"answer", "a", "response", "completion", "antwort"})
MAX_JSON_STARTS = 50  # opening brackets tried as the start of a JSON value, bounding the work on long replies
MAX_JSON_DEPTH = 16  # deeper nesting is a model looping on brackets, not pairs (and json.loads recursion)

# Degenerate repetition ("X is X is X is …"): this many words or more, few of them distinct.
DEGENERATE_MIN_WORDS = 12
DEGENERATE_DISTINCT_SHARE = 0.35
# A last text answer this long that stops mid-sentence, when the others end in punctuation, was cut off.
CUT_OFF_MIN_WORDS = 5

NO_TEXT_PAIRS = "no JSON list and no Question/Answer text found"
QUESTIONS_ONLY = "questions were listed without their answers"

# --- the reply around the pairs -----------------------------------------------------------------

_ASSISTANT_TURN = re.compile(
    r"\[/INST\]|<\|im_start\|>\s*assistant\b|<\|start_header_id\|>\s*assistant\s*<\|end_header_id\|>"
    r"|<\|assistant\|>|<start_of_turn>\s*model\b",
    re.IGNORECASE,
)
_TURN_END = re.compile(
    r"<\|im_end\|>|<\|eot_id\|>|<\|end\|>|<\|endoftext\|>|<\|end_of_text\|>|</s>|<end_of_turn>"
    r"|<\|im_start\|>|<\|start_header_id\|>|<\|user\|>|\[INST\]",
    re.IGNORECASE,
)
_SPECIAL_TOKEN = re.compile(r"<\|[a-z_]+\|>|<s>", re.IGNORECASE)
_THINK_OPEN = re.compile(r"<(?:think|thinking|reasoning)>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</(?:think|thinking|reasoning)>", re.IGNORECASE)
_ESCAPED_QUOTE = re.compile(r"&(?:quot|#34|#x22);", re.IGNORECASE)


def parse_reply(text: str) -> tuple[list[QAPair], str | None]:
    """The pairs a reply holds, and when it holds none, why."""
    if not text or not text.strip():
        return [], "empty reply"
    body = _after_reasoning(_strip_chat_template(text))
    if body is None:
        return [], "the reply is a <think> reasoning block that never closes (cut off before the answer)"
    if not body.strip():
        return [], "empty reply once chat-template tokens and reasoning are removed"
    body = _unescape_html_reply(body)
    values = _json_values(body)
    pairs = _pairs_from_json(values)
    reason = None
    if not pairs:
        pairs, reason = _pairs_from_text(body)
    if not pairs:
        if any(_could_hold_pairs(value) for value in values):
            return [], "JSON held no item with both a non-empty question and answer"
        return [], reason
    kept = _clean(pairs)
    if not kept:
        return [], "every pair read was empty or degenerate repetition"
    return kept, None


def _strip_chat_template(text: str) -> str:
    """The assistant's turn alone: after its last start marker, before the first end-of-turn token."""
    starts = list(_ASSISTANT_TURN.finditer(text))
    if starts:
        text = text[starts[-1].end() :]
    turns = [turn for turn in _TURN_END.split(text) if turn.strip()]
    return _SPECIAL_TOKEN.sub("", turns[0]) if turns else ""


def _after_reasoning(text: str) -> str | None:
    """The text after the reasoning block; None when a reasoning block opens and never closes."""
    closes = list(_THINK_CLOSE.finditer(text))
    rest = text[closes[-1].end() :] if closes else text
    return None if _THINK_OPEN.search(rest) else rest


def _unescape_html_reply(text: str) -> str:
    return html.unescape(text) if '"' not in text and _ESCAPED_QUOTE.search(text) else text


# --- JSON ---------------------------------------------------------------------------------------

# A bracket that opens a list of objects, lists or strings, or an object with a key: "[is]" and
# "{x}" in prose are not tried (json_repair takes seconds on long text that is not JSON).
_JSON_START = re.compile(r"[\[{]\s*(?:[\[{\"'“‘]|[A-Za-z_]\w*\s*:)")
# an opening quote → the quotes that close it
_QUOTES = {'"': '"', "'": "'", "“": "”“", "”": "”“", "‘": "’‘", "’": "’‘"}


@dataclass
class _Scan:
    """Where a JSON value that starts at a bracket ends, read without parsing it."""

    end: int | None = None  # just past its closing bracket; None when the text stops first (cut off)
    too_deep: bool = False  # nested deeper than MAX_JSON_DEPTH: not read
    complete: int = 0  # just past the last string, object or list closed inside it
    strings: list[tuple[int, int]] = field(default_factory=list)  # (opening, closing) quote of each string


def _neighbour(text: str, index: int, step: int) -> str:
    """The first non-blank character from ``index`` on, going ``step``; "" past either end."""
    while 0 <= index < len(text) and text[index].isspace():
        index += step
    return text[index] if 0 <= index < len(text) else ""


def _closes_string(text: str, index: int, quote_at: int) -> bool:
    following = _neighbour(text, index + 1, 1)
    return text[index] in _QUOTES[text[quote_at]] and following != "" and following in ",:}]"


def _opens_string(text: str, index: int) -> bool:
    preceding = _neighbour(text, index - 1, -1)
    return text[index] in _QUOTES and preceding != "" and preceding in "[{,:"


def _scan(text: str, start: int) -> _Scan:
    """A quote opens a string only after ``[{,:`` and closes it only before ``,:}]``, so that quotes and
    apostrophes inside a string (``'it's'``, ``"the "so-called" term"``) are not taken for its ends."""
    scan = _Scan(complete=start + 1)
    depth, quote_at, escaped = 0, None, False
    for index in range(start, len(text)):
        char = text[index]
        if quote_at is not None:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif _closes_string(text, index, quote_at):
                scan.strings.append((quote_at, index))
                scan.complete, quote_at = index + 1, None
        elif _opens_string(text, index):
            quote_at = index
        elif char in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                scan.too_deep = True
                return scan
        elif char in "]}":
            depth -= 1
            if depth == 0:
                scan.end = index + 1
                return scan
            scan.complete = index + 1
    return scan


def _requoted(text: str, start: int, stop: int, strings: list[tuple[int, int]]) -> str:
    """``text[start:stop]`` with its single- and smart-quoted strings written with double quotes."""
    parts, at = [], start
    for opening, closing in strings:
        if closing >= stop or text[opening] == '"':
            continue
        inner = re.sub(r'(?<!\\)"', r"\"", text[opening + 1 : closing].replace("\\'", "'"))
        parts += [text[at:opening], f'"{inner}"']
        at = closing + 1
    parts.append(text[at:stop])
    return "".join(parts)


def _json_values(text: str) -> list[Any]:
    """Each top-level JSON value in the text, repaired; a value cut off by the reply's end is kept up
    to its last closed part, and only when that holds pairs (else its inner brackets are tried)."""
    values: list[Any] = []
    resume = scans = 0
    for start in (index for index, char in enumerate(text) if char in "[{"):
        if start < resume or not _JSON_START.match(text, start):
            continue
        if scans == MAX_JSON_STARTS:
            break
        scans += 1
        scan = _scan(text, start)
        if scan.too_deep:
            continue
        stop = scan.end if scan.end is not None else scan.complete
        value = json_repair.loads(_requoted(text, start, stop, scan.strings))
        if scan.end is not None:
            values.append(value)
            resume = scan.end
        elif _pairs_in(value):
            values.append(value)
            break
    return values


def _pairs_from_json(values: list[Any]) -> list[QAPair]:
    """The pairs of all values, merged in order (see ``_merged``)."""
    chosen: list[QAPair] = []
    for value in values:
        chosen = _merged(chosen, _pairs_in(value))
    return chosen


def _merged(chosen: list[QAPair], pairs: list[QAPair]) -> list[QAPair]:
    """A later list that repeats a question replaces the earlier ones (the model corrected itself);
    a single later pair replaces the pair with its question; new questions are added."""
    if not {_normal(pair.question) for pair in chosen} & {_normal(pair.question) for pair in pairs}:
        return chosen + pairs
    if len(pairs) > 1:
        return pairs
    (pair,) = pairs
    return [pair if _normal(old.question) == _normal(pair.question) else old for old in chosen]


def _key(name: Any) -> str:
    """``"Question 1"``, ``" ANSWER "``, ``"question_2"`` → ``"question"``, ``"answer"``, ``"question"``."""
    return re.sub(r"[\s_\d]+", "", name.lower()) if isinstance(name, str) else ""


def _is_item(value: Any) -> bool:
    return isinstance(value, dict) and any(_key(name) in QUESTION_KEYS | ANSWER_KEYS for name in value)


def _question_map(value: dict) -> list[dict[str, str]]:
    """``{"What is X?": "X is Y.", …}``: each key that is a question, with a text value, as an item."""
    return [
        {"question": name, "answer": text}
        for name, text in value.items()
        if isinstance(name, str) and name.strip().endswith("?") and isinstance(text, str)
    ]


def _items(value: Any, in_item: bool = False) -> Iterator[Any]:
    """The pair-like items in a value, at any depth: objects with a question or answer key, questions
    mapped to answers, and the strings of lists (not those inside an item, such as its keywords)."""
    if isinstance(value, dict):
        if _is_item(value):
            yield value
            in_item = True
        elif not in_item:
            yield from _question_map(value)
        inner = list(value.values())
    elif isinstance(value, list):
        inner = value
        if not in_item:
            yield from (element for element in value if isinstance(element, str))
    else:
        return
    for element in inner:
        if isinstance(element, dict | list):
            yield from _items(element, in_item)


def _text(value: Any) -> str:
    """A field's text: a string, a number as Python writes it (``42`` → ``"42"``), or a list of them."""
    if isinstance(value, list) and all(isinstance(element, str | int | float) for element in value):
        return ", ".join(str(element).strip() for element in value)
    return str(value).strip() if isinstance(value, str | int | float) else ""


def _field(item: dict, keys: frozenset[str]) -> str:
    return next((_text(value) for name, value in item.items() if _key(name) in keys), "")


def _pairs_in(value: Any) -> list[QAPair]:
    pairs = []
    for item in _items(value):
        if isinstance(item, str):
            pairs += _read_text(item).pairs
        elif (question := _field(item, QUESTION_KEYS)) and (answer := _field(item, ANSWER_KEYS)):
            pairs.append(QAPair(question=question, answer=answer))
    return pairs


def _could_hold_pairs(value: Any) -> bool:
    """A JSON object, or a list of objects, lists or strings (not ``[0, 2, 4]`` quoted in a text reply)."""
    if isinstance(value, list):
        return any(isinstance(element, dict | list | str) for element in value)
    return isinstance(value, dict) and bool(value)


# --- plain text ---------------------------------------------------------------------------------

_INLINE_LABEL = re.compile(
    r"(?<=\S)[ \t]+(?=\**(?:Question|QUESTION|Answer|ANSWER|Frage|Antwort)[ \t]*\d*[ \t]*\**[ \t]*:)"
    r"|(?<=[.?!)*\"'])[ \t]+(?=\**[QA][ \t]*\d*[ \t]*\**[ \t]*:)"
    r"|(?<=\S)[ \t]+(?=\**[QA][ \t]*\d+[ \t]*\**[ \t]*:)"
)
_LABEL = re.compile(
    r"^\**(?P<word>question|answer|frage|antwort|q|a)[ \t]*(?:#?[ \t]*(?P<number>\d{1,3}))?"
    r"[ \t]*\**[ \t]*(?P<sep>[:.)\-–—])?\**[ \t]*(?P<rest>.*)$",
    re.IGNORECASE,
)
_XML_FIELD = re.compile(r"<(/?)(question|answer)>", re.IGNORECASE)
_XML_TAG = re.compile(r"</?[A-Za-z_][\w-]*>")
_LEADING_MARKUP = re.compile(r"^\s*(?:[-*•+]\s+|#{1,6}\s*|\(?\d{1,3}[.)]\s+)*")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_EMPHASISED_LINE = re.compile(r"\*{1,2}[^*]+\*{1,2}:?")
_HEADING = re.compile(r"^#{1,6}\s*")
_BULLET = re.compile(r"^[-*•+]\s+")
_NUMBERING = re.compile(r"^\(?\d{1,3}[.)]\s+")
_DASHED_ANSWER = re.compile(r"\?\s+[-–—→]+\s+")
_SENTENCE_END = re.compile(r"[.!?)\]\"'`»”:;…]$")


@dataclass
class _Line:
    """One line of a text reply: ``kind`` is ``q``/``a`` (labelled), ``numbered``, ``emphasised`` (a bold
    line or heading ending in "?"), ``heading``, ``blank`` or ``text``. ``text`` is without its label or
    numbering, ``whole`` the line with only markdown removed."""

    kind: str
    text: str = ""
    whole: str = ""
    indent: int = 0
    marked: bool = False  # a heading or a bold line


def _label(line: str) -> tuple[str, str] | None:
    """("q" or "a", the rest of the line) when the line starts with a question or answer label."""
    found = _LABEL.match(line)
    if found is None:
        return None
    word, sep, rest = found["word"].lower(), found["sep"], found["rest"].strip()
    if len(word) == 1 and not (sep in (":", ".") or (found["number"] and sep)):
        return None  # "Q-learning", "A) 5 N": a letter is a label as "A:", "A." or "A1)"
    if len(word) > 1 and not sep and rest:
        return None  # "Answering this …", "Questions about …"
    return ("q" if word[0] in "qf" else "a"), rest


def _classify(raw: str) -> _Line:
    stripped = raw.strip()
    if not stripped:
        return _Line("blank")
    indent = len(raw) - len(raw.lstrip())
    heading = _HEADING.match(stripped) is not None
    bold = _EMPHASISED_LINE.fullmatch(stripped) is not None
    whole = _BULLET.sub("", _HEADING.sub("", _BOLD.sub(r"\1", stripped)))
    whole = whole.strip("*").strip() if bold else whole.strip()
    numbering = _NUMBERING.match(whole)
    text = whole[numbering.end() :] if numbering else whole
    label = _label(text)
    if label is not None:
        return _Line(label[0], label[1], whole, indent)
    if numbering:
        return _Line("numbered", text, whole, indent, marked=heading or bold)
    if (heading or bold) and text.endswith("?"):
        return _Line("emphasised", text, whole, indent, marked=True)
    return _Line("heading" if heading else "text", text, whole, indent)


@dataclass
class _TextReader:
    """Reads classified lines one by one, a question (``q``) or answer (``a``) open at a time."""

    labelled_questions: bool
    labelled_answers: bool
    pairs: list[QAPair] = field(default_factory=list)
    unanswered: int = 0
    question: list[str] = field(default_factory=list)
    answer: list[str] = field(default_factory=list)
    writing: str | None = None  # "q", "a" or None (between pairs)
    marked: bool = False  # the open question was labelled or emphasised: its answer may follow a blank
    after_blank: bool = False

    def feed(self, line: _Line) -> None:
        if line.kind == "blank":
            self.after_blank = True
            return
        if line.kind == "q":
            self.start_question(line.text, marked=True)
        elif line.kind == "a":
            self.start_answer(line.text)
        elif line.kind == "numbered" and not self.labelled_questions:
            self.start_numbered(line.text, line.marked)
        elif line.kind == "emphasised" and not self.labelled_questions:
            self.start_question(line.text, marked=True)
        elif line.kind == "heading":
            self.flush()
        else:
            self.continue_with(line.whole, line.indent)
        self.after_blank = False

    def start_question(self, text: str, marked: bool) -> None:
        self.flush()
        self.question = [text] if text else []
        self.writing, self.marked = "q", marked

    def start_numbered(self, text: str, marked: bool) -> None:
        question, _, answer = _DASHED_ANSWER.sub("?\n", text, count=1).partition("\n")
        self.start_question(question, marked)
        if answer.strip():
            self.start_answer(answer.strip())

    def start_answer(self, text: str) -> None:
        if self.writing == "q" and self.question:
            self.answer, self.writing = ([text] if text else []), "a"
        else:
            self.flush()  # an answer with no question before it, or a second answer to one question

    def continue_with(self, text: str, indent: int) -> None:
        if self.writing == "a":
            ended = self.after_blank and self.answer and indent == 0 and not self.answer[-1].endswith(":")
            if ended:
                self.flush()
            else:
                self.answer.append(text)
        elif self.writing == "q":
            self.continue_question(text, indent)

    def continue_question(self, text: str, indent: int) -> None:
        asked = bool(self.question) and self.question[-1].endswith("?")
        if self.labelled_answers or not asked:
            self.question.append(text)
        elif self.after_blank and not (self.marked or indent > 0):
            self.flush()  # prose after a numbered list of questions is not an answer
        else:
            self.start_answer(text)

    def flush(self) -> None:
        question, answer = " ".join(self.question).strip(), " ".join(self.answer).strip()
        if question and answer:
            self.pairs.append(QAPair(question=question, answer=answer))
        elif question:
            self.unanswered += 1
        self.question, self.answer, self.writing = [], [], None


def _split_labels(line: str) -> str:
    """The line with each label after the first put on a line of its own ("Q1: … A1: …")."""
    lead = _LEADING_MARKUP.match(line).end()
    return line[:lead] + _INLINE_LABEL.sub("\n", line[lead:])


def _xml_as_labels(text: str) -> str:
    """``<question>…</question><answer>…</answer>`` written as ``Question:``/``Answer:`` lines."""
    if not _XML_FIELD.search(text):
        return text
    text = _XML_FIELD.sub(lambda tag: "\n" if tag[1] else f"\n{tag[2]}: ", text)
    return _XML_TAG.sub("\n", text)


def _read_text(text: str) -> _TextReader:
    split = "\n".join(_split_labels(line) for line in _xml_as_labels(text).splitlines())
    lines = [_classify(raw) for raw in split.splitlines()]
    kinds = {line.kind for line in lines}
    reader = _TextReader(labelled_questions="q" in kinds, labelled_answers="a" in kinds)
    for line in lines:
        reader.feed(line)
    reader.flush()
    return reader


def _pairs_from_text(text: str) -> tuple[list[QAPair], str | None]:
    reader = _read_text(text)
    if not reader.pairs:
        return [], QUESTIONS_ONLY if reader.unanswered else NO_TEXT_PAIRS
    if not reader.labelled_answers and reader.unanswered >= len(reader.pairs):
        return [], QUESTIONS_ONLY
    return _without_cut_off_last(reader.pairs), None


def _without_cut_off_last(pairs: list[QAPair]) -> list[QAPair]:
    *earlier, last = pairs
    cut_off = (
        bool(earlier)
        and all(_SENTENCE_END.search(pair.answer) for pair in earlier)
        and not _SENTENCE_END.search(last.answer)
        and len(last.answer.split()) >= CUT_OFF_MIN_WORDS
    )
    return earlier if cut_off else pairs


# --- every pair ---------------------------------------------------------------------------------

_OWN_LABEL = {  # "Question 1: …" inside a question, "A: …" inside an answer
    kind: re.compile(rf"^\**(?:{words})\s*\d*\s*\**\s*[:.)\-–]\**\s*|^\**{kind}\s*\d*\s*\**\s*:\**\s*", re.I)
    for kind, words in (("q", "question|frage"), ("a", "answer|antwort"))
}


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def _tidy(text: str, kind: str) -> str:
    return _OWN_LABEL[kind].sub("", html.unescape(text).strip()).strip()


def _is_degenerate(text: str) -> bool:
    words = text.lower().split()
    return len(words) >= DEGENERATE_MIN_WORDS and len(set(words)) / len(words) < DEGENERATE_DISTINCT_SHARE


def _is_content(text: str) -> bool:
    """Not empty, not a placeholder such as "..." (a format example), not degenerate repetition."""
    return any(char.isalnum() for char in text) and not _is_degenerate(text)


def _clean(pairs: list[QAPair]) -> list[QAPair]:
    """Tidied pairs, without empty or degenerate ones, each distinct pair once."""
    kept: list[QAPair] = []
    seen: set[tuple[str, str]] = set()
    for pair in pairs:
        question, answer = _tidy(pair.question, "q"), _tidy(pair.answer, "a")
        if not _is_content(question) or not _is_content(answer):
            continue
        if (_normal(question), _normal(answer)) not in seen:
            seen.add((_normal(question), _normal(answer)))
            kept.append(QAPair(question=question, answer=answer))
    return kept
