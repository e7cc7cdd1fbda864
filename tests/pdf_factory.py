"""Small PDFs and text files for tests: good, broken, encrypted, image-only. Each helper writes one file."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fpdf import FPDF
from PIL import Image
from pypdf import PdfReader, PdfWriter
from pypdf.generic import NameObject, StreamObject

REPORT_HEADER = "ACME Widgets Ltd - Internal Engineering Report"
REPORT_FOOTER = "Confidential: for internal distribution only"
HYPHEN_HEAD, HYPHEN_TAIL = "documen-", "tation"
HYPHENATED_WORD = "documentation"
# Distinct sentences per page (no digits), so that only the header, footer and page number repeat.
BODY_SENTENCES = (
    "The flux capacitor assembly was inspected and found to be within tolerance.",
    "Every widget in the spring batch passed the thermal soak test without a fault.",
    "Engineers recommend replacing the gasket seals before the next maintenance window.",
    "Throughput rose steadily across all production lines during the quarter.",
    "The north plant switched its compressors to the quieter variable speed model.",
    "A supplier audit found the bearing grease stored below the required temperature.",
    "Night shift operators reported fewer alarms after the firmware update.",
    "The paint line now recycles most of its solvent through the new still.",
    "Customer returns of the compact widget fell sharply after the redesign.",
    "Inspectors asked for clearer labels on the emergency stop buttons.",
    "The packaging team trialled recycled cardboard for the export crates.",
    "Vibration readings on the main press stayed well under the warning level.",
    "Training sessions on the torque wrenches were attended by every fitter.",
    "The warehouse moved slow stock to the mezzanine to free floor space.",
    "Water use per widget dropped once the cooling loop leak was repaired.",
    "The safety committee approved the revised lockout procedure without changes.",
)
SENTENCES_PER_PAGE = 4
OWNER_PASSWORD = "owner-secret"
USER_PASSWORD = "user-secret"
IMAGE_SIZE_PX = (400, 300)
LINE_MM = 6
FONT = "Helvetica"
CREATION_DATE = datetime(2024, 1, 1, tzinfo=UTC)  # fixed: the same call writes the same bytes


def _new_pdf() -> FPDF:
    pdf = FPDF(format="A4", unit="mm")
    pdf.set_creation_date(CREATION_DATE)
    return pdf


def write_report_pdf(path: Path, pages: int = 4, title: str = "Widget Inspection Report") -> Path:
    """A text PDF with running header, footer, "Page N of M" numbers, and on page 2 a word split as
    ``documen-`` / ``tation`` across a line end."""
    pdf = _new_pdf()
    pdf.set_title(title)
    pdf.set_auto_page_break(False)
    for page in range(1, pages + 1):
        pdf.add_page()
        pdf.set_font(FONT, size=9)
        pdf.text(20, 12, REPORT_HEADER)
        pdf.set_font(FONT, size=11)
        first = (page - 1) * SENTENCES_PER_PAGE % len(BODY_SENTENCES)
        lines = list(BODY_SENTENCES[first : first + SENTENCES_PER_PAGE])
        if page == 2:
            lines += [
                f"The appendix contains the complete {HYPHEN_HEAD}",
                f"{HYPHEN_TAIL} of every test rig used.",
            ]
        for i, line in enumerate(lines):
            pdf.text(20, 30 + i * LINE_MM, line)
        pdf.set_font(FONT, size=9)
        pdf.text(20, 280, REPORT_FOOTER)
        pdf.text(95, 287, f"Page {page} of {pages}")
    pdf.output(str(path))
    return path


def write_bomb_pdf(source: Path, path: Path, decompressed_bytes: int) -> Path:
    """``source`` with every page's content replaced by a Flate stream that inflates to ``decompressed_bytes``
    (tests lower pypdf's ``ZLIB_MAX_OUTPUT_LENGTH`` rather than build a real 75 MB bomb)."""
    writer = PdfWriter(clone_from=PdfReader(source))
    payload = b"BT /F1 12 Tf 72 720 Td (boom) Tj ET\n" + b" " * decompressed_bytes
    for page in writer.pages:
        stream = StreamObject()
        stream.set_data(zlib.compress(payload))
        stream[NameObject("/Filter")] = NameObject("/FlateDecode")
        page[NameObject("/Contents")] = writer._add_object(stream)
    with open(path, "wb") as handle:
        writer.write(handle)
    return path


def write_encrypted_pdf(source: Path, path: Path, user_password: str = USER_PASSWORD) -> Path:
    """``source`` encrypted with ``user_password`` ("" makes a file that opens without one)."""
    writer = PdfWriter(clone_from=PdfReader(source))
    writer.encrypt(user_password=user_password, owner_password=OWNER_PASSWORD, algorithm="AES-128")
    with open(path, "wb") as handle:
        writer.write(handle)
    return path


def write_truncated_pdf(source: Path, path: Path) -> Path:
    """The first half of ``source``'s bytes, as after an interrupted download."""
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_empty_file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def write_not_a_pdf(path: Path) -> Path:
    """Plain text bytes under a ``.pdf`` name."""
    path.write_text("This is a plain text note that somebody saved with a .pdf extension.\n")
    return path


def write_image_only_pdf(path: Path, pages: int = 2) -> Path:
    """Pages that hold only a picture, like a scan without OCR."""
    pdf = _new_pdf()
    image = Image.new("RGB", IMAGE_SIZE_PX, (200, 180, 160))
    for _ in range(pages):
        pdf.add_page()
        pdf.image(image, x=20, y=20, w=170)
    pdf.output(str(path))
    return path


def write_text_file(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- raw PDFs: any character, any drawing state -------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """A line of text as a PDF draws it: where, how big, which render mode and fill colour, and an
    optional clipping rectangle (x, y, width, height) around it. Points; the page is A4."""

    text: str
    x: float = 72
    y: float = 760
    size: float = 11
    render_mode: int = 0  # 0 fill; 3 invisible; 7 clip only
    fill: tuple[float, float, float] = (0.0, 0.0, 0.0)
    clip: tuple[float, float, float, float] | None = None


A4_POINTS = (595, 842)


def _cmap(codes: dict[str, int]) -> bytes:
    """A ToUnicode CMap giving each one-byte code its character (any code point, controls included)."""
    entries = "\n".join(
        f"<{code:02X}> <{ord(char):04X}>" for char, code in codes.items() if ord(char) <= 0xFFFF
    )
    body = (
        "/CIDInit /ProcSet findresource begin 12 dict begin begincmap /CMapName /docqa-test def\n"
        "1 begincodespacerange <00> <FF> endcodespacerange\n"
        f"{len(codes)} beginbfchar\n{entries}\nendbfchar\n"
        "endcmap CMapName currentdict /CMap defineresource pop end end"
    )
    return body.encode()


def write_raw_pdf(path: Path, pages: list[list[Run]], title: str = "Raw test document") -> Path:
    """A PDF written object by object: each character is a one-byte code of a Helvetica font whose
    ToUnicode map says which character it is, so extraction sees exactly the text given (U+2028, form
    feeds, ligatures…), drawn with each run's render mode, colour, size, position and clip."""
    chars = sorted({c for page in pages for run in page for c in run.text})
    if len(chars) > 254:
        raise ValueError("a raw test PDF holds at most 254 distinct characters")
    codes = {char: i + 1 for i, char in enumerate(chars)}
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    def stream(data: bytes, extra: str = "") -> bytes:
        return f"<< /Length {len(data)} {extra}>>\nstream\n".encode() + data + b"\nendstream"

    cmap = add(stream(_cmap(codes)))
    font = add(
        f"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /FirstChar 1 /LastChar {len(chars)} "
        f"/Widths [{' '.join(['500'] * len(chars))}] /ToUnicode {cmap} 0 R >>".encode()
    )
    page_ids = []
    pages_id = len(objects) + 2 * len(pages) + 1  # after every page and content stream
    for runs in pages:
        ops = []
        for run in runs:
            ops.append("q")
            if run.clip is not None:
                ops.append("{} {} {} {} re W n".format(*run.clip))
            ops.append("{} {} {} rg".format(*run.fill))
            hex_text = "".join(f"{codes[c]:02X}" for c in run.text)
            ops.append(f"BT /F1 {run.size} Tf {run.render_mode} Tr {run.x} {run.y} Td <{hex_text}> Tj ET")
            ops.append("Q")
        content = add(stream("\n".join(ops).encode()))
        page_ids.append(
            add(
                f"<< /Type /Page /Parent {pages_id} 0 R /MediaBox [0 0 {A4_POINTS[0]} {A4_POINTS[1]}] "
                f"/Resources << /Font << /F1 {font} 0 R >> >> /Contents {content} 0 R >>".encode()
            )
        )
    kids = " ".join(f"{i} 0 R" for i in page_ids)
    assert add(f"<< /Type /Pages /Kids [{kids}] /Count {len(page_ids)} >>".encode()) == pages_id
    info = add(f"<< /Title ({title}) >>".encode())
    add(f"<< /Type /Catalog /Pages {pages_id} 0 R >>".encode())
    return write_objects_pdf(path, objects, info=info)


def write_objects_pdf(path: Path, objects: list[bytes], info: int | None = None) -> Path:
    """A PDF of ``objects`` (numbered from 1 in order, the last one the catalog), with its xref table;
    ``info``: the number of the document information dictionary, if there is one."""
    out, offsets = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode()
    info_entry = f" /Info {info} 0 R" if info is not None else ""
    out += f"trailer\n<< /Size {len(objects) + 1} /Root {len(objects)} 0 R{info_entry} >>\n".encode()
    out += f"startxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))
    return path


def write_slow_pdf(path: Path, pages: int, stream_kb: int = 1000) -> Path:
    """A hostile PDF of a few kilobytes that keeps an extractor busy for seconds a page: every page draws
    one shared compressed content stream that expands to ``stream_kb`` KB of text operators, each under
    pypdf's decompression and token limits."""
    unit = b"BT /F1 12 Tf 72 760 Td (a) Tj ET\n"
    data = zlib.compress(unit * (stream_kb * 1024 // len(unit)), 9)
    pages_id = 3 + pages
    kids = " ".join(f"{3 + i} 0 R" for i in range(pages))
    page = (
        f"<< /Type /Page /Parent {pages_id} 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 1 0 R >> "
        ">> /Contents 2 0 R >>"
    ).encode()
    return write_objects_pdf(
        path,
        [
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
            f"<< /Length {len(data)} /Filter /FlateDecode >>\nstream\n".encode() + data + b"\nendstream",
            *[page] * pages,
            f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
            f"<< /Type /Catalog /Pages {pages_id} 0 R >>".encode(),
        ],
    )


def write_memory_bomb_pdf(path: Path, string_mb: int) -> Path:
    """A PDF of a few kilobytes whose one page shows one string of ``string_mb`` MB: under pypdf's
    decompression limit, but parsing it needs about 16 times that in memory."""
    data = zlib.compress(b"BT /F1 12 Tf 72 760 Td (" + b"a" * (string_mb * 2**20) + b") Tj ET", 9)
    return write_objects_pdf(
        path,
        [
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
            f"<< /Length {len(data)} /Filter /FlateDecode >>\nstream\n".encode() + data + b"\nendstream",
            b"<< /Type /Page /Parent 4 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 1 0 R >> >> "
            b"/Contents 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Catalog /Pages 4 0 R >>",
        ],
    )


def write_scanned_pdf(path: Path, lines: list[str], invisible_elsewhere: str | None = None) -> Path:
    """A scanned page with an OCR layer, as ocrmypdf makes one: the page is a picture of the lines, and
    the same lines are drawn over it as invisible text (render mode 3). ``invisible_elsewhere``: more
    invisible text, below the picture, over no image."""
    from PIL import ImageDraw

    pdf = _new_pdf()
    pdf.add_page()
    image = Image.new("L", (1240, 80 * len(lines) + 40), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((40, 30 + 80 * i), line, fill=0, font_size=36)
    pdf.image(image, x=10, y=10, w=190)
    pdf.set_font(FONT, size=11)
    pdf.text_mode = "INVISIBLE"
    height_mm = 190 * image.height / image.width
    for i, line in enumerate(lines):
        pdf.text(15, 10 + (30 + 80 * i + 36) / image.height * height_mm, line)
    if invisible_elsewhere:
        pdf.text(15, 250, invisible_elsewhere)
    pdf.output(str(path))
    return path


def write_form_xobject_pdf(path: Path, visible: str, white: str, invisible: str) -> Path:
    """A page whose visible text is in its own content stream, white text in a form XObject it draws, and
    invisible text (render mode 3, over no image) in a form nested in that one. ASCII text only."""
    font = "/Font << /F1 1 0 R >>"

    def stream(data: str, extra: str = "") -> bytes:
        return f"<< /Length {len(data)} {extra}>>\nstream\n{data}\nendstream".encode()

    form = "/Type /XObject /Subtype /Form /BBox [0 0 595 842] "
    return write_objects_pdf(
        path,
        [
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
            stream(f"BT 3 Tr /F1 12 Tf 72 500 Td ({invisible}) Tj ET", f"{form}/Resources << {font} >> "),
            stream(
                f"q 1 1 1 rg BT /F1 12 Tf 72 600 Td ({white}) Tj ET Q /Inner Do",
                f"{form}/Resources << {font} /XObject << /Inner 2 0 R >> >> ",
            ),
            stream(f"BT /F1 12 Tf 72 760 Td ({visible}) Tj ET /Outer Do"),
            b"<< /Type /Page /Parent 6 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 1 0 R >> "
            b"/XObject << /Outer 3 0 R >> >> /Contents 4 0 R >>",
            b"<< /Type /Pages /Kids [5 0 R] /Count 1 >>",
            b"<< /Type /Catalog /Pages 6 0 R >>",
        ],
    )
