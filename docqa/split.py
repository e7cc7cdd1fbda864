"""The train/eval split rule, by document: one place for the chunk stage (whose cache key includes this
module's source, so changing the rule re-chunks) and for ``docqa estimate`` (which must not import the
chunk stage's heavy dependencies)."""

from __future__ import annotations

import fnmatch
from typing import Literal

from docqa.hashing import sha256_bytes
from docqa.settings import SplitSettings

SCORE_DIGITS = 15  # the split score reads the first 15 hex digits of a sha256


def document_side(name: str, sha256: str, settings: SplitSettings) -> Literal["train", "eval"]:
    """``eval`` or ``train`` from the document's content hash and the seed (adding documents never moves
    one), or ``eval`` when its file name matches ``settings.eval_documents``."""
    if any(fnmatch.fnmatch(name, pattern) for pattern in settings.eval_documents):
        return "eval"
    digits = sha256_bytes(f"{settings.seed}:{sha256}".encode())[:SCORE_DIGITS]
    return "eval" if int(digits, 16) / 16**SCORE_DIGITS < settings.eval_fraction else "train"
