"""Embedders: what turns a memory value (or a query) into vectors.

An ``Embedder`` wraps any callable that takes a list of texts and returns one
vector of ``dims`` floats per text, sync or async. It decides what of a value
is embedded (``fields``) and checks every vector it gets back: the wrong
number of vectors, the wrong dimension, NaN, infinities or an all-zero vector
(which has no direction, so no cosine) are an ``EmbeddingError``, as is any
exception the callable raises. Vectors leave it as float32 numpy arrays, the
form they are stored in.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from abathur.errors import EmbeddingError, ValidationError

Vector = npt.NDArray[np.float32]
EmbedFunction = Callable[[list[str]], Sequence[Sequence[float]] | Awaitable[Any]]
WHOLE_VALUE = "$"


def canonical_text(value: Any) -> str:
    """The text a JSON value is embedded as: a string as it is; anything else
    as canonical JSON (sorted keys, no spaces, unicode kept)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def select_field(value: Any, field: str) -> tuple[bool, Any]:
    """``(True, part)`` for the part of ``value`` that ``field`` names (``"$"``
    the whole value, ``"a.b"`` the member ``b`` of the object ``a``), or
    ``(False, None)`` when the value has no such part."""
    if field == WHOLE_VALUE:
        return True, value
    part = value
    for name in field.split("."):
        if not isinstance(part, dict) or name not in part:
            return False, None
        part = part[name]
    return True, part


def check_fields(fields: Any) -> None:
    """ValidationError unless ``fields`` is a non-empty sequence of distinct
    field names (``"$"`` or dotted names)."""
    if isinstance(fields, str) or not isinstance(fields, Sequence) or not fields:
        raise ValidationError("fields must be a non-empty sequence of field names")
    for field in fields:
        if not isinstance(field, str) or not field or "" in field.split("."):
            raise ValidationError(f"invalid field name {field!r}: use '$' or a dotted name")
    if len(set(fields)) != len(fields):
        raise ValidationError(f"fields {list(fields)!r} name a field twice")


class Embedder:
    """``Embedder(embed, dims, *, fields=("$",), model="custom")``.

    ``embed`` is a sync or async callable taking a list of texts and returning
    one vector of ``dims`` floats per text; a sync one runs in a worker thread,
    so that it may block (on a network call, a local model) without stalling
    the event loop. ``fields`` names what of a memory value is embedded:
    ``"$"`` the whole value as canonical JSON text, a dotted name (``"a.b"``)
    one part of it (a string part as it is, any other as canonical JSON). The
    texts of several fields are embedded separately and a version matches a
    query through its best field; a field the value lacks is skipped, and a
    value lacking every field gets no embedding. ``model`` is stored with
    every vector: vectors of different models (or dimensions) are never
    compared, so name the model that made them.
    """

    def __init__(
        self,
        embed: EmbedFunction,
        dims: int,
        *,
        fields: Sequence[str] = (WHOLE_VALUE,),
        model: str = "custom",
    ):
        if not callable(embed):
            raise ValidationError("embed must be a callable taking a list of texts")
        if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
            raise ValidationError(f"dims must be a positive integer, got {dims!r}")
        check_fields(fields)
        if not isinstance(model, str) or not model.strip():
            raise ValidationError("model must be a non-empty string naming the model")
        self._embed = embed
        self.dims = dims
        self.fields = tuple(fields)
        self.model = model
        self._threaded = not inspect.iscoroutinefunction(embed)

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(model={self.model!r}, dims={self.dims}, fields={self.fields})"

    def texts(self, value: Any, fields: Sequence[str] | None = None) -> list[tuple[str, str]]:
        """``(field, text)`` for every configured field (or every one of
        ``fields``) the value has."""
        found = []
        for field in self.fields if fields is None else fields:
            present, part = select_field(value, field)
            if present:
                found.append((field, canonical_text(part)))
        return found

    async def embed_texts(self, texts: Sequence[str]) -> list[Vector]:
        """One checked float32 vector per text (``[]`` for no texts)."""
        batch = list(texts)
        if not batch:
            return []
        try:
            if self._threaded:
                result: Any = await asyncio.to_thread(self._call, batch)
            else:
                result = self._embed(batch)
            if type(result) is not list and inspect.isawaitable(result):  # list: no ABC check
                result = await result
        except EmbeddingError:
            raise
        except Exception as exc:
            raise EmbeddingError(f"embedder {self.model!r} failed: {exc!r}") from exc
        return self.check(result, len(batch))

    def _call(self, batch: list[str]) -> Any:
        return self._embed(batch)

    def check(self, result: Any, count: int) -> list[Vector]:
        """``result`` as ``count`` float32 vectors of ``dims``, or EmbeddingError."""
        try:
            vectors = list(result)
        except TypeError as exc:
            raise EmbeddingError(
                f"embedder {self.model!r} returned {type(result).__name__}, not a list of vectors"
            ) from exc
        if len(vectors) != count:
            raise EmbeddingError(
                f"embedder {self.model!r} returned {len(vectors)} vectors for {count} texts"
            )
        checked = []
        for number, vector in enumerate(vectors):
            try:
                array = np.asarray(vector, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise EmbeddingError(
                    f"embedder {self.model!r}: vector {number} is not a list of numbers"
                ) from exc
            if array.shape != (self.dims,):
                raise EmbeddingError(
                    f"embedder {self.model!r}: vector {number} has shape {array.shape}, "
                    f"expected ({self.dims},)"
                )
            with np.errstate(over="ignore"):
                stored = array.astype(np.float32)
            if not np.isfinite(stored).all():
                raise EmbeddingError(
                    f"embedder {self.model!r}: vector {number} has NaN or infinite components "
                    "(or components too large for float32)"
                )
            if not stored.any():
                raise EmbeddingError(
                    f"embedder {self.model!r}: vector {number} is all zeros and has no direction"
                )
            checked.append(stored)
        return checked

    async def embed_value(
        self, value: Any, fields: Sequence[str] | None = None
    ) -> list[tuple[str, Vector]]:
        """``(field, vector)`` for every configured field (or every one of
        ``fields``) of a memory value."""
        texts = self.texts(value, fields)
        vectors = await self.embed_texts([text for _, text in texts])
        return [(field, vector) for (field, _), vector in zip(texts, vectors, strict=True)]

    async def embed_values(self, values: Sequence[Any]) -> list[list[tuple[str, Vector]]]:
        """``embed_value`` for several values, in one call of the embedder."""
        per_value = [self.texts(value) for value in values]
        flat = [text for texts in per_value for _, text in texts]
        vectors = iter(await self.embed_texts(flat))
        return [[(field, next(vectors)) for field, _ in texts] for texts in per_value]

    async def embed_query(self, text: str) -> Vector:
        """The vector of a query text."""
        if not isinstance(text, str) or not text.strip():
            raise ValidationError("query must be a non-empty string")
        (vector,) = await self.embed_texts([text])
        return vector


def vector_norm(vector: Vector) -> float:
    """The Euclidean norm, summed in float64."""
    return math.sqrt(float(np.dot(vector.astype(np.float64), vector.astype(np.float64))))
