"""The bundled sample corpus: the Python Language Reference topics that CPython ships, typeset as PDFs.

``pydoc_data.topics`` holds the reference sections that ``help()`` shows (about 465k characters of
reStructuredText rendered as plain text). The shorter sections of four themes make four PDFs of 7-8
pages (about 18k tokens in all: small enough to train a real 135M model on a CPU in the quickstart), with
what real documents have and ingest must handle: running headers and footers, page numbers, words
hyphenated across line ends, prose in a proportional font and code in a monospaced one, and characters
outside Latin-1. The files are byte-for-byte reproducible, so their digests (and every cached stage
downstream) stay the same from run to run.

Topics whose text is almost wholly contained in a longer topic (``if`` inside ``compound``,
``customization`` inside ``specialnames``) are left out, so that no passage appears in two documents:
the train/eval split is by document, and a repeated passage would leak across it.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from pydoc_data.topics import topics as PYDOC_TOPICS

import matplotlib
from fpdf import FPDF

from docqa.workspace import new_tmp_dir, publish_dir

FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
CREATION_DATE = datetime(2024, 1, 1, tzinfo=UTC)  # fixed, so the files are reproducible
HEADER_PREFIX = "Python Language Reference"
FOOTER_TEXT = f"docqa sample corpus · CPython {platform.python_version()} pydoc topics"

# Page geometry, millimetres on A4.
PAGE_FORMAT = "A4"
MARGIN_X = 22.0
HEADER_BASELINE = 13.0
HEADER_RULE_Y = 15.5
BODY_TOP = 24.0
BODY_BOTTOM_MARGIN = 24.0
FOOTER_RULE_MARGIN = 19.0
FOOTER_BASELINE_MARGIN = 14.5
PAGE_NUMBER_BASELINE_MARGIN = 9.5
RULE_WIDTH = 0.2

# Type: font sizes in points, line heights in millimetres.
TITLE_PT, TITLE_LINE = 20, 11.0
HEADING_PT, HEADING_LINE = 14, 8.0
SUBHEADING_PT, SUBHEADING_LINE = 12, 6.5
PROSE_PT, PROSE_LINE = 11, 5.4
CODE_PT, CODE_LINE = 9, 4.4
RUNNING_PT = 8
PARAGRAPH_GAP = 2.4
INDENT_PER_CHAR = 1.6  # millimetres of left offset per leading space of an indented prose block
BASELINE_SHARE = 0.78  # where the baseline sits within a line's height
FIT_TOLERANCE = 1e-6  # millimetres: absorbs float rounding, so "two lines fit" implies "the next fits"

# Hyphenation: a word of at least this many letters that does not fit is split across the line end.
HYPHENATE_MIN_LETTERS = 10
HYPHENATE_MIN_PART = 4
VOWELS = frozenset("aeiouy")
# A word with trailing punctuation; lower-case after its first letter, so ingest's rule (a lower-case
# letter after the break) joins the halves again.
HYPHENATABLE = re.compile(r"([A-Za-z][a-z]+)([^\w\s]*)")
ENDS_WITH_HYPHEN = re.compile(r"[^\W\d_]-$")

# A prose block is wrapped text: every line but the last is at least this long (Sphinx wraps at 70).
PROSE_MIN_WRAPPED_CHARS = 40
PROSE_MIN_WORDS = 3  # a one-line block is prose if it has this many words and ends like a sentence
SENTENCE_ENDS = ".:;?!)"
BULLET = re.compile(r"\s*(?:[*-]|\d+\.) ")
CODE_MARKERS = ("::=", ">>>")  # grammar productions, interactive sessions
TABLE_STARTS = ("+-", "+=", "|")
HEADING_UNDERLINES = {"*": 1, "=": 2, "-": 2, "^": 2, "~": 2}
MIN_UNDERLINE = 3

# A topic is left out when this share of its paragraphs also appears in a longer topic.
CONTAINED_SHARE = 0.75
MIN_PARAGRAPH_CHARS = 40


@dataclass(frozen=True)
class Theme:
    stem: str
    title: str
    topics: tuple[str, ...]


# Four documents of about 4,500 tokens each: small enough that the quickstart trains a real 135M model on
# a CPU within minutes, large enough for knowledge and control questions. Topics are the shorter sections
# of their theme; the rest of the reference is left out.
THEMES: tuple[Theme, ...] = (
    Theme(
        "01-simple-statements",
        "Simple Statements",
        ("assert", "pass", "del", "return", "raise", "break", "continue", "import", "global", "nonlocal"),
    ),
    Theme(
        "02-expressions",
        "Expressions and Operators",
        (
            "atom-identifiers",
            "atom-literals",
            "lists",
            "dict",
            "yield",
            "attribute-references",
            "subscriptions",
            "slicings",
            "power",
            "unary",
            "shifting",
            "bitwise",
            "booleans",
            "lambda",
            "exprlists",
            "conversions",
        ),
    ),
    Theme(
        "03-lexical-analysis",
        "Lexical Analysis and Literals",
        ("identifiers", "strings", "numbers", "integers", "floating", "imaginary"),
    ),
    Theme(
        "04-data-model",
        "Objects, Truth Values and the Execution Model",
        ("objects", "specialattrs", "truth", "execmodel"),
    ),
)


@dataclass(frozen=True)
class Heading:
    text: str
    level: int


@dataclass(frozen=True)
class Prose:
    text: str
    indent: int


@dataclass(frozen=True)
class Code:
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Rule:
    pass


Block = Heading | Prose | Code | Rule


def write_sample_corpus(out_dir: Path) -> list[Path]:
    """Write the sample PDFs into ``out_dir`` (created if missing) and return their paths, sorted."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for theme, texts in group_topics(PYDOC_TOPICS):
        path = out_dir / f"{theme.stem}.pdf"
        path.write_bytes(render_document(theme.title, texts))
        paths.append(path)
    return paths


def ensure_sample_corpus(out_dir: Path) -> Path:
    """The sample corpus in ``out_dir``, written (atomically) only if the folder is not there yet, so
    that a run on it does not rewrite eight PDFs every time."""
    if not out_dir.is_dir():
        tmp = new_tmp_dir(out_dir.parent)
        write_sample_corpus(tmp)
        publish_dir(tmp, out_dir)
    return out_dir


def group_topics(topics: dict[str, str]) -> list[tuple[Theme, list[str]]]:
    """Topic texts per theme, contained topics dropped (topics no theme names are left out)."""
    contained = contained_topics(topics)
    kept = {key: text for key, text in topics.items() if key not in contained}
    groups = [(theme, [kept[key] for key in theme.topics if key in kept]) for theme in THEMES]
    return [(theme, texts) for theme, texts in groups if texts]


def contained_topics(topics: dict[str, str]) -> set[str]:
    """Topics whose paragraphs mostly appear in a longer topic (ties broken by key order)."""
    paragraphs = {key: _paragraphs(text) for key, text in topics.items()}
    contained = set()
    for key, own in paragraphs.items():
        for other, text in topics.items():
            longer = (len(text), other) > (len(topics[key]), key)
            if longer and own and sum(p in text for p in own) >= CONTAINED_SHARE * len(own):
                contained.add(key)
                break
    return contained


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in text.split("\n\n") if len(p.strip()) >= MIN_PARAGRAPH_CHARS]


# ---------------------------------------------------------------------------------------------------
# Parsing the pydoc text into blocks


def parse_blocks(text: str) -> list[Block]:
    """Headings (a line underlined with ``*``/``=``/``-``), transitions, prose paragraphs and code."""
    blocks: list[Block] = []
    for lines in _split_on_blank_lines(text):
        blocks.extend(_classify(lines))
    return blocks


def _split_on_blank_lines(text: str) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.strip():
            groups[-1].append(line.rstrip())
        elif groups[-1]:
            groups.append([])
    return [group for group in groups if group]


def _classify(lines: list[str]) -> list[Block]:
    if not lines:
        return []
    if len(lines) == 1 and _is_underline(lines[0]):
        return [Rule()]
    for i in range(len(lines) - 1):
        if _is_underline(lines[i + 1]) and len(lines[i + 1].strip()) == len(lines[i].strip()):
            heading = Heading(lines[i].strip(), HEADING_UNDERLINES[lines[i + 1].strip()[0]])
            return [*_classify(lines[:i]), heading, *_classify(lines[i + 2 :])]
    if _is_prose(lines):
        return [Prose(_join_wrapped(lines), _indent(lines[0]))]
    if _is_definition(lines):
        return [Prose(lines[0].strip(), _indent(lines[0])), *_classify(lines[1:])]
    return [Code(tuple(lines))]


def _is_underline(line: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= MIN_UNDERLINE and stripped[0] in HEADING_UNDERLINES and len(set(stripped)) == 1


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_prose(lines: list[str]) -> bool:
    """Wrapped text at one indentation; anything else (grammar, examples, tables) is set as code."""
    if any(marker in line for line in lines for marker in CODE_MARKERS):
        return False
    if any(line.lstrip().startswith(TABLE_STARTS) for line in lines):
        return False
    first = _indent(lines[0])
    bullet = BULLET.match(lines[0])
    continuation = bullet.end() if bullet else first
    if any(_indent(line) != continuation for line in lines[1:]):
        return False
    if len(lines) > 1:
        return all(len(line.strip()) >= PROSE_MIN_WRAPPED_CHARS for line in lines[:-1])
    words = lines[0].split()
    return len(words) >= PROSE_MIN_WORDS and lines[0].rstrip()[-1] in SENTENCE_ENDS


def _is_definition(lines: list[str]) -> bool:
    """A term line with its description indented under it ("Sets" / "   These represent ...")."""
    body = lines[1:]
    if not body or {_indent(line) for line in body} != {_indent(body[0])}:
        return False
    return _indent(body[0]) > _indent(lines[0]) and _is_prose(body)


def _join_wrapped(lines: list[str]) -> str:
    """One paragraph; a line that Sphinx broke after a hyphen ("built-" / "in") keeps the word whole."""
    text = lines[0].strip()
    for line in lines[1:]:
        separator = "" if ENDS_WITH_HYPHEN.search(text) else " "
        text += separator + line.strip()
    return text


# ---------------------------------------------------------------------------------------------------
# Line breaking


@dataclass(frozen=True)
class Line:
    text: str
    hyphenated: bool  # ends with a hyphen this module inserted


def wrap_words(text: str, max_width: float, measure: Callable[[str], float]) -> list[Line]:
    """Greedy word wrap; a long word that does not fit is hyphenated at the widest prefix that does.

    Widths add up (no kerning is applied), so a line's width is kept as a running sum.
    """
    lines: list[Line] = []
    current, width = "", 0.0
    space = measure(" ")
    for word in text.split():
        word_width = measure(word)
        if current and width + space + word_width <= max_width:
            current, width = f"{current} {word}", width + space + word_width
            continue
        head, tail = _hyphenate(current, word, max_width, measure)
        if head:
            lines.append(Line(head, hyphenated=True))
            current, width = tail, measure(tail)
        else:
            if current:
                lines.append(Line(current, hyphenated=False))
            current, width = word, word_width
    if current:
        lines.append(Line(current, hyphenated=False))
    return lines


def _hyphenate(current: str, word: str, max_width: float, measure: Callable[[str], float]) -> tuple[str, str]:
    """(line ending "prefix-", rest of the word) for a long alphabetic word, or ("", "") if none fits."""
    match = HYPHENATABLE.fullmatch(word)
    if not current or not match or len(match.group(1)) < HYPHENATE_MIN_LETTERS:
        return "", ""
    letters = match.group(1)
    for cut in range(len(letters) - HYPHENATE_MIN_PART, HYPHENATE_MIN_PART - 1, -1):
        head = f"{current} {letters[:cut]}-"
        if _syllable_break(letters, cut) and measure(head) <= max_width:
            return head, word[cut:]
    return "", ""


def _syllable_break(letters: str, cut: int) -> bool:
    """A crude but deterministic syllable rule: break between a vowel and a consonant ("repre-sented")."""
    return letters[cut - 1].lower() in VOWELS and letters[cut].lower() not in VOWELS


def hyphen_chain(lines: list[Line], index: int) -> int:
    """How many lines from ``index`` on must share a page: each hyphenated line with the line after it."""
    end = index
    while end < len(lines) and lines[end].hyphenated:
        end += 1
    return end - index + 1


def split_long_line(line: str, max_chars: int) -> list[str]:
    """Hard-wrap a code line that is wider than the page (no hyphen: code is not prose)."""
    return [line[i : i + max_chars] for i in range(0, len(line), max_chars)] or [""]


# ---------------------------------------------------------------------------------------------------
# Typesetting


class Typesetter:
    """Places blocks on pages top to bottom, drawing running header, footer and page number."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.pdf = FPDF(format=PAGE_FORMAT, unit="mm")
        self.pdf.set_creation_date(CREATION_DATE)
        self.pdf.set_title(title)
        self.pdf.set_author("docqa sample corpus")
        self.pdf.set_subject(f"CPython {platform.python_version()} pydoc_data.topics")
        self.pdf.set_auto_page_break(False)
        self.pdf.add_font("Sans", "", str(FONT_DIR / "DejaVuSans.ttf"))
        self.pdf.add_font("Sans", "B", str(FONT_DIR / "DejaVuSans-Bold.ttf"))
        self.pdf.add_font("Mono", "", str(FONT_DIR / "DejaVuSansMono.ttf"))
        self.width = self.pdf.w - 2 * MARGIN_X
        self.bottom = self.pdf.h - BODY_BOTTOM_MARGIN
        self.y = 0.0
        self._char_widths: dict[tuple[str, str, float, str], float] = {}

    def measure(self, text: str) -> float:
        """Width of ``text`` in the current font: the sum of cached glyph widths (no kerning is applied)."""
        font = (self.pdf.font_family, self.pdf.font_style, self.pdf.font_size_pt)
        total = 0.0
        for char in text:
            key = (*font, char)
            if key not in self._char_widths:
                self._char_widths[key] = self.pdf.get_string_width(char)
            total += self._char_widths[key]
        return total

    def new_page(self) -> None:
        if self.pdf.page:
            self._draw_footer()
        self.pdf.add_page()
        self.pdf.set_line_width(RULE_WIDTH)
        self.pdf.set_font("Sans", size=RUNNING_PT)
        self.pdf.text(MARGIN_X, HEADER_BASELINE, f"{HEADER_PREFIX} — {self.title}")
        self.pdf.line(MARGIN_X, HEADER_RULE_Y, self.pdf.w - MARGIN_X, HEADER_RULE_Y)
        self.y = BODY_TOP

    def _draw_footer(self) -> None:
        """Drawn after the body, so that text extraction meets it last, as in most real PDFs."""
        self.pdf.set_font("Sans", size=RUNNING_PT)
        rule_y = self.pdf.h - FOOTER_RULE_MARGIN
        self.pdf.line(MARGIN_X, rule_y, self.pdf.w - MARGIN_X, rule_y)
        self.pdf.text(MARGIN_X, self.pdf.h - FOOTER_BASELINE_MARGIN, FOOTER_TEXT)
        number = f"- {self.pdf.page} -"
        x = (self.pdf.w - self.measure(number)) / 2
        self.pdf.text(x, self.pdf.h - PAGE_NUMBER_BASELINE_MARGIN, number)

    def _fits(self, height: float) -> bool:
        return self.y + height <= self.bottom + FIT_TOLERANCE

    def _line(self, x: float, text: str, height: float) -> None:
        if not self._fits(height):
            self.new_page()
        self.pdf.text(x, self.y + height * BASELINE_SHARE, text)
        self.y += height

    def title_block(self, subtitle: str) -> None:
        self.pdf.set_font("Sans", "B", size=TITLE_PT)
        for line in wrap_words(self.title, self.width, self.measure):
            self._line(MARGIN_X, line.text, TITLE_LINE)
        self.pdf.set_font("Sans", size=PROSE_PT)
        self._line(MARGIN_X, subtitle, PROSE_LINE)
        self.y += TITLE_LINE

    def heading(self, block: Heading) -> None:
        size, height = (HEADING_PT, HEADING_LINE) if block.level == 1 else (SUBHEADING_PT, SUBHEADING_LINE)
        if not self._fits(height + 2 * PROSE_LINE):  # keep a heading with the text after it
            self.new_page()
        self.y += PARAGRAPH_GAP
        self.pdf.set_font("Sans", "B", size=size)
        for line in wrap_words(block.text, self.width, self.measure):
            self._line(MARGIN_X, line.text, height)

    def prose(self, block: Prose) -> None:
        self.pdf.set_font("Sans", size=PROSE_PT)
        x = MARGIN_X + block.indent * INDENT_PER_CHAR
        lines = wrap_words(block.text, self.pdf.w - MARGIN_X - x, self.measure)
        for index, line in enumerate(lines):
            # A word is never hyphenated across a page break: ingest joins lines within a page only.
            if not self._fits(hyphen_chain(lines, index) * PROSE_LINE):
                self.new_page()
            self._line(x, line.text, PROSE_LINE)
        self.y += PARAGRAPH_GAP

    def code(self, block: Code) -> None:
        self.pdf.set_font("Mono", size=CODE_PT)
        max_chars = int(self.width / self.measure("M"))
        for source_line in block.lines:
            for line in split_long_line(source_line, max_chars):
                self._line(MARGIN_X, line, CODE_LINE)
        self.y += PARAGRAPH_GAP

    def rule(self) -> None:
        self.y += PARAGRAPH_GAP
        self.pdf.line(MARGIN_X, self.y, self.pdf.w - MARGIN_X, self.y)
        self.y += PARAGRAPH_GAP

    def finish(self) -> bytes:
        self._draw_footer()
        return bytes(self.pdf.output())


def render_document(title: str, topic_texts: list[str]) -> bytes:
    """One PDF: the title on page 1, then each topic from its heading line on."""
    setter = Typesetter(title)
    setter.new_page()
    setter.title_block(f"Reference topics as shipped with CPython {platform.python_version()}.")
    for text in topic_texts:
        for block in parse_blocks(text):
            _draw_block(setter, block)
    return setter.finish()


def _draw_block(setter: Typesetter, block: Block) -> None:
    match block:
        case Heading():
            setter.heading(block)
        case Prose():
            setter.prose(block)
        case Code():
            setter.code(block)
        case Rule():
            setter.rule()
