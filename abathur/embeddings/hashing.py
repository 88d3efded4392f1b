"""HashingEmbedder: a deterministic, offline, lexical embedder.

Features are the words of a text (lowercased, common English function words
dropped), pairs of adjacent words, and the character trigrams of every word
(so that ``prefer`` and ``preferences`` share most of their features). Each
feature is hashed with BLAKE2b (never Python's salted ``hash``: the same text
gives the same vector in every process) to one of ``dims`` buckets with a
sign, and the vector is L2-normalised. No model, no network: it finds
memories that share words or word stems with the query, which is enough for
the demo and the tests; plug a real model server for meaning beyond words.

The vector is summed bucket by bucket in the order of the features, then
divided by its norm, in float64, exactly as the first version (a Python list
and a Python loop) did: every text gives the same bits as ever (the model is
still ``hashing-v1``; ``tests/embeddings/test_hashing_identical.py`` holds
that version and compares). What changed is the cost (the section "HashingEmbedder
cost per write" of docs/design_decisions.md): the buckets of a word's features
and of a pair are remembered (bounded caches), and numpy does the sums.
"""

from __future__ import annotations

import hashlib
import math
import re
from functools import lru_cache
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt

from abathur.embeddings.embedder import WHOLE_VALUE, Embedder

WORD = re.compile(r"\w+", re.UNICODE)
_STOPWORDS = """a about an and are as at be by do does for from has have how i in is it its
of on or that the their them they this to was what when where which who why with you your"""
STOPWORDS = frozenset(_STOPWORDS.split())
WORD_WEIGHT = 1.0
PAIR_WEIGHT = 0.5
TRIGRAM_WEIGHT = 0.35
# Entries of the two caches below (shared by every HashingEmbedder of the
# process): a word's entry is ~0.6 kB, a pair's ~0.25 kB (~13 MB when both are full).
WORD_CACHE = 16384
PAIR_CACHE = 16384


def _bucket(feature: str, dims: int) -> tuple[int, float]:
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
    number = int.from_bytes(digest, "big")
    return (number >> 1) % dims, (1.0 if number & 1 else -1.0)


@lru_cache(maxsize=WORD_CACHE)
def _word_buckets(word: str, dims: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The buckets of a word's own features (the word, then its character
    trigrams, in that order) and their signed weights."""
    padded = f"<{word}>"
    features = [("w:" + word, WORD_WEIGHT)]
    features.extend(("c:" + padded[i : i + 3], TRIGRAM_WEIGHT) for i in range(len(padded) - 2))
    indices, weights = [], []
    for feature, weight in features:
        index, sign = _bucket(feature, dims)
        indices.append(index)
        weights.append(sign * weight)  # exact: the sign is 1.0 or -1.0
    return tuple(indices), tuple(weights)


@lru_cache(maxsize=PAIR_CACHE)
def _pair_bucket(first: str, second: str, dims: int) -> tuple[int, float]:
    """The bucket of a pair of adjacent words and its signed weight."""
    index, sign = _bucket("p:" + first + " " + second, dims)
    return index, sign * PAIR_WEIGHT


class HashingEmbedder(Embedder):
    """``HashingEmbedder(dims=384)``: hashed word, word-pair and character-trigram
    features, L2-normalised; deterministic, offline. Its model name is
    ``hashing-v1``. ``fields`` as for ``Embedder``."""

    MODEL = "hashing-v1"

    def __init__(self, dims: int = 384, *, fields: tuple[str, ...] = (WHOLE_VALUE,)):
        super().__init__(self._embed_all, dims, fields=fields, model=self.MODEL)
        self._threaded = False  # pure computation, microseconds per text

    def _embed_all(self, texts: list[str]) -> list[Any]:  # float64 arrays
        return [self._vector(text) for text in texts]

    def vector(self, text: str) -> list[float]:
        """The embedding of one text (all zeros only for a text without word characters,
        which ``Embedder.check`` then refuses)."""
        return self._vector(text).tolist()  # type: ignore[no-any-return]

    def _vector(self, text: str) -> npt.NDArray[np.float64]:
        every_word = WORD.findall(text.lower())
        # Function words say little; a text of nothing else keeps them.
        words = [w for w in every_word if w not in STOPWORDS] or every_word
        if not words:
            return np.zeros(self.dims)
        dims = self.dims
        # The features in their order: each word's own, then the pairs.
        indices: list[int] = []
        weights: list[float] = []
        for word in words:
            word_indices, word_weights = _word_buckets(word, dims)
            indices += word_indices
            weights += word_weights
        for first, second in pairwise(words):
            index, weight = _pair_bucket(first, second, dims)
            indices.append(index)
            weights.append(weight)
        # bincount adds the weights one by one, in order, in float64: each
        # bucket is the same sum as ``values[index] += weight`` made it.
        values = np.bincount(indices, weights, minlength=dims).astype(np.float64, copy=False)
        # The squares as Python floats summed by Python's sum(), as before
        # (numpy's sum pairs its terms, a different rounding).
        norm = math.sqrt(sum((values * values).tolist()))
        if norm == 0.0:
            return values
        values /= norm
        return values
