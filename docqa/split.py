"""The split rules, in one place for the chunk stage (whose cache key includes this module's source, so
changing a rule re-chunks) and for ``docqa estimate`` (which must not import the chunk stage's heavy
dependencies).

Two levels, each decided by a hash of content and ``split.seed``, so adding documents never moves
another document or chunk between sides by the hash rule:

- **Documents**: ``eval`` (held out: the control, never trained on) or ``train``. A corpus with fewer
  than ``split.min_documents_for_control`` documents holds none out (there is then no control, and
  evaluation says so). Otherwise the hash rule holds out ``eval_fraction`` of them, and two fallbacks
  keep both sides non-empty: when the rule holds out none, the document closest to being held out is;
  when it holds out all, the one farthest from it is trained on.
- **Chunks of training documents**: ``knowledge`` (pretrained on, but its Q&A held out of SFT: the
  knowledge questions) or ``train`` (pretrained on, its Q&A trained on), ``knowledge_fraction`` of them
  by the hash rule, with the same two fallbacks once a corpus has at least two training chunks.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Literal

from docqa.hashing import sha256_bytes
from docqa.settings import SplitSettings

SCORE_DIGITS = 15  # the split score reads the first 15 hex digits of a sha256
DocumentSide = Literal["train", "eval"]
ChunkSide = Literal["train", "knowledge", "eval"]
PRETRAIN_SIDES = ("train", "knowledge")  # chunks whose text pretraining reads


def score(settings: SplitSettings, kind: str, key: str) -> float:
    """A number in [0, 1) fixed by the seed, the kind of decision and the item's content key."""
    prefix = f"{settings.seed}:" if kind == "document" else f"{settings.seed}:{kind}:"
    return int(sha256_bytes(f"{prefix}{key}".encode())[:SCORE_DIGITS], 16) / 16**SCORE_DIGITS


def hold_out(scores: dict[str, float], fraction: float, forced: Sequence[str] = ()) -> set[str]:
    """Keys whose score falls below ``fraction`` (and ``forced`` ones); none of a single key. With two
    keys or more, at least one is held out (the lowest score) and at least one kept (the highest score
    not forced; when every key is forced, all stay held out)."""
    if len(scores) < 2:
        return set(forced) & set(scores)
    held = {key for key, value in scores.items() if value < fraction} | set(forced)
    if not held:
        held = {min(scores, key=scores.__getitem__)}
    elif held == set(scores):
        keep = [key for key in scores if key not in forced]
        if keep:
            held.discard(max(keep, key=scores.__getitem__))
    return held


def document_sides(documents: Sequence[tuple[str, str]], settings: SplitSettings) -> dict[str, DocumentSide]:
    """Side per document sha256, for ``(file name, sha256)`` pairs of distinct documents."""
    if len(documents) < settings.min_documents_for_control:
        return {sha: "train" for _, sha in documents}
    scores = {sha: score(settings, "document", sha) for _, sha in documents}
    forced = [
        sha
        for name, sha in documents
        if any(fnmatch.fnmatch(name, pattern) for pattern in settings.eval_documents)
    ]
    held = hold_out(scores, settings.eval_fraction, forced)
    return {sha: "eval" if sha in held else "train" for sha in scores}


def chunk_sides(chunk_ids: Sequence[str], settings: SplitSettings) -> dict[str, ChunkSide]:
    """Side per chunk id of training documents' chunks: ``knowledge`` or ``train``."""
    scores = {chunk_id: score(settings, "knowledge", chunk_id) for chunk_id in chunk_ids}
    held = hold_out(scores, settings.knowledge_fraction)
    return {chunk_id: "knowledge" if chunk_id in held else "train" for chunk_id in chunk_ids}
