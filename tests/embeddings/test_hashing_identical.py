"""HashingEmbedder (``hashing-v1``) gives the same bits as its first version.

Vectors stored by any earlier release must stay comparable with the vectors
of today's: the faster implementation (cached buckets, numpy sums) is compared
with a copy of the first one (``reference_vector``, a Python list and a Python
loop) over random texts, as float64 values and as the float32 bytes stored,
and a few texts are pinned to the digest of their stored bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abathur.embeddings import HashingEmbedder
from abathur.repositories.embeddings import to_blob

# ------------------------------------------------------------------ the first version, verbatim

_WORD = re.compile(r"\w+", re.UNICODE)
_STOPWORDS = frozenset(
    """a about an and are as at be by do does for from has have how i in is it its
of on or that the their them they this to was what when where which who why with you your""".split()  # noqa: SIM905
)


def _reference_bucket(feature: str, dims: int) -> tuple[int, float]:
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
    number = int.from_bytes(digest, "big")
    return (number >> 1) % dims, (1.0 if number & 1 else -1.0)


def reference_vector(text: str, dims: int) -> list[float]:
    values = [0.0] * dims
    every_word = _WORD.findall(text.lower())
    words = [w for w in every_word if w not in _STOPWORDS] or every_word
    features: list[tuple[str, float]] = []
    for word in words:
        features.append(("w:" + word, 1.0))
        padded = f"<{word}>"
        features.extend(("c:" + padded[i : i + 3], 0.35) for i in range(len(padded) - 2))
    features.extend(("p:" + first + " " + second, 0.5) for first, second in pairwise(words))
    for feature, weight in features:
        index, sign = _reference_bucket(feature, dims)
        values[index] += sign * weight
    norm = math.sqrt(sum(v * v for v in values))
    if norm == 0.0:
        return values
    return [v / norm for v in values]


# ------------------------------------------------------------------ comparisons

# Few words, so that texts repeat words and pairs (the caches' hits), plus any text.
VOCABULARY = ["alice", "prefers", "small", "pull", "requests", "the", "of", "a", "x", "ÿ", "東京"]
texts = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(VOCABULARY), max_size=40).map(" ".join),
    st.lists(st.text("abcde ,.", max_size=12), max_size=20).map(" ".join),
)
DIMS = st.sampled_from([1, 2, 3, 16, 384, 1536])


def _f64(vector: list[float]) -> bytes:
    return np.asarray(vector, dtype="<f8").tobytes()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, dims=DIMS)
def test_vectors_are_bit_identical_to_the_first_version(text: str, dims: int) -> None:
    expected = reference_vector(text, dims)
    embedder = HashingEmbedder(dims)
    assert _f64(embedder.vector(text)) == _f64(expected)
    assert _f64(embedder.vector(text)) == _f64(expected)  # again, from the caches
    if any(expected):  # what is stored: the checked float32 vector, as a blob
        (stored,) = asyncio.run(embedder.embed_texts([text]))
        assert to_blob(stored) == np.asarray(expected, dtype="<f4").tobytes()


# sha256 of the stored bytes (little-endian float32), computed by the first version.
PINNED = [
    (384, "Alice prefers small pull requests", "8249e01ae480248c4ad97a1644b69a2f"),
    (
        384,
        '{"confidence":0.9,"fact":"the user prefers short answers in code review"}',
        "a58b2b070e9324ae781aaa1ffcbde68d",
    ),
    (384, "what is it", "a46946a1bb920ebe5a5b42d0a12edfd8"),
    (384, "Ünïcode ß straße 東京 café", "4e723a8af451481f207af1da2e93ebc3"),
    (16, "Alice prefers small pull requests", "d9ac031b2ad4ab3ebbcc9f51d501fb94"),
    (1536, "Alice prefers small pull requests", "5939ea72b2c311b0f6e4865afe4cfb82"),
]


@pytest.mark.parametrize(("dims", "text", "digest"), PINNED)
async def test_stored_bytes_are_pinned(dims: int, text: str, digest: str) -> None:
    (stored,) = await HashingEmbedder(dims).embed_texts([text])
    assert hashlib.sha256(to_blob(stored)).hexdigest()[:32] == digest
    assert to_blob(stored) == np.asarray(reference_vector(text, dims), dtype="<f4").tobytes()


def test_a_text_without_words_is_all_zeros() -> None:
    assert HashingEmbedder(8).vector("!!! ...") == reference_vector("!!! ...", 8) == [0.0] * 8
