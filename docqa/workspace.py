"""Atomic outputs under the workspace: a stage writes into a temporary folder and publishes it by rename.

A folder that exists under its final name is therefore complete; a crash leaves only ``.tmp-*``
folders, which are never read.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel


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
