"""Where documents come from: a local folder, any fsspec URL, arXiv ids. Remote bytes are fetched once.

:func:`materialize_documents` turns a source into a local folder that ingest reads:

* a local folder (or ``file://`` URL) is used in place, nothing is copied;
* any other fsspec URL (``s3://bucket/prefix``, ``gs://…``, ``https://host/paper.pdf``, ``memory://`` in
  tests) is mirrored into ``cache_dir/<location digest>/``. File bytes are stored once, by content, in
  ``cache_dir/blobs/<sha256>``; the mirror holds symbolic links to them under the files' relative names.
  A manifest beside the mirror (``<location digest>.json``) records each file's fingerprint, so the next
  call downloads only files whose fingerprint changed and drops links to files gone at the source;
* arXiv ids are downloaded over HTTP to ``cache_dir/arxiv/<id>.pdf`` once: the file is written under a
  temporary name and renamed only after its first bytes proved it a PDF, so an existing file is complete.

With arXiv ids, the result is ``cache_dir/combined/<digest>/``: links to the location's documents and,
under ``arxiv/``, to the papers.

A fingerprint (:func:`fingerprint_location`) names a document's content cheaply: for local files the
sha256 of the bytes; for remote files the checksums and modification times the backend's listing carries
(S3 ``ETag``/``LastModified``, GCS ``md5Hash``/``crc32c``/``updated``, Azure ``etag``/``last_modified``,
HTTP ``ETag``/``Content-MD5``/``Digest``/``Last-Modified``, memory ``created``) with the size. Rewriting a
file changes them; a backend whose listing carries none of them has its files' bytes read and hashed.

Downloads are retried with ``tenacity`` on refused connections, timeouts, 408/425/429 and 5xx, with
exponential backoff; any other HTTP status fails at once. Blobs are never deleted: remove
``cache_dir/blobs`` to reclaim space (the next call downloads what it needs again).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

import httpx
from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from docqa.hashing import json_digest, sha256_file
from docqa.settings import SourceSettings
from docqa.workspace import read_json, write_json_atomic

log = logging.getLogger(__name__)

BYTES_PER_MB = 2**20
READ_BLOCK_BYTES = 2**20
PDF_HEADER = b"%PDF-"
REPLY_EXCERPT_BYTES = 200
KEY_CHARS = 16
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
USER_AGENT = "docqa/0.1 (document question-answering pipeline)"
BLOBS_FOLDER = "blobs"
ARXIV_FOLDER = "arxiv"
COMBINED_FOLDER = "combined"
# Listing fields that change when a remote file is rewritten: checksums first, then modification times.
IDENTITY_KEYS = (
    "ETag",
    "etag",
    "Content-MD5",
    "Digest",
    "md5Hash",
    "crc32c",
    "content_md5",
    "checksum",
    "LastModified",
    "Last-Modified",
    "last_modified",
    "updated",
    "mtime",
    "created",
)


class SourceError(RuntimeError):
    """A document source that cannot be turned into a local folder; the message says what to do."""


class DownloadError(SourceError):
    """A download that failed for good: the message names the document, the URL and what came back."""


class _Transient(Exception):
    """A failed try that another try may cure (refused connection, timeout, 429, 5xx)."""


class DocumentDiff(BaseModel):
    """How a location's documents changed between two fingerprintings (relative names, sorted)."""

    added: list[str] = []
    changed: list[str] = []
    removed: list[str] = []

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed)


class MirrorResult(BaseModel):
    """What mirroring a remote location did: where the mirror is and which files moved."""

    path: str
    downloaded: list[str]  # fetched this time (new, or their fingerprint changed)
    reused: list[str]  # fingerprint unchanged: served from the blob store
    removed: list[str]  # gone at the source, so dropped from the mirror


class _MirroredFile(BaseModel):
    fingerprint: str
    sha256: str


class _Manifest(BaseModel):
    location: str
    files: dict[str, _MirroredFile]


# ---------------------------------------------------------------------------------------------------
# Listing and fingerprinting


def fingerprint_location(location: str, extensions: Iterable[str]) -> dict[str, str]:
    """Relative name → content fingerprint of every document under a local folder or fsspec URL.

    Hidden files and folders are skipped and only the given extensions count, as in ingest. The
    result is sorted by name, so two calls on unchanged documents give equal dicts.
    """
    folder = local_folder(location)
    if folder is not None:
        return {
            rel: f"sha256:{sha256_file(path)}" for rel, path in local_documents(folder, extensions).items()
        }
    fs, root = url_to_fs(location)
    return {
        rel: _remote_fingerprint(fs, path, info)
        for rel, (path, info) in _remote_documents(fs, root, location, extensions).items()
    }


def diff_fingerprints(old: dict[str, str], new: dict[str, str]) -> DocumentDiff:
    """Documents added, changed (same name, other fingerprint) and removed between two fingerprintings."""
    return DocumentDiff(
        added=sorted(new.keys() - old.keys()),
        changed=sorted(name for name in new.keys() & old.keys() if new[name] != old[name]),
        removed=sorted(old.keys() - new.keys()),
    )


def local_folder(location: str) -> Path | None:
    """The local path a location names (a plain path or a ``file://`` URL); None for a remote URL."""
    if "://" not in location:
        return Path(location)
    fs, path = url_to_fs(location)
    return Path(path) if isinstance(fs, LocalFileSystem) else None


def canonical_location(location: str) -> str:
    """One spelling per documents location: a local folder as an absolute path (``docs``, ``./docs`` and
    ``~/docs`` are one location), a URL as given less a trailing slash. Whatever names or compares a
    location (the CLI's commands, the watcher's state and event resource, the deployments) uses this."""
    if "://" not in location:
        return str(Path(location).expanduser().resolve())
    return location.rstrip("/")


def _wanted(extensions: Iterable[str]) -> set[str]:
    return {extension.lower() for extension in extensions}


def _is_document(relative: PurePosixPath, wanted: set[str]) -> bool:
    """The one rule of which files are documents, local or remote: a wanted suffix (any case), and no
    hidden file or folder on the way."""
    return relative.suffix.lower() in wanted and not any(part.startswith(".") for part in relative.parts)


def local_documents(folder: Path, extensions: Iterable[str]) -> dict[str, Path]:
    """Relative name (POSIX) → path of the documents under a local folder, sorted by name."""
    if not folder.is_dir():
        raise FileNotFoundError(f"documents folder {folder} does not exist or is not a folder")
    wanted = _wanted(extensions)
    found = {
        path.relative_to(folder).as_posix(): path
        for path in folder.rglob("*")
        if path.is_file() and _is_document(PurePosixPath(path.relative_to(folder).as_posix()), wanted)
    }
    return dict(sorted(found.items()))


def _remote_documents(
    fs: AbstractFileSystem, root: str, location: str, extensions: Iterable[str]
) -> dict[str, tuple[str, dict[str, Any]]]:
    """Relative name → (backend path, listing info) of the documents under ``root``, sorted by name.

    A root whose name ends in a wanted extension and that is a file is the one document (the way to
    name a single ``https://`` file: asking an HTTP server whether a URL is a folder downloads it).
    """
    wanted = _wanted(extensions)
    root = root.rstrip("/")
    single = PurePosixPath(root)
    if single.suffix.lower() in wanted and fs.isfile(root):
        return {single.name: (root, fs.info(root))}
    if not fs.exists(root):
        raise FileNotFoundError(
            f"{location} does not exist: check the URL, and the credentials fsspec finds for its backend"
        )
    prefix = root + "/"
    documents = {}
    for path, info in sorted(fs.find(root, detail=True).items()):
        if not path.startswith(prefix):  # an HTTP index page may link outside the location
            continue
        relative = PurePosixPath(path[len(prefix) :])
        if ".." in relative.parts:
            raise SourceError(f"{location} lists {path}, which leaves the location; refusing to mirror it")
        if _is_document(relative, wanted):
            documents[relative.as_posix()] = (path, info)
    return documents


def _remote_fingerprint(fs: AbstractFileSystem, path: str, info: dict[str, Any]) -> str:
    identity = {key: info[key] for key in IDENTITY_KEYS if info.get(key) not in (None, "")}
    if identity:
        return "info:" + json_digest({"size": info.get("size"), **identity})
    digest = hashlib.sha256()
    with fs.open(path, "rb") as source:
        for block in _blocks(source):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def _blocks(source: IO[bytes]) -> Iterator[bytes]:
    return iter(lambda: source.read(READ_BLOCK_BYTES), b"")


# ---------------------------------------------------------------------------------------------------
# Materializing


def materialize_documents(
    location: str | None, settings: SourceSettings, cache_dir: Path, extensions: Iterable[str]
) -> Path:
    """A local folder that holds the documents of ``location`` and of ``settings.arxiv_ids``.

    A local location comes back as it is; a remote one as its mirror under ``cache_dir``; with arXiv
    ids, a folder of links to both (the papers under ``arxiv/``).
    """
    extensions = list(extensions)
    if location is None and not settings.arxiv_ids:
        raise ValueError("no documents to ingest: give a documents folder or URL, or source.arxiv_ids")
    folder = _location_folder(location, settings, cache_dir, extensions) if location is not None else None
    if folder is not None and not settings.arxiv_ids:
        return folder
    papers = fetch_arxiv(settings.arxiv_ids, settings, cache_dir)
    targets = local_documents(folder, extensions) if folder is not None else {}
    for arxiv_id, paper in papers.items():
        relative = f"{ARXIV_FOLDER}/{paper.name}"
        if relative in targets:
            raise SourceError(
                f"{location} already holds {relative}, the name arXiv {arxiv_id} would take in the "
                "combined folder: rename that file or drop the id from source.arxiv_ids"
            )
        targets[relative] = paper
    key = json_digest({"location": location, "arxiv_ids": settings.arxiv_ids})[:KEY_CHARS]
    combined = cache_dir / COMBINED_FOLDER / key
    _sync_links(combined, targets)
    return combined


def _location_folder(location: str, settings: SourceSettings, cache_dir: Path, extensions: list[str]) -> Path:
    folder = local_folder(location)
    if folder is None:
        return Path(mirror_location(location, settings, cache_dir, extensions).path)
    if not folder.is_dir():
        raise FileNotFoundError(f"documents folder {folder} does not exist or is not a folder")
    return folder


def mirror_location(
    location: str, settings: SourceSettings, cache_dir: Path, extensions: Iterable[str]
) -> MirrorResult:
    """Mirror the documents of a remote fsspec URL into ``cache_dir/<location digest>/``.

    Only documents whose fingerprint changed since the last call (or whose blob is gone) are downloaded.
    """
    fs, root = url_to_fs(location)
    key = json_digest({"location": location.rstrip("/")})[:KEY_CHARS]
    mirror, manifest_path, blobs = cache_dir / key, cache_dir / f"{key}.json", cache_dir / BLOBS_FOLDER
    previous = _Manifest.model_validate(read_json(manifest_path)).files if manifest_path.is_file() else {}
    files: dict[str, _MirroredFile] = {}
    downloaded, reused = [], []
    for relative, (path, info) in _remote_documents(fs, root, location, extensions).items():
        fingerprint = _remote_fingerprint(fs, path, info)
        known = previous.get(relative)
        if known is not None and known.fingerprint == fingerprint and (blobs / known.sha256).is_file():
            files[relative] = known
            reused.append(relative)
            continue
        label = f"{location}: {relative}"
        _check_size(info.get("size"), settings, label)
        sha256 = _store_blob(lambda path=path: fs.open(path, "rb"), blobs, settings, label)
        files[relative] = _MirroredFile(fingerprint=fingerprint, sha256=sha256)
        downloaded.append(relative)
    removed = _sync_links(mirror, {relative: blobs / file.sha256 for relative, file in files.items()})
    write_json_atomic(manifest_path, _Manifest(location=location, files=files))
    log.info(
        "mirrored %s into %s: %d downloaded, %d unchanged, %d removed",
        location, mirror, len(downloaded), len(reused), len(removed),
    )  # fmt: skip
    return MirrorResult(path=str(mirror), downloaded=downloaded, reused=reused, removed=removed)


def _check_size(size: int | None, settings: SourceSettings, label: str) -> None:
    if size is not None and size > settings.max_file_mb * BYTES_PER_MB:
        raise SourceError(
            f"{label} is {size / BYTES_PER_MB:.1f} MB, above source.max_file_mb={settings.max_file_mb}: "
            "raise the limit or remove the file"
        )


def _store_blob(
    open_source: Callable[[], IO[bytes]], blobs: Path, settings: SourceSettings, label: str
) -> str:
    """Copy a remote file into the blob store (retried on connection errors); its sha256."""
    blobs.mkdir(parents=True, exist_ok=True)
    tmp = blobs / f".tmp-{uuid.uuid4().hex}"
    try:
        for attempt in _retrying(settings, (ConnectionError, TimeoutError), label):
            with attempt, open_source() as source, open(tmp, "wb") as sink:
                sha256 = _copy_bounded(_blocks(source), sink, settings, label)
        os.replace(tmp, blobs / sha256)
    finally:
        tmp.unlink(missing_ok=True)
    return sha256


def _copy_bounded(blocks: Iterable[bytes], sink: IO[bytes], settings: SourceSettings, label: str) -> str:
    """Write ``blocks`` to ``sink``, refusing more than ``max_file_mb``; the sha256 of what was written."""
    digest, copied = hashlib.sha256(), 0
    for block in blocks:
        copied += len(block)
        _check_size(copied, settings, label)
        digest.update(block)
        sink.write(block)
    return digest.hexdigest()


def _sync_links(folder: Path, targets: dict[str, Path]) -> list[str]:
    """Make ``folder`` hold exactly a symbolic link per relative name to its target; the names removed.

    Each link is replaced atomically (made under a temporary name, renamed), so a reader never sees a
    half-made folder entry; a crash leaves at worst stale entries that the next call removes.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for relative, target in targets.items():
        link, target = folder / relative, target.resolve()
        if link.is_symlink() and Path(os.readlink(link)) == target:
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".tmp-{uuid.uuid4().hex}-{link.name}")
        os.symlink(target, tmp)
        os.replace(tmp, link)
    stale = []
    for directory, subfolders, names in os.walk(folder, topdown=False):
        for name in names:
            relative = (Path(directory) / name).relative_to(folder).as_posix()
            if relative not in targets:
                (Path(directory) / name).unlink()
                stale.append(relative)
        for name in subfolders:
            if not any((Path(directory) / name).iterdir()):
                (Path(directory) / name).rmdir()
    return sorted(name for name in stale if not PurePosixPath(name).name.startswith(".tmp-"))


# ---------------------------------------------------------------------------------------------------
# arXiv


def arxiv_filename(arxiv_id: str) -> str:
    """``2101.00001v2`` → ``2101.00001v2.pdf``; an old-style ``hep-th/9901001`` → ``hep-th_9901001.pdf``."""
    return arxiv_id.replace("/", "_") + ".pdf"


def fetch_arxiv(arxiv_ids: Iterable[str], settings: SourceSettings, cache_dir: Path) -> dict[str, Path]:
    """Each paper's PDF under ``cache_dir/arxiv/``, downloaded only when it is not there yet."""
    folder = cache_dir / ARXIV_FOLDER
    papers: dict[str, Path] = {}
    downloads = 0
    headers = {"User-Agent": USER_AGENT}
    with httpx.Client(timeout=settings.download_timeout_s, follow_redirects=True, headers=headers) as client:
        for arxiv_id in arxiv_ids:
            path = folder / arxiv_filename(arxiv_id)
            if not path.is_file():
                if downloads:
                    time.sleep(settings.arxiv_request_interval_s)
                _download_arxiv(client, arxiv_id, path, settings)
                downloads += 1
            papers[arxiv_id] = path
    log.info("arXiv: %d papers in %s, %d of them downloaded now", len(papers), folder, downloads)
    return papers


def _download_arxiv(client: httpx.Client, arxiv_id: str, path: Path, settings: SourceSettings) -> None:
    url = settings.arxiv_url.format(id=arxiv_id)
    label = f"arXiv {arxiv_id} ({url})"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        for attempt in _retrying(settings, (_Transient,), label):
            with attempt:
                content_type = _fetch(client, url, tmp, settings, label)
        _check_pdf(tmp, content_type, label)
        os.replace(tmp, path)
    except _Transient as err:
        raise DownloadError(
            f"{label} failed after {settings.max_attempts} tries, the last with {err}: check the network "
            "(or source.arxiv_url) and run again"
        ) from err
    finally:
        tmp.unlink(missing_ok=True)


def _fetch(client: httpx.Client, url: str, tmp: Path, settings: SourceSettings, label: str) -> str:
    """Stream ``url`` into ``tmp``; the reply's Content-Type. Raises _Transient when a retry may help."""
    try:
        with client.stream("GET", url) as response:
            if response.status_code in RETRY_STATUS:
                raise _Transient(f"HTTP {response.status_code}")
            if not response.is_success:
                excerpt = next(response.iter_bytes(REPLY_EXCERPT_BYTES), b"")[:REPLY_EXCERPT_BYTES]
                raise DownloadError(
                    f"{label} answered HTTP {response.status_code} "
                    f"({excerpt.decode('utf-8', 'replace')!r}): check the id"
                )
            length = response.headers.get("Content-Length")
            _check_size(int(length) if length and length.isdigit() else None, settings, label)
            with open(tmp, "wb") as sink:
                _copy_bounded(response.iter_bytes(READ_BLOCK_BYTES), sink, settings, label)
            return response.headers.get("Content-Type", "no Content-Type")
    except httpx.TransportError as err:  # refused connection, timeout, connection dropped mid-reply
        raise _Transient(f"{type(err).__name__}: {err}") from err


def _check_pdf(path: Path, content_type: str, label: str) -> None:
    with open(path, "rb") as handle:
        head = handle.read(REPLY_EXCERPT_BYTES)
    if not head.startswith(PDF_HEADER):
        raise DownloadError(
            f"{label} sent no PDF but {content_type} starting {head.decode('utf-8', 'replace')!r}: "
            "arXiv may be limiting requests or the paper has no PDF; check the id, wait and run again"
        )


def _retrying(settings: SourceSettings, transient: tuple[type[BaseException], ...], label: str) -> Retrying:
    def report(state) -> None:
        failure = state.outcome.exception() if state.outcome else None
        log.warning("%s: try %d failed (%s); trying again", label, state.attempt_number, failure)

    return Retrying(
        stop=stop_after_attempt(settings.max_attempts),
        wait=wait_exponential(multiplier=settings.retry_initial_wait_s, max=settings.retry_max_wait_s),
        retry=retry_if_exception_type(transient),
        before_sleep=report,
        reraise=True,
    )
