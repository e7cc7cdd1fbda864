"""Text a reader of the page cannot see: found in a page's content stream, left out of extraction.

PDF text extraction (pypdf's included) returns every string the content stream shows, whether a person
can see it or not. Hidden text is how prompt injection reaches a synthesis LLM ("ignore previous
instructions…" in white on white) and how junk reaches training. Each text-showing operator (``Tj``,
``TJ``, ``'``, ``"``) is judged in the graphics state it runs in (kept through ``q``/``Q``):

- ``render_mode``: text render mode 3 (invisible) or 7 (clip only), unless an image drawn on the page
  (before or after it) covers where it starts: that is how a scanned page carries its OCR text
  (ocrmypdf, Acrobat, scanners' own software), and a reader sees that text in the image. An image drawn
  over invisible text on purpose passes too: the instruction-like chunk flags (``docqa.injection``) are
  the next line of defence;
- ``white``: filled (or, in mode 1, stroked) in white, which on a white page is invisible (the page's
  own background is taken as white: white text on a dark box is taken as hidden too);
- ``tiny``: an effective font size (``Tf`` × text matrix × CTM) below ``min_font_pt``;
- ``off_page``: starting outside the page's crop box;
- ``clipped``: starting outside the current clipping rectangle (``re W n``, as axis-aligned boxes).

Form XObjects (``Do``) are scanned where they are drawn, in the graphics state of the drawing, nested
up to ``MAX_FORM_DEPTH`` deep and ``MAX_FORM_INVOCATIONS`` times a page (pypdf's own extraction stops at
5,000); a form with hidden text is extracted from an emptied copy, wherever it is drawn. The hidden
strings are counted by glyph codes (one byte a glyph for simple fonts, two for composite ones). A page
without hidden text is extracted exactly as before; a page with some is extracted from a copy of its
content stream (and forms) whose hidden strings are emptied.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace

from pypdf import PageObject, PdfReader
from pypdf.generic import (
    ArrayObject,
    ByteStringObject,
    ContentStream,
    DictionaryObject,
    NameObject,
    StreamObject,
    TextStringObject,
)

HIDDEN_REASONS = ("render_mode", "white", "tiny", "off_page", "clipped")
INVISIBLE_RENDER_MODES = {3, 7}
STROKE_ONLY_RENDER_MODE = 1
WHITE_LEVEL = 0.98  # a colour this close to white counts as white
PAGE_MARGIN_PT = 2.0  # text starting this close outside the page still counts as on it
TEXT_SHOWING = {b"Tj", b"TJ", b"'", b'"'}
MAX_FORM_DEPTH = 8
MAX_FORM_INVOCATIONS = 2000
UNIT_SQUARE = (0.0, 0.0, 1.0, 1.0)
Matrix = tuple[float, float, float, float, float, float]
IDENTITY: Matrix = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)
Box = tuple[float, float, float, float]  # x0, y0, x1, y1


def multiply(m: Matrix, n: Matrix) -> Matrix:
    """``m`` then ``n`` (PDF's row-vector convention: a point p maps to p·m·n)."""
    a, b, c, d, e, f = m
    a2, b2, c2, d2, e2, f2 = n
    return (a * a2 + b * c2, a * b2 + b * d2, c * a2 + d * c2, c * b2 + d * d2, e * a2 + f * c2 + e2,
            e * b2 + f * d2 + f2)  # fmt: skip


def apply(m: Matrix, x: float, y: float) -> tuple[float, float]:
    return x * m[0] + y * m[2] + m[4], x * m[1] + y * m[3] + m[5]


def scale(m: Matrix) -> float:
    return math.sqrt(abs(m[0] * m[3] - m[1] * m[2]))


@dataclass
class GraphicsState:
    ctm: Matrix = IDENTITY
    fill: tuple[float, ...] = (0.0,)
    stroke: tuple[float, ...] = (0.0,)
    fill_space: str = "/DeviceGray"
    stroke_space: str = "/DeviceGray"
    render_mode: int = 0
    font_size: float = 0.0
    leading: float = 0.0
    clip: Box | None = None


def is_white(colour: tuple[float, ...], space: str) -> bool:
    if len(colour) == 4 or space == "/DeviceCMYK":
        return all(c <= 1 - WHITE_LEVEL for c in colour)
    return bool(colour) and all(c >= WHITE_LEVEL for c in colour)


def _numbers(operands) -> tuple[float, ...]:
    values = []
    for operand in operands:
        try:
            values.append(float(operand))
        except (TypeError, ValueError):  # a pattern name among scn operands
            continue
    return tuple(values)


def _glyph_codes(operator: bytes, operands, composite: bool) -> int:
    """How many glyphs the operator shows: its strings' bytes, two a glyph in a composite font."""
    strings = operands[0] if operator == b"TJ" and operands else operands[-1:]
    size = 0
    for item in strings:
        if isinstance(item, TextStringObject):
            size += len(item.original_bytes)
        elif isinstance(item, ByteStringObject):
            size += len(item)
    return size // 2 if composite else size


@dataclass
class Scan:
    """What a content stream hides: glyph codes per reason, the operations without them, and the forms it
    draws that hide text (by resource name, each with its own scan)."""

    hidden: Counter = field(default_factory=Counter)
    operations: list = field(default_factory=list)
    forms: dict[str, Scan] = field(default_factory=dict)


class Resources:
    """The fonts and XObjects one content stream names (a page's, or a form's own)."""

    def __init__(self, resources, inherited: Resources | None = None):
        resources = resources.get_object() if resources is not None else None
        if not resources and inherited is not None:  # a form without resources uses its page's
            self.__dict__.update(inherited.__dict__)
            return
        resources = resources or {}
        fonts = resources.get("/Font") or {}
        self.composite = {
            name: fonts[name].get_object().get("/Subtype") == "/Type0"
            for name in getattr(fonts, "keys", list)()
        }
        xobjects = resources.get("/XObject") or {}
        self.xobjects = {name: xobjects[name].get_object() for name in getattr(xobjects, "keys", list)()}

    def subtype(self, name: str) -> str | None:
        xobject = self.xobjects.get(name)
        return xobject.get("/Subtype") if isinstance(xobject, StreamObject) else None


class VisibilityScanner:
    """Walks one page's content stream with the graphics state, judging every text-showing operator."""

    def __init__(self, page: PageObject, reader: PdfReader, min_font_pt: float):
        self.reader = reader
        self.min_font_pt = min_font_pt
        box = page.cropbox
        self.page_box: Box = (float(box.left), float(box.bottom), float(box.right), float(box.top))
        self.resources = Resources(page.get("/Resources"))
        self.image_boxes: list[Box] = []  # where the page's images are painted
        self.form_invocations = 0

    def scan_page(self, content: ContentStream) -> Scan:
        self.image_boxes = self._image_boxes(content)
        return self.scan(content, GraphicsState(), self.resources, depth=0)

    def _image_boxes(self, content: ContentStream) -> list[Box]:
        """Where the page's own content stream paints images (XObjects or inline)."""
        boxes, ctm, stack = [], IDENTITY, []
        for operands, operator in content.operations:
            if operator == b"q":
                stack.append(ctm)
            elif operator == b"Q":
                ctm = stack.pop() if stack else IDENTITY
            elif operator == b"cm":
                ctm = multiply(tuple(_numbers(operands)[:6]) or IDENTITY, ctm)
            elif operator == b"INLINE IMAGE" or (
                operator == b"Do" and operands and self.resources.subtype(str(operands[0])) == "/Image"
            ):
                boxes.append(self._box(ctm, UNIT_SQUARE))
        return boxes

    def _scan_form(
        self, name: str, state: GraphicsState, resources: Resources, depth: int, result: Scan
    ) -> None:
        """Scan the form ``name`` drawn in ``state``; record it in ``result`` if it hides text."""
        self.form_invocations += 1
        if depth >= MAX_FORM_DEPTH or self.form_invocations > MAX_FORM_INVOCATIONS:
            return
        form = resources.xobjects[name]
        matrix = tuple(_numbers(form.get("/Matrix") or [])[:6]) or IDENTITY
        inner = replace(state, ctm=multiply(matrix, state.ctm))
        content = ContentStream(form, self.reader, "bytes")
        scan = self.scan(content, inner, Resources(form.get("/Resources"), resources), depth + 1)
        if scan.hidden:
            result.hidden.update(scan.hidden)
            result.forms.setdefault(name, scan)

    def scan(self, content: ContentStream, state: GraphicsState, resources: Resources, depth: int) -> Scan:
        result = Scan()
        initial, state, stack = state, replace(state), []  # the caller's state is left as it was
        text_matrix = line_matrix = IDENTITY
        pending_box: Box | None = None
        clip_next = False
        font_name = None
        for operands, operator in content.operations:
            if operator == b"q":
                stack.append(replace(state))
            elif operator == b"Q":
                state = stack.pop() if stack else replace(initial)
            elif operator == b"cm":
                state.ctm = multiply(tuple(_numbers(operands)[:6]) or IDENTITY, state.ctm)
            elif operator == b"re":
                pending_box = self._box(state.ctm, _numbers(operands))
            elif operator in (b"W", b"W*"):
                clip_next = True
            elif operator in (b"n", b"f", b"F", b"f*", b"S", b"s", b"B", b"B*", b"b", b"b*"):
                if clip_next and pending_box is not None:
                    state.clip = pending_box if state.clip is None else _intersect(state.clip, pending_box)
                clip_next, pending_box = False, None
            elif operator in (b"g", b"rg", b"k", b"sc", b"scn"):
                state.fill = _numbers(operands)
                if operator != b"sc" and operator != b"scn":
                    state.fill_space = {b"g": "/DeviceGray", b"rg": "/DeviceRGB", b"k": "/DeviceCMYK"}[
                        operator
                    ]
            elif operator in (b"G", b"RG", b"K", b"SC", b"SCN"):
                state.stroke = _numbers(operands)
                if operator in (b"G", b"RG", b"K"):
                    state.stroke_space = {b"G": "/DeviceGray", b"RG": "/DeviceRGB", b"K": "/DeviceCMYK"}[
                        operator
                    ]
            elif operator == b"cs" and operands:
                state.fill_space, state.fill = str(operands[0]), (0.0,)
            elif operator == b"CS" and operands:
                state.stroke_space, state.stroke = str(operands[0]), (0.0,)
            elif operator == b"Tr":
                state.render_mode = int(_numbers(operands)[0]) if _numbers(operands) else 0
            elif operator == b"Tf" and len(operands) >= 2:
                font_name, state.font_size = str(operands[0]), float(operands[1])
            elif operator == b"Do" and operands and resources.subtype(str(operands[0])) == "/Form":
                self._scan_form(str(operands[0]), state, resources, depth, result)
            elif operator == b"TL":
                state.leading = _numbers(operands)[0] if _numbers(operands) else 0.0
            elif operator == b"BT":
                text_matrix = line_matrix = IDENTITY
            elif operator == b"Tm":
                text_matrix = line_matrix = tuple(_numbers(operands)[:6]) or IDENTITY
            elif operator in (b"Td", b"TD"):
                tx, ty = (*_numbers(operands), 0.0, 0.0)[:2]
                if operator == b"TD":
                    state.leading = -ty
                text_matrix = line_matrix = multiply((1.0, 0.0, 0.0, 1.0, tx, ty), line_matrix)
            elif operator in (b"T*", b"'", b'"'):
                text_matrix = line_matrix = multiply((1.0, 0.0, 0.0, 1.0, 0.0, -state.leading), line_matrix)
            if operator in TEXT_SHOWING:
                reason = self._hidden(state, text_matrix)
                if reason is not None:
                    result.hidden[reason] += _glyph_codes(
                        operator, operands, resources.composite.get(font_name, False)
                    )
                    operands, operator = self._emptied(operands, operator)
            result.operations.append((operands, operator))
        return result

    def _box(self, ctm: Matrix, numbers: tuple[float, ...]) -> Box | None:
        if len(numbers) < 4:
            return None
        x, y, w, h = numbers[:4]
        corners = [apply(ctm, cx, cy) for cx, cy in ((x, y), (x + w, y), (x, y + h), (x + w, y + h))]
        xs, ys = [c[0] for c in corners], [c[1] for c in corners]
        return min(xs), min(ys), max(xs), max(ys)

    def _hidden(self, state: GraphicsState, text_matrix: Matrix) -> str | None:
        matrix = multiply(text_matrix, state.ctm)
        x, y = apply(matrix, 0.0, 0.0)
        if state.render_mode in INVISIBLE_RENDER_MODES:
            over_image = any(_inside(box, x, y, PAGE_MARGIN_PT) for box in self.image_boxes)
            return None if over_image else "render_mode"
        stroked = state.render_mode == STROKE_ONLY_RENDER_MODE
        colour, space = (state.stroke, state.stroke_space) if stroked else (state.fill, state.fill_space)
        if is_white(colour, space):
            return "white"
        if state.font_size * scale(matrix) < self.min_font_pt:
            return "tiny"
        if not _inside(self.page_box, x, y, PAGE_MARGIN_PT):
            return "off_page"
        if state.clip is not None and not _inside(state.clip, x, y, PAGE_MARGIN_PT):
            return "clipped"
        return None

    @staticmethod
    def _emptied(operands, operator: bytes):
        """The operator with nothing to show (its positioning kept, so the rest lays out as before)."""
        if operator == b"TJ":
            return [ArrayObject()], operator
        if operator == b'"':
            return [*operands[:2], ByteStringObject(b"")], operator
        return [ByteStringObject(b"")], operator


def _inside(box: Box, x: float, y: float, margin: float) -> bool:
    return box[0] - margin <= x <= box[2] + margin and box[1] - margin <= y <= box[3] + margin


def _intersect(a: Box, b: Box) -> Box:
    return max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])


def visible_text(
    page: PageObject, reader: PdfReader, mode: str, min_font_pt: float, keep_hidden: bool
) -> tuple[str, Counter]:
    """The page's text without what a reader cannot see (all of it with ``keep_hidden``), and the glyph
    codes of hidden text per reason (counted either way). The content stream is parsed once, as pypdf's
    extraction parses it (strings as bytes), and extracted from that parse."""
    contents = page.get("/Contents")
    if contents is None or contents.get_object() is None:
        return page.extract_text(extraction_mode=mode), Counter()
    content = ContentStream(contents.get_object(), reader, "bytes")
    scan = VisibilityScanner(page, reader, min_font_pt).scan_page(content)
    parsed = PageObject(pdf=reader)
    parsed.update({key: value for key, value in page.items() if key != "/Contents"})
    if scan.hidden and not keep_hidden:
        content.operations = scan.operations
        if scan.forms:
            parsed[NameObject("/Resources")] = _with_emptied_forms(
                page.get("/Resources").get_object(), scan, reader
            )
    parsed[NameObject("/Contents")] = content
    return parsed.extract_text(extraction_mode=mode), scan.hidden


def _with_emptied_forms(resources: DictionaryObject, scan: Scan, reader: PdfReader) -> DictionaryObject:
    """A copy of ``resources`` whose forms that hide text are replaced by copies without it."""
    copied = DictionaryObject(resources)
    xobjects = DictionaryObject(resources["/XObject"].get_object())
    for name, inner in scan.forms.items():
        form = xobjects[name].get_object()
        emptied = ContentStream(form, reader, "bytes")
        emptied.operations = inner.operations
        for key, value in form.items():
            if key not in ("/Length", "/Filter", "/DecodeParms"):
                emptied[NameObject(key)] = value
        if inner.forms:
            emptied[NameObject("/Resources")] = _with_emptied_forms(
                form["/Resources"].get_object(), inner, reader
            )
        xobjects[NameObject(name)] = emptied
    copied[NameObject("/XObject")] = xobjects
    return copied
