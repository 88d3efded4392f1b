"""HashingEmbedder: a deterministic, offline, lexical embedder.

Features are the words of a text (lowercased, common English function words
dropped), pairs of adjacent words, and the character trigrams of every word
(so that ``prefer`` and ``preferences`` share most of their features). Each
feature is hashed with BLAKE2b (never Python's salted ``hash``: the same text
gives the same vector in every process) to one of ``dims`` buckets with a
sign, and the vector is L2-normalised. No model, no network: it finds
memories that share words or word stems with the query, which is enough for
the demo and the tests; plug a real model server for meaning beyond words.
"""

from __future__ import annotations

import hashlib
import math
import re
from itertools import pairwise

from abathur.embeddings.embedder import WHOLE_VALUE, Embedder

WORD = re.compile(r"\w+", re.UNICODE)
_STOPWORDS = """a about an and are as at be by do does for from has have how i in is it its
of on or that the their them they this to was what when where which who why with you your"""
STOPWORDS = frozenset(_STOPWORDS.split())
WORD_WEIGHT = 1.0
PAIR_WEIGHT = 0.5
TRIGRAM_WEIGHT = 0.35


def _bucket(feature: str, dims: int) -> tuple[int, float]:
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
    number = int.from_bytes(digest, "big")
    return (number >> 1) % dims, (1.0 if number & 1 else -1.0)


class HashingEmbedder(Embedder):
    """``HashingEmbedder(dims=384)``: hashed word, word-pair and character-trigram
    features, L2-normalised; deterministic, offline. Its model name is
    ``hashing-v1``. ``fields`` as for ``Embedder``."""

    MODEL = "hashing-v1"

    def __init__(self, dims: int = 384, *, fields: tuple[str, ...] = (WHOLE_VALUE,)):
        super().__init__(self._embed_all, dims, fields=fields, model=self.MODEL)
        self._threaded = False  # pure computation, microseconds per text

    def _embed_all(self, texts: list[str]) -> list[list[float]]:
        return [self.vector(text) for text in texts]

    def vector(self, text: str) -> list[float]:
        """The embedding of one text (all zeros only for a text without word characters,
        which ``Embedder.check`` then refuses)."""
        values = [0.0] * self.dims
        every_word = WORD.findall(text.lower())
        # Function words say little; a text of nothing else keeps them.
        words = [w for w in every_word if w not in STOPWORDS] or every_word
        features: list[tuple[str, float]] = []
        for word in words:
            features.append(("w:" + word, WORD_WEIGHT))
            padded = f"<{word}>"
            features.extend(
                ("c:" + padded[i : i + 3], TRIGRAM_WEIGHT) for i in range(len(padded) - 2)
            )
        features.extend(
            ("p:" + first + " " + second, PAIR_WEIGHT) for first, second in pairwise(words)
        )
        for feature, weight in features:
            index, sign = _bucket(feature, self.dims)
            values[index] += sign * weight
        norm = math.sqrt(sum(v * v for v in values))
        if norm == 0.0:
            return values
        return [v / norm for v in values]
