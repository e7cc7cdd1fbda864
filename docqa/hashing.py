"""Content digests: the currency of caching. Everything a stage consumes is named by what it holds."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

_FULL_HASH_LIMIT = 64 * 2**20  # files up to this size are hashed whole
_EDGE_BYTES = 4 * 2**20  # bigger ones (multi-GB weights): size + first and last 4 MiB


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def json_digest(value: Any) -> str:
    """Digest of a JSON-able value (pydantic models dumped first), independent of key order."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return sha256_bytes(text.encode())


def rows_digest(rows: Iterable[dict[str, Any]]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _file_fingerprint(path: Path) -> str:
    size = path.stat().st_size
    if size <= _FULL_HASH_LIMIT:
        return sha256_file(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(_EDGE_BYTES))
        handle.seek(size - _EDGE_BYTES)
        digest.update(handle.read(_EDGE_BYTES))
    return digest.hexdigest()


def tree_digest(root: Path, patterns: Iterable[str] = ("**/*",)) -> str:
    """Digest of the files under ``root`` matching ``patterns``: relative names and contents.

    Files above 64 MiB (model weights) contribute their size and first and last 4 MiB, which keeps
    fingerprinting a 13 GB checkpoint under a second while still changing when the weights change.
    """
    files = sorted({p for pattern in patterns for p in root.glob(pattern) if p.is_file()})
    entries = [(str(p.relative_to(root)), _file_fingerprint(p)) for p in files]
    return json_digest(entries)


class FileFingerprint(BaseModel):
    """A document file by path and content: the ingest cache key is built from these."""

    path: str
    sha256: str


def fingerprint_files(paths: Iterable[Path], known: dict[str, str] | None = None) -> list[FileFingerprint]:
    """Each file by path and content digest; ``known`` (path → sha256, hashed moments ago by the watcher's
    fingerprint of the same folder) spares hashing a file twice in one run."""
    known = known or {}
    return [FileFingerprint(path=str(p), sha256=known.get(str(p)) or sha256_file(p)) for p in paths]


def file_digest(path: str | None) -> str | None:
    """The content digest of an optional settings file (None when unset), for cache keys."""
    if not path:
        return None
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} is not a file")
    return sha256_file(Path(path))
