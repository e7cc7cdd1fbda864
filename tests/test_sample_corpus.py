"""The bundled sample corpus: enough real PDFs for the pipeline, reproducible byte for byte, ingestible."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pypdf import PdfReader

from docqa.outputs import read_documents
from docqa.sample_corpus import (
    FOOTER_TEXT,
    HEADER_PREFIX,
    Code,
    Heading,
    Prose,
    contained_topics,
    parse_blocks,
    wrap_words,
    write_sample_corpus,
)
from docqa.settings import IngestSettings
from docqa.stages.ingest import ingest_documents
from docqa.text_cleaning import HYPHEN_BREAK, clean_pages

MIN_DOCUMENTS = 4  # enough for a held-out-document control and three trained documents
MIN_PAGES = 25
MIN_PAGES_PER_DOCUMENT = 5
MIN_CLEAN_CHARS = 60_000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    return write_sample_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def ingested(corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("ingest")
    output = ingest_documents(corpus, root / "out", root / "store", IngestSettings())
    return output, read_documents(Path(output.path))


def test_enough_documents_and_pages(corpus):
    page_counts = [len(PdfReader(path).pages) for path in corpus]
    assert len(corpus) >= MIN_DOCUMENTS
    assert sum(page_counts) >= MIN_PAGES
    assert min(page_counts) >= MIN_PAGES_PER_DOCUMENT
    assert all(re.fullmatch(r"\d\d-[a-z-]+\.pdf", path.name) for path in corpus)


def test_bytes_are_reproducible(corpus, tmp_path):
    again = write_sample_corpus(tmp_path)
    assert [p.name for p in again] == [p.name for p in corpus]
    for first, second in zip(corpus, again, strict=True):
        assert first.read_bytes() == second.read_bytes(), first.name


def test_title_in_metadata_and_on_page_one(corpus):
    for path in corpus:
        reader = PdfReader(path)
        title = reader.metadata.title
        first_page = reader.pages[0].extract_text()
        assert title and " ".join(title.split()) in " ".join(first_page.split())
        assert first_page.splitlines()[0] == f"{HEADER_PREFIX} — {title}"


def test_pages_carry_running_header_footer_and_number(corpus):
    reader = PdfReader(corpus[0])
    for number, page in enumerate(reader.pages, start=1):
        lines = page.extract_text().splitlines()
        assert lines[0].startswith(HEADER_PREFIX)
        assert lines[-2:] == [FOOTER_TEXT, f"- {number} -"]


def test_ingest_removes_running_lines_and_joins_hyphenated_words(corpus, ingested):
    output, records = ingested
    assert output.documents_ok == len(corpus) and output.documents_failed == 0
    texts = [page.text for record in records for page in record.pages]
    for text in texts:
        assert HEADER_PREFIX not in text and FOOTER_TEXT not in text
        assert not re.search(r"^- \d+ -$", text, re.M)
    assert sum(len(text) for text in texts) >= MIN_CLEAN_CHARS
    raw = [page.extract_text() for page in PdfReader(corpus[0]).pages]
    assert sum(len(HYPHEN_BREAK.findall(text)) for text in raw) > 0  # the generator did hyphenate
    joined = "\n".join(text for record in records[:1] for text in (p.text for p in record.pages))
    assert not [m for m in HYPHEN_BREAK.finditer(joined) if m.group(2).islower()]


def test_each_topic_starts_with_its_heading(ingested):
    _, records = ingested
    text = "\n".join(page.text for page in records[0].pages)
    assert '\nThe "assert" statement\n' in text and '\nThe "global" statement\n' in text
    assert '\nThe "import" statement\n' in text


def test_contained_topics_are_left_out():
    topics = {"whole": "A" * 50 + "\n\n" + "B" * 50 + "\n\n" + "C" * 50, "part": "B" * 50, "own": "D" * 50}
    assert contained_topics(topics) == {"part"}


def test_parse_blocks_tells_headings_prose_and_code_apart():
    text = (
        'The "if" statement\n******************\n\nThe "if" statement is used for conditional '
        "execution and has a built-\nin twin.  It is wrapped like all of the prose in these pages.\n\n"
        '   if_stmt ::= "if" assignment_expression ":" suite\n\n   if x:\n       pass\n'
    )
    blocks = parse_blocks(text)
    assert blocks[0] == Heading('The "if" statement', 1)
    assert isinstance(blocks[1], Prose) and "built-in twin" in blocks[1].text
    assert all(isinstance(block, Code) for block in blocks[2:])


def test_wrapped_and_hyphenated_text_is_restored_by_ingest():
    text = "An implementation of the interpreter handles characteristically unusual identifiers gracefully."
    lines = wrap_words(text, max_width=22, measure=len)
    assert any(line.hyphenated for line in lines)
    assert all(len(line.text) <= 22 for line in lines)
    restored = clean_pages(["\n".join(line.text for line in lines)], IngestSettings())[0]
    assert " ".join(restored.split()) == text


def test_ensure_sample_corpus_writes_once(tmp_path):
    from docqa.sample_corpus import ensure_sample_corpus

    folder = ensure_sample_corpus(tmp_path / "sample-corpus")
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.pdf")}
    assert len(stamps) >= 4
    assert ensure_sample_corpus(folder) == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.pdf")} == stamps  # not rewritten
    assert not list(tmp_path.glob(".tmp-*"))
