"""Ingest on PDFs made by the tools users' documents come from (tests/fixtures/real_world/README.md):
pdfTeX, LibreOffice Writer, a scanner with and without OCR. Each must come out as its author's text, with
no hidden text or instruction-like chunk found where there is none."""

from __future__ import annotations

from pathlib import Path

import pytest

from docqa.injection import instruction_markers
from docqa.outputs import DocumentRecord, read_documents
from docqa.settings import IngestSettings
from docqa.stages.ingest import ingest_documents

FIXTURES = Path(__file__).parent / "fixtures" / "real_world"
# what each document must yield, as its author wrote it
EXPECTED = {
    "latex-paper.pdf": [
        "Thermal Drift in Quartz Oscillators Under Cyclic Load",
        "Jana Müller",  # an OT1 accent drawn before its letter, composed again
        "Tomás Ibáñez",
        "is defined mostly by the first fifty thermal",  # ligatures fi, ffi made plain
        "The difficulty is that the official datasheets",
        "Our affiliated laboratory in Graz measured 48",
        "laboratory’s archive under",  # the footnote
        "τ ≈ 14.5",
        "Supplier B’s oscillators showed the largest final offset, ∆∞ = 4.1 ppm",
    ],
    "latex-math-notes.pdf": [
        "Lecture 7: Spectral Bounds for Graph Laplacians",
        "The eigenvalues satisfy 0 = λ1 < λ2 ≤ · · · ≤ λn.",
        "Theorem 1 (Cheeger). For the conductance ϕ(G) of G,",
        "λ2 = 2 − 2 cos(π/n), so λ2 ∈ Θ(1/n2)",
        "λi = tr(L) = 2|E|",
        "−1 2 −1",
    ],
    "latex-german.pdf": [
        "Wartungsbericht der Pumpstation Süd",
        "Die Pumpstation Süd wurde im Frühjahr 2023 vollständig überprüft.",
        "Förderdruck der Hauptpumpe lag bei 6,4 bar",
        "Die nächste Prüfung ist für",
    ],
    "writer-report.pdf": [
        "Field Trial Report: Solar Water Heaters",
        "• Median tap temperature at 18:00 was 52 °C.",  # OpenSymbol's private-use bullet made plain
        "• Two collectors cracked in a hailstorm on 14 August.",
        "Saint-Élie 37 0",
        "Résumé en français : l’essai a montré une économie moyenne de 1,9 kWh",
        "Ελληνικά: η θερμοκρασία του νερού ήταν 52 βαθμοί.",
        "По-русски: средняя экономия составила 1,9 кВт·ч в день.",
    ],
    "scanned-ocr.pdf": [  # the OCR layer: invisible text over the page image, kept
        "Field Trial Report: Solar Water Heaters",
        "The field trial ran from June to September 2024 in three villages.",
        "Households saved 1.9 kWh of electricity a day on average.",
        "The next trial, planned for 2025, will test a 200-litre collector with a frost valve.",
    ],
}
# what a careless extraction leaves and docqa must not: split accents, ligatures, private-use codes
NOT_EXPECTED = ["¨", "´", "˜", "\ufb01", "\ufb03", "\uf095", "\u00ad", "\u200b"]


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> dict[str, DocumentRecord]:
    work = tmp_path_factory.mktemp("real-world")
    paths = sorted(FIXTURES.glob("*.pdf"))
    output = ingest_documents(paths, work / "ingest", work / "store", IngestSettings(workers=2))
    return {record.name: record for record in read_documents(Path(output.path))}


def text_of(record: DocumentRecord) -> str:
    return "\n".join(page.text for page in record.pages)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_document_comes_out_as_its_author_wrote_it(records, name):
    record = records[name]
    assert record.status == "ok", record.reason
    text = text_of(record)
    missing = [phrase for phrase in EXPECTED[name] if phrase not in text]
    assert not missing, f"{name} lacks {missing}:\n{text}"
    assert not [c for c in NOT_EXPECTED if c in text], text


def test_a_scan_without_ocr_fails_with_what_to_do(records):
    record = records["scanned-no-ocr.pdf"]
    assert record.status == "failed" and "a scan without OCR" in record.reason


def test_no_hidden_text_and_no_instruction_like_text_is_found_in_ordinary_documents(records):
    """The hidden-text scan and the instruction flags must not fire on documents that hide nothing:
    the OCR layer of a scan is text over its image, not hidden."""
    for name, record in records.items():
        assert record.hidden_text == {}, (name, record.hidden_text)
        assert instruction_markers(text_of(record)) == [], name
