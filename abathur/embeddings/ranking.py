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


class Stacked:
    """The vectors of one candidate list as one matrix, ready to rank.

    A subtree searched again with the same candidates (nothing written there
    in between) reuses it: the list's vectors cannot have changed.
    """

    __slots__ = ("candidates", "ids", "matrix", "norms", "unique")

    def __init__(
        self,
        candidates: Sequence[tuple[int, str]],
        vectors: Sequence[Vector],
        norms: Sequence[float],
    ):
        self.candidates = list(candidates)
        self.ids = np.asarray([entry_id for entry_id, _ in candidates], dtype=np.int64)
        dims = len(vectors[0]) if vectors else 0
        self.matrix = np.stack(vectors) if vectors else np.empty((0, dims), dtype=np.float32)
        self.norms = np.asarray(norms, dtype=np.float64)
        self.unique = len(np.unique(self.ids)) == len(self.ids)

    @property
    def nbytes(self) -> int:
        return int(self.matrix.nbytes)

    def rank(self, query: Vector, limit: int) -> list[tuple[int, float]]:
        """The best ``limit`` of ``(id, score)``, best first (see the module)."""
        if not self.candidates:
            return []
        dots = (self.matrix @ query).astype(np.float64)
        scores = dots / (self.norms * vector_norm(query))
        ids = self.ids
        if not self.unique:
            ids, scores = _best_per_id(ids, scores)
        if 0 < limit < len(scores) and not np.isnan(scores).any():
            # Only the scores at or above the limit-th best can rank (ties
            # at that score included): sort just those.
            cut = np.partition(scores, len(scores) - limit)[len(scores) - limit]
            top = np.flatnonzero(scores >= cut)
            ids, scores = ids[top], scores[top]
        order = np.lexsort((-ids, -scores))[:limit]
        return [(int(ids[i]), float(scores[i])) for i in order]


def rank(
    ids: Sequence[int],
    vectors: Sequence[Vector],
    norms: Sequence[float],
    query: Vector,
    limit: int,
) -> list[tuple[int, float]]:
    """The best ``limit`` of ``(id, score)``, best first; ``ids[i]`` owns
    ``vectors[i]`` (an id may own several: its best score counts)."""
    candidates = [(entry_id, str(i)) for i, entry_id in enumerate(ids)]
    return Stacked(candidates, vectors, norms).rank(query, limit)


def _best_per_id(
    ids: npt.NDArray[np.int64], scores: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    return sorted_ids[starts], np.maximum.reduceat(scores[order], starts)
