"""Embeddings for semantic recall: what turns memory values and queries into vectors.

``Embedder`` wraps any embedding callable; ``HashingEmbedder`` is offline and
deterministic; ``OpenAICompatibleEmbedder`` speaks the ``/v1/embeddings`` API of
a model server. ``ranking`` holds the exact cosine ranking and the vector cache.
See docs/semantic_search.md.
"""

from __future__ import annotations

from abathur.embeddings.embedder import Embedder, canonical_text, select_field
from abathur.embeddings.hashing import HashingEmbedder
from abathur.embeddings.openai_compatible import OpenAICompatibleEmbedder

__all__ = [
    "Embedder",
    "HashingEmbedder",
    "OpenAICompatibleEmbedder",
    "canonical_text",
    "select_field",
]
