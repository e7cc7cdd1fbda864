"""Document sources: local folders used in place, fsspec URLs mirrored by content, arXiv fetched once."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import fsspec
import pytest
from pdf_factory import write_report_pdf

from docqa.settings import IngestSettings, SourceSettings
from docqa.sources import (
    DocumentDiff,
    DownloadError,
    SourceError,
    diff_fingerprints,
    fingerprint_location,
    materialize_documents,
    mirror_location,
)
from docqa.stages.ingest import list_documents

EXTENSIONS = IngestSettings().extensions
FAST = {"retry_initial_wait_s": 0.001, "retry_max_wait_s": 0.01, "arxiv_request_interval_s": 0}


@pytest.fixture(scope="module")
def pdfs(tmp_path_factory) -> list[bytes]:
    """Three small, different PDFs."""
    folder = tmp_path_factory.mktemp("pdfs")
    return [write_report_pdf(folder / f"{pages}.pdf", pages=pages).read_bytes() for pages in (1, 2, 3)]


def tree(folder: Path) -> dict[str, bytes]:
    """Relative name → bytes of every file (links followed) under ``folder``."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


# --- local folders -----------------------------------------------------------------------------------


@pytest.mark.parametrize("as_url", [False, True], ids=["path", "file-url"])
def test_local_folder_is_used_in_place(tmp_path, pdfs, as_url):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.pdf").write_bytes(pdfs[0])
    cache = tmp_path / "cache"
    location = f"file://{docs}" if as_url else str(docs)

    assert materialize_documents(location, SourceSettings(), cache, EXTENSIONS) == docs
    assert not cache.exists()  # nothing copied


def test_missing_local_folder_fails_with_its_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        materialize_documents(str(tmp_path / "nowhere"), SourceSettings(), tmp_path / "cache", EXTENSIONS)


# --- fsspec locations ----------------------------------------------------------------------------------


@pytest.fixture
def memory(monkeypatch):
    """The in-memory filesystem under a fresh root, counting the files opened for reading."""
    fs = fsspec.filesystem("memory")
    root = f"/{uuid.uuid4().hex}"
    reads: list[str] = []
    original_open = fs.open

    def counting_open(path, mode="rb", **kwargs):
        if "r" in mode:
            reads.append(path)
        return original_open(path, mode, **kwargs)

    monkeypatch.setattr(fs, "open", counting_open)
    yield fs, root, reads
    fs.rm(root, recursive=True)


def test_memory_location_is_mirrored_and_then_only_changes_are_fetched(tmp_path, pdfs, memory):
    fs, root, reads = memory
    fs.pipe_file(f"{root}/docs/a.pdf", pdfs[0])
    fs.pipe_file(f"{root}/docs/sub/b.txt", b"plain text notes")
    fs.pipe_file(f"{root}/docs/.hidden/c.pdf", pdfs[1])
    fs.pipe_file(f"{root}/docs/image.png", b"not a document")
    location, cache = f"memory://{root}/docs", tmp_path / "cache"

    mirror = materialize_documents(location, SourceSettings(), cache, EXTENSIONS)
    assert tree(mirror) == {"a.pdf": pdfs[0], "sub/b.txt": b"plain text notes"}
    assert sorted(reads) == [f"{root}/docs/a.pdf", f"{root}/docs/sub/b.txt"]
    # content-addressed: the mirror links to blobs named by their sha256
    assert (mirror / "a.pdf").resolve() == (cache / "blobs" / hashlib.sha256(pdfs[0]).hexdigest()).resolve()

    reads.clear()
    again = mirror_location(location, SourceSettings(), cache, EXTENSIONS)
    assert Path(again.path) == mirror
    assert reads == []
    assert (again.downloaded, again.reused, again.removed) == ([], ["a.pdf", "sub/b.txt"], [])

    fs.pipe_file(f"{root}/docs/a.pdf", pdfs[2])
    changed = mirror_location(location, SourceSettings(), cache, EXTENSIONS)
    assert reads == [f"{root}/docs/a.pdf"]
    assert changed.downloaded == ["a.pdf"]
    assert (mirror / "a.pdf").read_bytes() == pdfs[2]

    reads.clear()
    fs.rm(f"{root}/docs/sub/b.txt")
    shrunk = mirror_location(location, SourceSettings(), cache, EXTENSIONS)
    assert (shrunk.removed, reads) == (["sub/b.txt"], [])
    assert tree(mirror) == {"a.pdf": pdfs[2]}
    assert list_documents(mirror, IngestSettings()) == [mirror / "a.pdf"]


def test_mirror_retries_a_dropped_connection(tmp_path, pdfs, memory, monkeypatch):
    fs, root, _ = memory
    fs.pipe_file(f"{root}/a.pdf", pdfs[0])
    counting_open, failures = fs.open, []

    def flaky_open(path, mode="rb", **kwargs):
        if "r" in mode and not failures:
            failures.append(path)
            raise ConnectionError("connection reset by peer")
        return counting_open(path, mode, **kwargs)

    monkeypatch.setattr(fs, "open", flaky_open)
    location = f"memory://{root}"

    with pytest.raises(ConnectionError):
        mirror_location(location, SourceSettings(max_attempts=1, **FAST), tmp_path / "once", EXTENSIONS)
    failures.clear()
    mirrored = mirror_location(
        location, SourceSettings(max_attempts=2, **FAST), tmp_path / "twice", EXTENSIONS
    )
    assert failures and tree(Path(mirrored.path)) == {"a.pdf": pdfs[0]}


def test_mirror_refuses_oversized_files_and_missing_locations(tmp_path, pdfs, memory):
    fs, root, reads = memory
    fs.pipe_file(f"{root}/big.pdf", pdfs[2])
    tiny = SourceSettings(max_file_mb=len(pdfs[2]) / 2**20 / 2)
    with pytest.raises(SourceError, match=r"big\.pdf .*max_file_mb"):
        mirror_location(f"memory://{root}", tiny, tmp_path / "cache", EXTENSIONS)
    assert reads == []  # refused from the listing's size, before downloading
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mirror_location(f"memory://{root}/nowhere", SourceSettings(), tmp_path / "cache", EXTENSIONS)


# --- a local HTTP server -------------------------------------------------------------------------------


class ScriptedServer:
    """HTTP on 127.0.0.1 answering each path from a script of (status, content type, body) replies; the
    last reply repeats. Counts GET requests per path."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[tuple[int, str, bytes]]] = {}
        self.requests: Counter[str] = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests[self.path] += 1
                self._reply(send_body=True)

            def do_HEAD(self) -> None:
                self._reply(send_body=False)

            def _reply(self, send_body: bool) -> None:
                script = server.scripts.get(self.path, [(404, "text/plain", b"no such paper")])
                status, content_type, body = script.pop(0) if len(script) > 1 and send_body else script[0]
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if send_body:
                    self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def serve(self, path: str, *replies: tuple[int, str, bytes]) -> None:
        self.scripts[path] = list(replies)


@pytest.fixture
def server():
    scripted = ScriptedServer()
    thread = threading.Thread(target=scripted.httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield scripted
    scripted.httpd.shutdown()
    scripted.httpd.server_close()


def arxiv_settings(server: ScriptedServer, ids: list[str], **overrides) -> SourceSettings:
    values = {"arxiv_ids": ids, "arxiv_url": f"{server.url}/pdf/{{id}}", "download_timeout_s": 5, **FAST}
    return SourceSettings(**{**values, **overrides})


def pdf_reply(data: bytes) -> tuple[int, str, bytes]:
    return 200, "application/pdf", data


def test_arxiv_papers_are_downloaded_once(tmp_path, pdfs, server):
    server.serve("/pdf/2101.00001", pdf_reply(pdfs[0]))
    server.serve("/pdf/hep-th/9901001v2", pdf_reply(pdfs[1]))
    settings = arxiv_settings(server, ["2101.00001", "hep-th/9901001v2"])
    cache = tmp_path / "cache"

    folder = materialize_documents(None, settings, cache, EXTENSIONS)
    assert tree(folder) == {"arxiv/2101.00001.pdf": pdfs[0], "arxiv/hep-th_9901001v2.pdf": pdfs[1]}
    assert (cache / "arxiv" / "2101.00001.pdf").read_bytes() == pdfs[0]
    assert sorted(p.name for p in (cache / "arxiv").iterdir()) == ["2101.00001.pdf", "hep-th_9901001v2.pdf"]
    assert dict(server.requests) == {"/pdf/2101.00001": 1, "/pdf/hep-th/9901001v2": 1}

    assert materialize_documents(None, settings, cache, EXTENSIONS) == folder
    assert sum(server.requests.values()) == 2  # the second call asked nothing


def test_arxiv_papers_join_a_local_folder(tmp_path, pdfs, server):
    docs = tmp_path / "docs"
    (docs / "notes").mkdir(parents=True)
    (docs / "notes" / "a.md").write_text("# Notes\n\nSome notes.\n")
    server.serve("/pdf/2101.00001", pdf_reply(pdfs[0]))

    folder = materialize_documents(
        str(docs), arxiv_settings(server, ["2101.00001"]), tmp_path / "c", EXTENSIONS
    )
    assert folder != docs
    assert list_documents(folder, IngestSettings()) == [
        folder / "arxiv/2101.00001.pdf",
        folder / "notes/a.md",
    ]
    assert (folder / "notes" / "a.md").resolve() == (docs / "notes" / "a.md").resolve()

    (docs / "notes" / "a.md").unlink()
    (docs / "b.txt").write_text("new")
    again = materialize_documents(
        str(docs), arxiv_settings(server, ["2101.00001"]), tmp_path / "c", EXTENSIONS
    )
    assert again == folder
    assert tree(folder) == {"arxiv/2101.00001.pdf": pdfs[0], "b.txt": b"new"}


def test_arxiv_retries_unavailable_and_gives_up_with_the_id(tmp_path, pdfs, server):
    server.serve("/pdf/2101.00001", (503, "text/plain", b"busy"), pdf_reply(pdfs[0]))
    folder = materialize_documents(
        None, arxiv_settings(server, ["2101.00001"]), tmp_path / "cache", EXTENSIONS
    )
    assert tree(folder) == {"arxiv/2101.00001.pdf": pdfs[0]}
    assert server.requests["/pdf/2101.00001"] == 2

    server.serve("/pdf/2101.00002", (429, "text/plain", b"slow down"))
    settings = arxiv_settings(server, ["2101.00002"], max_attempts=3)
    with pytest.raises(DownloadError, match=r"2101\.00002.*after 3 tries.*HTTP 429"):
        materialize_documents(None, settings, tmp_path / "cache", EXTENSIONS)
    assert server.requests["/pdf/2101.00002"] == 3


def test_arxiv_not_found_fails_at_once(tmp_path, server):
    settings = arxiv_settings(server, ["2101.99999"], max_attempts=4)
    with pytest.raises(DownloadError, match=r"arXiv 2101\.99999 \(http://127\.0\.0\.1.*HTTP 404"):
        materialize_documents(None, settings, tmp_path / "cache", EXTENSIONS)
    assert server.requests["/pdf/2101.99999"] == 1
    assert list((tmp_path / "cache" / "arxiv").iterdir()) == []  # no partial file left


def test_arxiv_html_reply_is_refused(tmp_path, server):
    page = b"<html><body>Rate limit exceeded</body></html>"
    server.serve("/pdf/2101.00001", (200, "text/html", page))
    with pytest.raises(DownloadError, match=r"2101\.00001.*no PDF but text/html starting '<html>"):
        materialize_documents(None, arxiv_settings(server, ["2101.00001"]), tmp_path / "cache", EXTENSIONS)
    assert list((tmp_path / "cache" / "arxiv").iterdir()) == []


def test_arxiv_oversized_paper_is_refused(tmp_path, pdfs, server):
    server.serve("/pdf/2101.00001", pdf_reply(pdfs[2]))
    settings = arxiv_settings(server, ["2101.00001"], max_file_mb=len(pdfs[2]) / 2**20 / 2)
    with pytest.raises(SourceError, match=r"2101\.00001.*max_file_mb"):
        materialize_documents(None, settings, tmp_path / "cache", EXTENSIONS)


def test_https_single_file_location(tmp_path, pdfs, server):
    """A URL naming one file is its own location; without ETag or Last-Modified its bytes are hashed."""
    server.serve("/papers/report.pdf", pdf_reply(pdfs[0]))
    location = f"{server.url}/papers/report.pdf"
    first = fingerprint_location(location, EXTENSIONS)
    assert list(first) == ["report.pdf"] and first["report.pdf"].startswith("sha256:")

    mirror = materialize_documents(location, SourceSettings(), tmp_path / "cache", EXTENSIONS)
    assert tree(mirror) == {"report.pdf": pdfs[0]}
    server.serve("/papers/report.pdf", pdf_reply(pdfs[0].replace(b"Widget", b"Gadget", 1)))
    assert fingerprint_location(location, EXTENSIONS) != first


def test_settings_check_arxiv_ids_and_url():
    good = ["2101.00001", "0704.0001v3", "hep-th/9901001", "math.GT/0309136v1", "cond-mat/0102536"]
    assert SourceSettings(arxiv_ids=good).arxiv_ids == good
    with pytest.raises(ValueError, match=r"\['2101\.1', 'arxiv:2101\.00001'\] are not arXiv ids") as err:
        SourceSettings(arxiv_ids=["2101.1", "arxiv:2101.00001", "2101.00002"], arxiv_url="https://x/pdf")
    assert "must contain {id}" in str(err.value)


# --- fingerprints and differences ------------------------------------------------------------------------


def test_local_fingerprints_detect_added_changed_removed(tmp_path, pdfs):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.pdf").write_bytes(pdfs[0])
    (docs / "sub" / "b.txt").write_text("one")
    (docs / "ignored.png").write_bytes(b"x")
    before = fingerprint_location(str(docs), EXTENSIONS)
    assert list(before) == ["a.pdf", "sub/b.txt"]
    assert fingerprint_location(str(docs), EXTENSIONS) == before

    (docs / "sub" / "b.txt").write_text("two")  # same size, other content
    (docs / "a.pdf").unlink()
    (docs / "c.md").write_text("# new")
    after = fingerprint_location(str(docs), EXTENSIONS)
    assert diff_fingerprints(before, after) == DocumentDiff(
        added=["c.md"], changed=["sub/b.txt"], removed=["a.pdf"]
    )
    assert diff_fingerprints(after, after).empty


def test_memory_fingerprints_detect_added_changed_removed(pdfs, memory):
    fs, root, reads = memory
    for name, data in (("a.pdf", pdfs[0]), ("b.pdf", pdfs[1]), ("c.txt", b"one")):
        fs.pipe_file(f"{root}/{name}", data)
    location = f"memory://{root}"
    before = fingerprint_location(location, EXTENSIONS)
    assert fingerprint_location(location, EXTENSIONS) == before
    assert reads == []  # from the listing alone

    fs.pipe_file(f"{root}/c.txt", b"two")  # same size, rewritten
    fs.rm(f"{root}/a.pdf")
    fs.pipe_file(f"{root}/sub/d.md", b"# new")
    diff = diff_fingerprints(before, fingerprint_location(location, EXTENSIONS))
    assert diff == DocumentDiff(added=["sub/d.md"], changed=["c.txt"], removed=["a.pdf"])


def test_diff_lists_are_sorted():
    old = {"z.pdf": "1", "m.pdf": "1", "b.pdf": "1", "y.pdf": "1", "a.pdf": "1"}
    new = {"y.pdf": "2", "b.pdf": "2", "m.pdf": "1", "q.pdf": "1", "c.pdf": "1"}
    assert diff_fingerprints(old, new) == DocumentDiff(
        added=["c.pdf", "q.pdf"], changed=["b.pdf", "y.pdf"], removed=["a.pdf", "z.pdf"]
    )


def test_a_run_hashes_each_local_document_once(tmp_path, monkeypatch):
    """The watcher's fingerprint at the start of a run hashes every local document; the ingest cache key
    takes those digests instead of reading every file a second time (what the pipeline flow does)."""
    import docqa.hashing
    import docqa.sources
    from docqa.hashing import fingerprint_files, sha256_file
    from docqa.settings import IngestSettings
    from docqa.stages.ingest import list_documents
    from docqa.watch import fingerprint
    from flows.pipeline import local_digests

    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    for name in ("a.txt", "b.md", "sub/c.txt"):
        (docs / name).write_text(f"the text of {name}")
    hashed: list[str] = []

    def counting(path):
        hashed.append(str(path))
        return sha256_file(path)

    monkeypatch.setattr(docqa.sources, "sha256_file", counting)
    monkeypatch.setattr(docqa.hashing, "sha256_file", counting)
    settings = IngestSettings()
    seen = fingerprint(str(docs), settings.extensions)
    files = fingerprint_files(list_documents(docs, settings), local_digests(str(docs), seen))
    assert sorted(hashed) == sorted(str(docs / name) for name in ("a.txt", "b.md", "sub/c.txt"))
    assert {f.sha256 for f in files} == {sha256_file(docs / n) for n in ("a.txt", "b.md", "sub/c.txt")}
    # relative spellings of the folder are one location: nothing is hashed again either
    monkeypatch.chdir(tmp_path)
    hashed.clear()
    fingerprint_files(list_documents(docs, settings), local_digests("docs", seen))
    assert hashed == []
