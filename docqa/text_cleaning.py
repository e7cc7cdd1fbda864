"""Cleaning extracted text: what PDF extraction leaves that is not the author's text, made plain (ligatures,
TeX's spacing accents, font bullets, odd spaces and line separators), running headers and footers and
page numbers removed, words hyphenated across lines joined. Pure functions of text: ingest applies them
to every page, ``docqa estimate`` to the pages it samples."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

from docqa.settings import IngestSettings

MIN_PAGES_FOR_RUNNING_LINES = 3  # with fewer pages a repeated line is as likely content as a header
DIGITS = re.compile(r"\d+")
PAGE_NUMBER = re.compile(r"(?:page\s+)?(?:[-–—]\s*)?\d{1,4}(?:\s*[-–—])?(?:\s*(?:/|of)\s*\d{1,4})?", re.I)
HYPHEN_BREAK = re.compile(r"([^\W\d_])[-\u00ad][ \t]*\n[ \t]*([^\W\d_])")
INNER_SPACE = re.compile(r"(?<=\S)[ \t]+(?=\S)")
BLANK_RUN = re.compile(r"\n{3,}")
SOFT_HYPHEN = "\u00ad"
COMPATIBILITY_FORMS = re.compile("[\ufb00-\ufb06\uff01-\uff5e]+")  # Latin ligatures, full-width ASCII
WIDE_SPACES = re.compile("[\u00a0\u2000-\u200a\u202f\u205f\u3000]")
PARAGRAPH_SEPARATORS = re.compile("\u2029")
LINE_SEPARATORS = re.compile("[\u2028\x85\x0b\x0c\x1c-\x1e]")
# TeX's OT1 fonts have no accented letters: pdfTeX draws a spacing accent and then the letter, which
# extracts as "M¨uller", "Tom´as". The grave accent (also a backtick) only counts after a letter.
SPACING_ACCENTS = {
    "\u00a8": "\u0308", "\u00b4": "\u0301", "`": "\u0300", "\u02c6": "\u0302", "\u02dc": "\u0303",
    "\u00b8": "\u0327", "\u02c7": "\u030c", "\u02d8": "\u0306", "\u00af": "\u0304", "\u02d9": "\u0307",
    "\u02da": "\u030a", "\u02dd": "\u030b",
}  # fmt: skip
ACCENT_BEFORE_LETTER = re.compile(
    "(?:([\u00a8\u00b4\u02c6\u02dc\u00b8\u02c7\u02d8\u00af\u02d9\u02da\u02dd])|(?<=[^\\W\\d_])(`))([^\\W\\d_])"
)
DOTLESS = {"\u0131": "i", "\u0237": "j"}  # TeX puts accents on a dotless i or j
# a list bullet drawn from a Symbol or Wingdings font (Word's and Writer's defaults) opening a line: its
# private-use code is the font's, not a character (• ▪ ➢ ❖ ✓ ◦ in those fonts; U+F095 is Writer's •)
FONT_BULLETS = "\uf0b7\uf095\uf0a7\uf0d8\uf076\uf0fc\uf0a8"
PRIVATE_USE_BULLET = re.compile(f"^([ \\t]*)[{FONT_BULLETS}](?=[ \\t])", re.MULTILINE)
# C0 and C1 controls but tab, newline and carriage return (handled later); zero-width space, word joiner, BOM
DROPPED_CHARACTERS = re.compile("[\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f\u200b\u2060\ufeff]")


def clean_pages(pages: list[str], settings: IngestSettings) -> list[str]:
    """Characters normalised, running headers/footers and page numbers removed, hyphenated words joined,
    whitespace normalised."""
    if settings.normalise_text:
        pages = [normalise_characters(text) for text in pages]
    page_lines = [_normalise_lines(text) for text in pages]
    running = _running_lines(page_lines, settings)
    return [_clean_page(lines, running, settings.header_footer_lines) for lines in page_lines]


def _compatibility_form(match: re.Match[str]) -> str:
    return unicodedata.normalize("NFKC", match.group())


def normalise_characters(text: str) -> str:
    """What PDF extraction leaves that is not the author's text, made plain; meaningful symbols kept.

    - Canonical composition (NFC): "e" + combining acute is "é", as typed.
    - Compatibility forms only where they are typesetting, not meaning (a documented subset of NFKC):
      ligatures ("ﬁ" → "fi", U+FB00–FB06), full-width ASCII ("Ａ" → "A"), and space characters of other
      widths (no-break, thin, em, ideographic) → " ". Superscripts, fractions, "µ", "™", circled
      numbers and every other symbol stay as they are: NFKC would turn "x²" into "x2".
    - A spacing accent before a letter, as TeX's OT1 fonts draw accented letters ("M¨uller"), becomes
      the accented letter ("Müller") where Unicode has it as one character; otherwise it stays
      ("don´t"). A grave accent counts only after a letter ("Rivi`ere"): it is also a backtick.
    - A list bullet from a Symbol or Wingdings font opening a line (a private-use code) becomes "•".
    - Line and paragraph separators (U+2028, U+2029, U+0085, vertical tab, form feed, U+001C–U+001E)
      become line ends; other control characters (not tab or newline) are dropped.
    - Invisible format characters are dropped: zero-width space, word joiner, byte-order mark. The
      zero-width (non-)joiners stay: Persian, Indic scripts and emoji sequences need them. Soft hyphens
      are dropped once a hyphenated line end has been joined (``_clean_page``).
    """
    text = unicodedata.normalize("NFC", text)
    text = ACCENT_BEFORE_LETTER.sub(_accented, text)
    text = PRIVATE_USE_BULLET.sub("\\1•", text)
    text = COMPATIBILITY_FORMS.sub(_compatibility_form, text)
    text = WIDE_SPACES.sub(" ", text)
    text = PARAGRAPH_SEPARATORS.sub("\n\n", text)
    text = LINE_SEPARATORS.sub("\n", text.replace("\r\n", "\n"))
    return DROPPED_CHARACTERS.sub("", text)


def _accented(match: re.Match[str]) -> str:
    accent, letter = match.group(1) or match.group(2), match.group(3)
    composed = unicodedata.normalize("NFC", DOTLESS.get(letter, letter) + SPACING_ACCENTS[accent])
    return composed if len(composed) == 1 else match.group()


def _normalise_lines(text: str) -> list[str]:
    """Lines without trailing spaces, inner runs of spaces made one; leading indentation (code) kept."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u00a0", " ").split("\n")
    return [INNER_SPACE.sub(" ", line.rstrip()) for line in lines]


def _line_key(line: str) -> str:
    """A line with its numbers masked, so "Page 3 of 9" and "Page 4 of 9" count as one running line."""
    return DIGITS.sub("#", " ".join(line.split()))


def _edge_indices(lines: list[str], depth: int) -> list[int]:
    """Indices of the first and last ``depth`` non-empty lines of a page."""
    filled = [index for index, line in enumerate(lines) if line.strip()]
    return sorted(set(filled[:depth] + filled[-depth:])) if depth else []


def _running_lines(page_lines: list[list[str]], settings: IngestSettings) -> set[str]:
    """Keys of edge lines that repeat on at least ``header_footer_min_share`` of the pages."""
    if len(page_lines) < MIN_PAGES_FOR_RUNNING_LINES:
        return set()
    seen: Counter[str] = Counter()
    for lines in page_lines:
        seen.update({_line_key(lines[i]) for i in _edge_indices(lines, settings.header_footer_lines)})
    needed = max(2, settings.header_footer_min_share * len(page_lines))
    return {key for key, count in seen.items() if count >= needed}


def _clean_page(lines: list[str], running: set[str], depth: int) -> str:
    dropped = {
        index
        for index in _edge_indices(lines, depth)
        if _line_key(lines[index]) in running or PAGE_NUMBER.fullmatch(lines[index].strip())
    }
    text = "\n".join(line for index, line in enumerate(lines) if index not in dropped)
    text = HYPHEN_BREAK.sub(_join_hyphenated, text).replace(SOFT_HYPHEN, "")
    return BLANK_RUN.sub("\n\n", text).strip("\n")


def _join_hyphenated(match: re.Match[str]) -> str:
    """ "exam-" + newline + "ple" becomes "example"; a capital after the break ("Anglo-\nSaxon") stays."""
    head, tail = match.group(1), match.group(2)
    return head + tail if tail.islower() else match.group(0)
