"""OpenAICompatibleEmbedder: any server speaking the OpenAI ``/v1/embeddings`` API.

Ollama (``http://localhost:11434``), vLLM, llama.cpp's server, OpenAI itself.
It sends ``POST {base_url}/v1/embeddings`` (or ``{base_url}/embeddings`` when
``base_url`` already ends in ``/v1``) with ``{"model": ..., "input": [...]}``
and reads ``data[i].embedding`` back, ordered by ``data[i].index``. The
standard library does the HTTP (``urllib``, in a worker thread), so the core
needs no HTTP client package.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from abathur.domain.values import brief_repr
from abathur.embeddings.embedder import WHOLE_VALUE, Embedder
from abathur.errors import EmbeddingError, ValidationError

DEFAULT_TIMEOUT = 30.0
MAX_BATCH = 64


def embeddings_url(base_url: str) -> str:
    """Where the API lives below ``base_url``."""
    base = base_url.rstrip("/")
    return base + ("/embeddings" if base.endswith("/v1") else "/v1/embeddings")


class OpenAICompatibleEmbedder(Embedder):
    """``OpenAICompatibleEmbedder(base_url, model, *, api_key=None, timeout=30.0, dims=None,
    fields=("$",))``.

    ``model`` is sent to the server and stored with every vector. ``dims`` is
    checked against every vector; without it the first response fixes it.
    ``api_key`` is sent as a bearer token. Texts go in batches of at most 64
    per request. A connection failure, a timeout, an HTTP error status or a
    malformed response is an ``EmbeddingError``.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        dims: int | None = None,
        fields: Sequence[str] = (WHOLE_VALUE,),
    ):
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValidationError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ValidationError(f"timeout must be a positive number of seconds, got {timeout!r}")
        super().__init__(self._request_all, dims or 1, fields=fields, model=model)
        self._dims_known = dims is not None
        self._threaded = False  # _request_all is a coroutine function of its own making
        self.url = embeddings_url(base_url)
        self.api_key = api_key
        self.timeout = float(timeout)

    def __repr__(self) -> str:
        return f"OpenAICompatibleEmbedder({self.url!r}, model={self.model!r})"

    async def _request_all(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), MAX_BATCH):
            batch = texts[start : start + MAX_BATCH]
            vectors.extend(await asyncio.to_thread(self._post, batch))
        if not self._dims_known and vectors:
            first = vectors[0]
            if isinstance(first, list) and first:
                self.dims = len(first)
                self._dims_known = True
        return vectors

    def _post(self, texts: list[str]) -> list[list[float]]:
        body = json.dumps({"model": self.model, "input": texts}).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            raise EmbeddingError(
                f"embedding server {self.url} answered {exc.code} {exc.reason}: {detail}"
            ) from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise EmbeddingError(f"embedding server {self.url} unreachable: {exc}") from exc
        except (ValueError, UnicodeDecodeError) as exc:
            raise EmbeddingError(f"embedding server {self.url} sent invalid JSON") from exc
        return _vectors(payload, len(texts), self.url)


def _vectors(payload: Any, count: int, url: str) -> list[list[float]]:
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list) or len(data) != count:
        raise EmbeddingError(
            f"embedding server {url} returned no 'data' list of {count} embeddings"
        )
    if not all(isinstance(item, dict) for item in data):
        raise EmbeddingError(f"embedding server {url} returned malformed embeddings")
    ordered = data
    if any("index" in item for item in data):  # else: the inputs' order
        # Each input's position exactly once: sorting anything else would
        # give some text another text's vector.
        indices = [item.get("index") for item in data]
        if sorted(i if type(i) is int else -1 for i in indices) != list(range(count)):
            raise EmbeddingError(
                f"embedding server {url} returned the indices {brief_repr(indices)}, "
                f"not each of 0..{count - 1} once"
            )
        ordered = sorted(data, key=lambda item: int(item["index"]))
    try:
        vectors = [item["embedding"] for item in ordered]
    except KeyError as exc:
        raise EmbeddingError(f"embedding server {url} returned malformed embeddings") from exc
    if not all(isinstance(v, list) for v in vectors):
        raise EmbeddingError(f"embedding server {url} returned an embedding that is not a list")
    return vectors
