"""The exact ranking: cosine similarity over every candidate vector, with numpy.

``score = dot(v, q) / (|v| * |q|)``: the dot product of the float32 vectors
(BLAS, float32 accumulation), divided in float64 by the product of the norms
(summed in float64). A version with several embedded fields matches through
its best one. Order: score descending, then row id descending (the version
written later first), so equal scores always come out in the same order.

Versions never change, so a vector read once for a row id is valid for ever:
``VectorCache`` keeps them per process, bounded, oldest entry evicted first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from abathur.embeddings.embedder import Vector, vector_norm

CacheKey = tuple[str, int, int, str]  # (model, dims, memory entry id, field)
DEFAULT_CACHE_VECTORS = 100_000


class VectorCache:
    """Vectors (and their norms) by ``(model, dims, row id, field)``; at most
    ``max_vectors`` of them, the oldest inserted dropped first."""

    def __init__(self, max_vectors: int = DEFAULT_CACHE_VECTORS):
        if max_vectors < 0:
            raise ValueError("max_vectors must not be negative")
        self.max_vectors = max_vectors
        self._entries: dict[CacheKey, tuple[Vector, float]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> tuple[Vector, float] | None:
        return self._entries.get(key)

    def put(self, key: CacheKey, vector: Vector) -> tuple[Vector, float]:
        entry = (vector, vector_norm(vector))
        if self.max_vectors == 0:
            return entry
        entries = self._entries
        if key not in entries and len(entries) >= self.max_vectors:
            del entries[next(iter(entries))]
        entries[key] = entry
        return entry

    def clear(self) -> None:
        self._entries.clear()


def rank(
    ids: Sequence[int],
    vectors: Sequence[Vector],
    norms: Sequence[float],
    query: Vector,
    limit: int,
) -> list[tuple[int, float]]:
    """The best ``limit`` of ``(id, score)``, best first; ``ids[i]`` owns
    ``vectors[i]`` (an id may own several: its best score counts)."""
    if not ids:
        return []
    matrix = np.stack(vectors)
    dots = (matrix @ query).astype(np.float64)
    scores = dots / (np.asarray(norms, dtype=np.float64) * vector_norm(query))
    id_array = np.asarray(ids, dtype=np.int64)
    if len(np.unique(id_array)) != len(id_array):
        id_array, scores = _best_per_id(id_array, scores)
    order = np.lexsort((-id_array, -scores))[:limit]
    return [(int(id_array[i]), float(scores[i])) for i in order]


def _best_per_id(
    ids: npt.NDArray[np.int64], scores: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    return sorted_ids[starts], np.maximum.reduceat(scores[order], starts)
