"""Small PDFs and text files for tests: good, broken, encrypted, image-only. Each helper writes one file."""

from __future__ import annotations

import zlib
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
