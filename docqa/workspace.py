"""The workspace: where stages keep their outputs, and how machines exchange them.

Outputs are atomic: a stage writes into a temporary folder and publishes it by rename, so a folder
that exists under its final name is complete; a crash leaves only ``.tmp-*`` folders, which are never
read. Published folders are content-addressed and never change.

A workspace is a local path (a shared mount on a cluster) or any fsspec URL (``s3://bucket/prefix``):
see :class:`Workspace`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import fsspec
from pydantic import BaseModel

from docqa.hashing import json_digest

SHARED_MARKER = ".shared"  # beside a folder on the store: written once every file of it is uploaded


def cache_root() -> Path:
    """Where this machine keeps what is built once and shared across workspaces (bootstrap bases,
    downloaded documents and models, the mirrors of remote workspaces)."""
    return Path(os.environ.get("DOCQA_CACHE_DIR", Path.home() / ".cache" / "docqa"))


LOCK_FILE, HOLDER_FILE = ".docqa.lock", ".docqa.lock.json"


class WorkspaceBusy(RuntimeError):
    """Another docqa run holds the workspace; the message names it and says what to do."""


@contextmanager
def workspace_lock(folder: Path, holder: dict[str, Any]) -> Iterator[None]:
    """Hold ``folder`` for one pipeline run: a second run on it (at the same time, or while the first is
    paused for review) is refused at once with who holds it. The lock is an OS file lock
    (``filelock``): the OS releases it when its process dies, even by ``kill -9``, so it never goes stale.
    For a URL workspace it is the local mirror that is held: runs on other machines are not seen."""
    from filelock import FileLock, Timeout

    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        info = folder / HOLDER_FILE
        who = read_json(info) if info.is_file() else {}
        described = ", ".join(f"{key} {value}" for key, value in who.items()) or "details unknown"
        raise WorkspaceBusy(
            f"workspace {folder} is in use by another docqa run ({described}); wait for it to end (a run "
            "paused for review waits until a person approves or rejects it in the Prefect UI), or give this "
            "run another --workspace"
        ) from None
    try:
        write_json_atomic(folder / HOLDER_FILE, holder)
        yield
    finally:
        (folder / HOLDER_FILE).unlink(missing_ok=True)
        lock.release()


def is_url(location: str) -> bool:
    return "://" in location


def new_tmp_dir(parent: Path) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".tmp-", dir=parent))


def publish_dir(tmp: Path, final: Path) -> Path:
    """Rename ``tmp`` to ``final``. Outputs are content-addressed, so an existing ``final`` is identical."""
    if final.exists():
        shutil.rmtree(tmp)
        return final
    os.replace(tmp, final)
    return final


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json_atomic(path: Path, value: Any) -> None:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    write_text_atomic(path, json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


# Characters that ``str.splitlines`` (and readers built on it) takes for line ends and that
# ``json.dumps(..., ensure_ascii=False)`` would leave raw inside strings; the other line-end characters
# (\n, \r, \v, \f, \x1c-\x1e) are control characters, which JSON escapes anyway.
_RAW_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_RAW_LINE_BREAK = re.compile("[\x85\u2028\u2029]")


def jsonl_line(record: Any) -> str:
    """One JSON Lines record: UTF-8 JSON on a single line whatever the text holds (extracted PDF text
    carries U+2028, U+2029 and U+0085, which are escaped here, so any line-based reader splits right)."""
    if isinstance(record, BaseModel):
        record = record.model_dump(mode="json")
    text = json.dumps(record, ensure_ascii=False)
    return _RAW_LINE_BREAK.sub(lambda m: _RAW_LINE_BREAKS[m.group()], text) + "\n"


def write_jsonl_atomic(path: Path, records: Iterable[Any]) -> None:
    write_text_atomic(path, "".join(jsonl_line(record) for record in records))


def jsonl_records(text: str) -> list[str]:
    """The records of JSON Lines text, split on "\n" only (``str.splitlines`` also splits on characters
    that may stand raw inside a JSON string: see docs/pitfalls.md)."""
    return [line for line in text.split("\n") if line.strip()]


def read_jsonl(path: Path) -> list[Any]:
    return [json.loads(line) for line in jsonl_records(Path(path).read_text(encoding="utf-8"))]


class StageOutput(BaseModel):
    """What a stage hands downstream: where its output lives and a digest of its content."""

    path: str
    digest: str

    @property
    def cache_digest(self) -> str:
        """What downstream cache keys use: the content digest (a stage may leave out file locations)."""
        return self.digest

    @property
    def complete(self) -> bool:
        """False when part of the work failed and must be retried by the next run, not served from cache."""
        return True


Located = TypeVar("Located", bound=BaseModel)  # a model with a ``path`` (stage output, base model)


class Workspace:
    """A local path, or an fsspec URL that machines exchange stage outputs through.

    A local path is the workspace itself: every stage reads and writes there, and workers on other
    machines reach it as a shared mount. With a URL (``s3://bucket/prefix``, ``gs://…``) each machine
    works in its own mirror, ``$DOCQA_CACHE_DIR/workspaces/<key>``. The flow that hands a stage to
    another machine shares the stage's inputs: their folders are uploaded (once: they are
    content-addressed) and their paths become URLs. The flow that runs the stage fetches them
    into its own mirror, and shares its output back the same way. Small records that every machine
    reads (stage results, what the watcher compares with, run reports) live on the store itself.
    """

    def __init__(self, location: str | Path):
        location = str(location)
        self.remote = is_url(location)
        if self.remote:
            self.location = location.rstrip("/")
            self.local = cache_root() / "workspaces" / json_digest(self.location)[:16]
        else:
            self.location = str(Path(location).resolve())
            self.local = Path(self.location)

    def __repr__(self) -> str:
        return f"Workspace({self.location!r}, local={str(self.local)!r})"

    @cached_property
    def _store(self) -> tuple[fsspec.AbstractFileSystem, str]:
        fs, root = fsspec.core.url_to_fs(self.location)
        return fs, root.rstrip("/")

    def _remote(self, name: str) -> str:
        return f"{self._store[1]}/{name}"

    # --- records: small JSON files every machine reads ----------------------------------------------

    def write_record(self, name: str, value: Any) -> Path:
        """Write ``name`` (a relative path) locally and, for a URL workspace, on the store."""
        path = self.local / name
        write_json_atomic(path, value)
        self.sync_file(name)
        return path

    def sync_file(self, name: str) -> None:
        """Copy the local file ``name`` to the store (a local workspace is its own store)."""
        if self.remote:
            self._store[0].pipe_file(self._remote(name), (self.local / name).read_bytes())

    def read_record(self, name: str) -> Any | None:
        """The record ``name`` from the store (the local path for a local workspace); None when absent."""
        if not self.remote:
            path = self.local / name
            return read_json(path) if path.is_file() else None
        try:
            return json.loads(self._store[0].cat_file(self._remote(name)))
        except FileNotFoundError:
            return None

    # --- folders: stage outputs and the base model --------------------------------------------------

    def share(self, value: Located) -> Located:
        """``value`` with its folder on the store and its paths as URLs; as it is for a local
        workspace, a hub id, or a value already shared. A folder outside the mirror (the bootstrap base
        in the docqa cache, a local base model) goes to ``imported/<digest>/<name>``."""
        folder = Path(value.path)
        if not self.remote or is_url(value.path) or not folder.is_dir():
            return value
        if folder.is_relative_to(self.local):
            name = folder.relative_to(self.local).as_posix()
        else:
            name = f"imported/{value.digest[:16]}/{folder.name}"
        fs, target = self._store[0], self._remote(name)
        if not fs.exists(target + SHARED_MARKER):  # content-addressed: on the store once is enough
            fs.put(f"{folder}/", f"{target}/", recursive=True)
            fs.pipe_file(target + SHARED_MARKER, b"")
        return _rebase(value, str(folder), f"{self.location}/{name}")

    def fetch(self, value: Located) -> Located:
        """``value`` with its folder in this machine's mirror (downloaded unless already there) and its
        paths local; as it is unless its path is on this workspace's store."""
        if not (self.remote and value.path.startswith(self.location + "/")):
            return value
        name = value.path[len(self.location) + 1 :]
        folder = self.local / name
        if not folder.is_dir():
            fs, source = self._store[0], self._remote(name)
            if not fs.exists(source + SHARED_MARKER):
                raise FileNotFoundError(
                    f"{value.path} is not completely on the workspace store (the flow run that shared it "
                    "stopped while uploading); run the pipeline again to share it anew"
                )
            tmp = new_tmp_dir(folder.parent)
            fs.get(f"{source}/", f"{tmp}/", recursive=True)
            publish_dir(tmp, folder)
        return _rebase(value, value.path, str(folder))


def _rebase(value: Located, old: str, new: str) -> Located:
    """``value`` with every string that is ``old`` or a path under it moved under ``new``."""

    def move(item: Any) -> Any:
        if isinstance(item, str) and (item == old or item.startswith(old + "/")):
            return new + item[len(old) :]
        if isinstance(item, dict):
            return {k: move(v) for k, v in item.items()}
        if isinstance(item, list):
            return [move(v) for v in item]
        return item

    return type(value).model_validate(move(value.model_dump(mode="json")))
