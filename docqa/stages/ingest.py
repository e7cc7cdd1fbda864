"""Ingest: cleaned text out of each document, each file on its own (in parallel processes if asked).

Every file is read in isolation, so one broken PDF costs only itself: it is recorded with a reason a
user can act on (``status="failed"``) while the others go on. Extraction results are kept in a
per-document store keyed by the file's bytes, the ingest settings, this module's source and the pypdf
version, so a re-run with one new file extracts only that file. The published output is a folder named
by the digest of its records: ``documents.jsonl`` (one :class:`DocumentRecord` per line, in input
order) and ``summary.json``.

Longer than 500 lines on purpose: reading a document in isolation (a process of its own, time and memory
limits, page progress), the checks that give a failed file its reason and the per-document store are one
concern; the text cleaning is in :mod:`docqa.text_cleaning`, the record types in :mod:`docqa.outputs`.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import re
import signal
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, TimeoutError
from pathlib import Path
from typing import Literal

import pypdf
from pebble import ProcessExpired, ProcessPool
from pydantic import BaseModel
from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError, PyPdfError

from docqa import progress, text_cleaning
from docqa.hashing import json_digest, rows_digest, sha256_file
from docqa.outputs import DOCUMENTS_FILE, DocumentRecord, IngestOutput, PageText
from docqa.pdf_visibility import visible_text
from docqa.progress import Progress
from docqa.settings import IngestSettings
from docqa.sources import local_documents
from docqa.text_cleaning import clean_pages
from docqa.workspace import (
    new_tmp_dir,
    publish_dir,
    read_json,
    write_json_atomic,
    write_jsonl_atomic,
)

SUMMARY_FILE = "summary.json"
DOC_ID_CHARS = 16
LOCATION_FIELDS = {"path", "name", "duplicate_of"}  # where a file lies, not what it holds
STORE_KEY_CHARS = 16
OUTPUT_NAME_CHARS = 16
BYTES_PER_MB = 2**20
# how extraction runs, not what it yields: outside the store key. A document failed by a limit is not
# stored either, so the next run (with a higher limit, or on a quieter machine) tries it again.
EXECUTION_SETTINGS = {"workers", "document_time_limit_s", "document_memory_limit_mb"}
PAGE_REPORT_EVERY_S = 1.0  # how often an extraction process sends its page count

PDF_SUFFIX = ".pdf"
MARKDOWN_SUFFIX = ".md"
PDF_HEADER = b"%PDF-"
PDF_EOF = b"%%EOF"
# Readers (Acrobat first) accept the header within the first 1024 bytes and look for %%EOF within the
# last 1024 bytes; a file without one there was cut short.
PDF_MARKER_WINDOW = 1024
MAX_TITLE_CHARS = 120

# pypdf parses untrusted bytes, and a malformed file can make it fail anywhere deep inside its parser
# with whatever Python error occurs where it trips (a KeyError on a missing dictionary entry, a
# struct.error on a short font table, a zlib.error on a damaged stream, RecursionError on a cyclic
# object tree, NotImplementedError on an unsupported filter). These are faults of that one file, so
# they are caught around the calls into pypdf only, and recorded with their type and message. Errors
# outside this list (OSError reading the disk) are not the file's fault and propagate; a MemoryError
# is, since each file is read in a process capped at ingest.document_memory_limit_mb (``_read_pdf``).
MALFORMED_PDF_ERRORS = (
    PyPdfError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    AssertionError,
    ArithmeticError,
    NotImplementedError,
    RecursionError,
    struct.error,
    zlib.error,
)

MARKDOWN_HEADING = re.compile(r"#{1,6}\s+(.+?)\s*#*\s*")


class NoDocumentsError(ValueError):
    """No document could be ingested; the message lists each file and why it failed."""


class DocumentFault(Exception):
    """An expected fault of one file (empty, broken, encrypted, scanned); the message is the reason."""

    def __init__(self, reason: str, n_pages: int = 0, low_text_pages: int = 0) -> None:
        super().__init__(reason)
        self.n_pages = n_pages
        self.low_text_pages = low_text_pages


class ExtractedContent(BaseModel):
    """What a file's bytes yield, wherever the file lies: the per-document store's entry."""

    sha256: str
    title: str | None  # from the content (PDF metadata, first heading); None: use the file name
    status: Literal["ok", "failed"]
    reason: str | None
    n_pages: int
    pages: list[PageText]
    low_text_pages: int
    hidden_text: dict[str, int] = {}  # characters a reader cannot see, per reason (docqa.pdf_visibility)
    hidden_text_kept: bool = False  # ingest.keep_hidden_text: counted but left in the text
    stopped_by_limit: bool = False  # failed by a time or memory limit: not stored, tried again next run


# ---------------------------------------------------------------------------------------------------
# Finding documents


def list_documents(docs_dir: Path, settings: IngestSettings) -> list[Path]:
    """Files under ``docs_dir`` (recursive, sorted) that are documents by the rule of
    :func:`docqa.sources.local_documents` (a wanted suffix; hidden files and folders skipped)."""
    found = sorted(local_documents(docs_dir, settings.extensions).values())
    if not found:
        wanted = sorted({extension.lower() for extension in settings.extensions})
        raise FileNotFoundError(f"no documents in {docs_dir}: looked for files ending in {', '.join(wanted)}")
    return found


# ---------------------------------------------------------------------------------------------------
# Extracting one document


def extract_document(path: Path, settings: IngestSettings) -> DocumentRecord:
    """Text of one file, cleaned; an expected fault gives ``status="failed"`` and a reason, never an error."""
    return bind_to_path(extract_content(path, sha256_file(path), settings), path)


PageCallback = Callable[[int, int], None]  # (pages done, pages in the document)


def extract_content(
    path: Path, sha256: str, settings: IngestSettings, on_page: PageCallback | None = None
) -> ExtractedContent:
    """What ``path``'s bytes (whose digest is ``sha256``) yield; the title is None when none is found.
    ``on_page`` hears of each PDF page read."""
    try:
        _check_size(path, settings)
        title, raw_pages, hidden = _read_document(path, settings, on_page)
        pages = clean_pages(raw_pages, settings)
        low_text_pages = sum(len(text) < settings.min_chars_per_page for text in pages)
        _check_text(path, pages, low_text_pages, settings)
    except DocumentFault as fault:
        return failed_content(sha256, str(fault), fault.n_pages, fault.low_text_pages)
    return ExtractedContent(
        sha256=sha256,
        title=title,
        status="ok",
        reason=None,
        n_pages=len(pages),
        pages=[PageText(page=number, text=text) for number, text in enumerate(pages, start=1)],
        low_text_pages=low_text_pages,
        hidden_text=dict(sorted(hidden.items())),
        hidden_text_kept=settings.keep_hidden_text,
    )


def failed_content(
    sha256: str, reason: str, n_pages: int = 0, low_text_pages: int = 0, stopped_by_limit: bool = False
) -> ExtractedContent:
    return ExtractedContent(
        sha256=sha256,
        title=None,
        status="failed",
        reason=reason,
        n_pages=n_pages,
        pages=[],
        low_text_pages=low_text_pages,
        stopped_by_limit=stopped_by_limit,
    )


def bind_to_path(content: ExtractedContent, path: Path, duplicate_of: str | None = None) -> DocumentRecord:
    """The record of ``content`` found at ``path``; the title falls back to the file's stem."""
    return DocumentRecord(
        doc_id=content.sha256[:DOC_ID_CHARS],
        path=str(path),
        name=path.name,
        sha256=content.sha256,
        title=content.title or path.stem,
        status=content.status,
        reason=content.reason,
        n_pages=content.n_pages,
        pages=content.pages,
        low_text_pages=content.low_text_pages,
        hidden_text=content.hidden_text,
        hidden_text_kept=content.hidden_text_kept,
        duplicate_of=duplicate_of,
    )


def _check_size(path: Path, settings: IngestSettings) -> None:
    size = path.stat().st_size
    if size == 0:
        raise DocumentFault("the file is empty (0 bytes)")
    if size > settings.max_file_mb * BYTES_PER_MB:
        raise DocumentFault(
            f"the file is {size / BYTES_PER_MB:.1f} MB, over the limit of {settings.max_file_mb:g} MB "
            "(raise ingest.max_file_mb to read it)"
        )


def _read_document(
    path: Path, settings: IngestSettings, on_page: PageCallback | None
) -> tuple[str | None, list[str], Counter]:
    """(title found in the content, raw text per page, hidden text's characters per reason)."""
    if path.suffix.lower() == PDF_SUFFIX:
        return _read_pdf(path, settings, on_page)
    return (*_read_text_file(path), Counter())


def _read_text_file(path: Path) -> tuple[str | None, list[str]]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DocumentFault(
            f"the file is not valid UTF-8 text (bad byte at offset {err.start}); save it as UTF-8"
        ) from err
    return _text_title(text, path.suffix.lower()), [text]


def _text_title(text: str, suffix: str) -> str | None:
    """A Markdown file's first ``#`` heading, else the first non-empty line if it is short enough."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if suffix == MARKDOWN_SUFFIX:
        for line in lines:
            heading = MARKDOWN_HEADING.fullmatch(line)
            if heading:
                return heading.group(1)
    if lines and len(lines[0]) <= MAX_TITLE_CHARS:
        return lines[0]
    return None


def _read_pdf(
    path: Path, settings: IngestSettings, on_page: PageCallback | None
) -> tuple[str | None, list[str], Counter]:
    """(title, visible text per page, hidden text's characters per reason: see ``docqa.pdf_visibility``)."""
    _check_pdf_markers(path)
    on_page = on_page or (lambda done, total: None)
    try:
        reader = PdfReader(path)
        _unlock(reader)
        pages, hidden = [], Counter()
        total = len(reader.pages)
        on_page(0, total)
        for page in reader.pages:
            text, page_hidden = visible_text(
                page,
                reader,
                settings.pdf_extraction_mode,
                settings.min_visible_font_pt,
                settings.keep_hidden_text,
            )
            pages.append(text)
            hidden.update(page_hidden)
            on_page(len(pages), total)
        return _pdf_title(reader), pages, hidden
    except DependencyError:
        raise  # a missing package (cryptography for AES) is the installation's fault, not the file's
    except MemoryError as err:  # extraction runs in a process capped at ingest.document_memory_limit_mb
        raise DocumentFault(
            f"reading the PDF needed more memory than the limit of {settings.document_memory_limit_mb} MB "
            "(raise ingest.document_memory_limit_mb to read it)"
        ) from err
    except FileNotDecryptedError as err:
        raise DocumentFault(_encrypted_reason()) from err
    except LimitReachedError as err:
        raise DocumentFault(
            f"a stream in the PDF exceeds pypdf's decompression limit (a decompression bomb?): {err}"
        ) from err
    except MALFORMED_PDF_ERRORS as err:
        raise DocumentFault(
            f"the PDF is corrupt and pypdf could not read it ({type(err).__name__}: {err})"
        ) from err


def _check_pdf_markers(path: Path) -> None:
    with open(path, "rb") as handle:
        head = handle.read(PDF_MARKER_WINDOW)
        handle.seek(max(0, path.stat().st_size - PDF_MARKER_WINDOW))
        tail = handle.read()
    if PDF_HEADER not in head:
        raise DocumentFault(
            "not a PDF: the file has no %PDF header (another format saved under a .pdf name?)"
        )
    if PDF_EOF not in tail:
        raise DocumentFault(
            "the PDF is truncated: it has no %%EOF end marker (an interrupted download or copy?)"
        )


def _unlock(reader: PdfReader) -> None:
    """Open an encrypted PDF that needs no user password (only an owner password restricts it)."""
    if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
        raise DocumentFault(_encrypted_reason())


def _encrypted_reason() -> str:
    return "the PDF is encrypted with a password; save a decrypted copy (e.g. qpdf --decrypt) and ingest that"


def _pdf_title(reader: PdfReader) -> str | None:
    title = reader.metadata.title if reader.metadata else None
    if not title or not str(title).strip():
        return None
    return str(title).strip()


def _check_text(path: Path, pages: list[str], low_text_pages: int, settings: IngestSettings) -> None:
    """Empty text is a failure, never a silent success; so is a PDF with too little text per page."""
    total = sum(len(text) for text in pages)
    if total == 0:
        raise DocumentFault(_no_text_reason(path), n_pages=len(pages), low_text_pages=low_text_pages)
    mean = total / len(pages)
    if path.suffix.lower() == PDF_SUFFIX and mean < settings.min_chars_per_page:
        raise DocumentFault(
            f"only {mean:.0f} characters of text per page on average (ingest.min_chars_per_page is "
            f"{settings.min_chars_per_page}): probably a scanned or image-only PDF; run OCR on it first",
            n_pages=len(pages),
            low_text_pages=low_text_pages,
        )


def _no_text_reason(path: Path) -> str:
    if path.suffix.lower() != PDF_SUFFIX:
        return "the file contains no text"
    return (
        "no text could be extracted: the pages are images (a scan without OCR), or their content "
        "could not be decoded (pypdf returns no text for a decompression bomb)"
    )


# ---------------------------------------------------------------------------------------------------
# The stage


def store_key(settings: IngestSettings) -> str:
    """What extraction depends on besides the bytes: settings, the code (this module and the text
    cleaning), pypdf's version."""
    depends_on = {
        "settings": settings.model_dump(mode="json", exclude=EXECUTION_SETTINGS),
        "code": [sha256_file(Path(__file__)), sha256_file(Path(text_cleaning.__file__))],
        "pypdf": pypdf.__version__,
    }
    return json_digest(depends_on)[:STORE_KEY_CHARS]


def ingest_documents(
    paths: list[Path],
    out_root: Path,
    store_dir: Path,
    settings: IngestSettings,
    digests: list[str] | None = None,
) -> IngestOutput:
    """Extract (or reuse) every document, flag byte-identical copies, publish records under their digest.

    Only contents missing from the store are extracted, each once however many copies there are, in
    ``settings.workers`` processes. ``digests``: the files' sha256 when the caller has them already
    (the pipeline fingerprints its files for the cache key); read here otherwise."""
    key = store_key(settings)
    if digests is None:
        digests = [sha256_file(path) for path in paths]

    def entry(sha256: str) -> Path:
        return store_dir / f"{sha256}-{key}.json"

    pairs = list(zip(paths, digests, strict=True))
    missing = {sha256: path for path, sha256 in pairs if not entry(sha256).exists()}
    fresh = dict(zip(missing, extract_all(list(missing.items()), settings), strict=True))
    for sha256, content in fresh.items():
        if not content.stopped_by_limit:
            write_json_atomic(entry(sha256), content)
    records: list[DocumentRecord] = []
    first_path: dict[str, str] = {}
    for path, sha256 in pairs:
        content = fresh.get(sha256) or ExtractedContent.model_validate(read_json(entry(sha256)))
        records.append(bind_to_path(content, path, duplicate_of=first_path.get(sha256)))
        first_path.setdefault(sha256, str(path))
    _require_some_ok(records)
    return _publish(records, out_root, extracted=len(fresh), reused=len(records) - len(fresh))


def extraction_processes(settings: IngestSettings, documents: int) -> int:
    """How many processes extract ``documents``: ``settings.workers`` (0: the cores this process may use)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(settings.workers or cores, documents))


def extract_all(jobs: list[tuple[str, Path]], settings: IngestSettings) -> list[ExtractedContent]:
    """The content of each (sha256, path), in order, each extracted in a process of a pool under the
    settings' time and memory limits: a document over a limit fails with its reason, its process is
    stopped and replaced, and the others go on. The pool spawns its processes (forking one that runs
    Prefect's threads can deadlock); pages read are reported back for documents that take a while."""
    if not jobs:
        return []
    processes = extraction_processes(settings, len(jobs))
    counted = Progress("ingest · documents", len(jobs), "documents")
    spawn = multiprocessing.get_context("spawn")
    pages_read = spawn.Queue()
    contents: list[ExtractedContent] = []
    with (
        PageProgress(pages_read, {sha256: path.name for sha256, path in jobs}),
        ProcessPool(
            processes,
            initializer=_start_extractor,
            initargs=(pages_read, settings.document_memory_limit_mb),
            context=spawn,
        ) as pool,
    ):
        limit_s = settings.document_time_limit_s
        futures = [pool.schedule(_extract_reporting, (p, sha, settings), timeout=limit_s) for sha, p in jobs]
        for (sha256, _), future in zip(jobs, futures, strict=True):
            contents.append(_outcome(future, sha256, settings))
            counted.advance()
    counted.close()
    return contents


def _outcome(future: Future, sha256: str, settings: IngestSettings) -> ExtractedContent:
    try:
        return future.result()
    except TimeoutError:
        return failed_content(
            sha256,
            f"extraction was stopped after the limit of {settings.document_time_limit_s:g} s (a very large "
            "or hostile PDF?); raise ingest.document_time_limit_s to give it longer",
            stopped_by_limit=True,
        )
    except ProcessExpired as err:
        how = f"signal {signal.Signals(-err.exitcode).name}" if err.exitcode < 0 else f"code {err.exitcode}"
        return failed_content(
            sha256,
            f"the extraction process died ({how}) while reading the file; if the machine ran out of memory, "
            "lower ingest.workers or ingest.document_memory_limit_mb",
            stopped_by_limit=True,
        )


_pages_read: queue.Queue | None = None  # in an extraction process: where its page counts go


def _start_extractor(pages_read: queue.Queue, memory_limit_mb: int) -> None:
    """An extraction process starts: cap its address space (Unix) and keep the page-count queue."""
    global _pages_read
    _pages_read = pages_read
    try:
        import resource
    except ImportError:  # Windows: no per-process cap
        return
    limit = memory_limit_mb * BYTES_PER_MB
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _extract_reporting(path: Path, sha256: str, settings: IngestSettings) -> ExtractedContent:
    """``extract_content`` in an extraction process, sending its page count at most every second."""
    sent = 0.0

    def on_page(done: int, total: int) -> None:
        nonlocal sent
        now = time.monotonic()
        if done in (0, total) or now - sent >= PAGE_REPORT_EVERY_S:
            sent = now
            _pages_read.put((sha256, done, total))

    return extract_content(path, sha256, settings, on_page)


class PageProgress:
    """Progress lines for the pages of each document that takes longer than a progress interval, from the
    page counts extraction processes send: a 2,000-page manual is never a silent minute."""

    def __init__(self, pages_read: queue.Queue, names: dict[str, str]):
        self.pages_read, self.names = pages_read, names
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._follow, name="docqa-ingest-pages", daemon=True)

    def __enter__(self) -> PageProgress:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def _follow(self) -> None:
        documents: dict[str, Progress] = {}
        while not self.stop.is_set():
            try:
                sha256, done, total = self.pages_read.get(timeout=0.2)
            except queue.Empty:
                continue
            if sha256 not in documents or done == 0:
                label = f"ingest · pages of {self.names.get(sha256, sha256[:DOC_ID_CHARS])}"
                every_s = progress.PROGRESS_EVERY_S  # read now: tests shorten it
                documents[sha256] = Progress(label, total, "pages", every_s=every_s, announce=False)
            documents[sha256].update(done)
            if done == total:
                documents.pop(sha256).close()


def _require_some_ok(records: list[DocumentRecord]) -> None:
    if not records:
        raise NoDocumentsError("no documents to ingest")
    if not any(record.status == "ok" for record in records):
        failures = "\n".join(f"  {record.path}: {record.reason}" for record in records)
        raise NoDocumentsError(f"none of the {len(records)} documents could be ingested:\n{failures}")


def summarize(records: list[DocumentRecord]) -> dict[str, int]:
    ok = [record for record in records if record.status == "ok"]
    return {
        "documents": len(records),
        "documents_ok": len(ok),
        "documents_failed": len(records) - len(ok),
        "documents_duplicate": sum(record.duplicate_of is not None for record in records),
        "pages": sum(record.n_pages for record in ok if record.duplicate_of is None),
        "documents_with_hidden_text": sum(bool(r.hidden_text) for r in ok if r.duplicate_of is None),
        "hidden_text_chars": sum(sum(r.hidden_text.values()) for r in ok if r.duplicate_of is None),
    }


def _publish(records: list[DocumentRecord], out_root: Path, extracted: int, reused: int) -> IngestOutput:
    """Write ``documents.jsonl`` and ``summary.json`` and publish the folder under the records' digest."""
    rows = [record.model_dump(mode="json") for record in records]
    digest = rows_digest(rows)
    content_digest = rows_digest([{k: v for k, v in row.items() if k not in LOCATION_FIELDS} for row in rows])
    counts = summarize(records)
    failures = [{"path": r.path, "reason": r.reason} for r in records if r.status == "failed"]
    tmp = new_tmp_dir(out_root)
    write_jsonl_atomic(tmp / DOCUMENTS_FILE, rows)
    write_json_atomic(tmp / SUMMARY_FILE, {**counts, "failures": failures})
    final = publish_dir(tmp, out_root / digest[:OUTPUT_NAME_CHARS])
    return IngestOutput(
        path=str(final),
        digest=digest,
        content_digest=content_digest,
        **counts,
        extracted=extracted,
        reused=reused,
    )
