"""The embedders: checks on what an embed callable returns, the hashing embedder,
and the OpenAI-compatible client against a local server speaking the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from abathur.embeddings import Embedder, HashingEmbedder, OpenAICompatibleEmbedder
from abathur.embeddings.openai_compatible import embeddings_url
from abathur.errors import EmbeddingError, ValidationError


def fixed(vectors: Any) -> Any:
    return lambda texts: vectors


# ------------------------------------------------------------------ Embedder


async def test_embed_returns_checked_float32_vectors() -> None:
    embedder = Embedder(lambda texts: [[1, 2, 3] for _ in texts], 3, model="m")
    vectors = await embedder.embed_texts(["a", "b"])
    assert [v.dtype for v in vectors] == [np.float32, np.float32]
    assert [v.tolist() for v in vectors] == [[1.0, 2.0, 3.0]] * 2
    assert await embedder.embed_texts([]) == []


async def test_async_embed_callables_are_awaited() -> None:
    async def embed(texts: list[str]) -> list[list[float]]:
        return [[float(len(t)), 1.0] for t in texts]

    embedder = Embedder(embed, 2)
    assert [v.tolist() for v in await embedder.embed_texts(["abc"])] == [[3.0, 1.0]]
    assert embedder.model == "custom"


async def test_sync_embed_callables_run_off_the_event_loop_thread() -> None:
    threads: list[int] = []

    def embed(texts: list[str]) -> list[list[float]]:
        threads.append(threading.get_ident())
        return [[1.0] for _ in texts]

    await Embedder(embed, 1).embed_texts(["x"])
    assert threads and threads[0] != threading.get_ident()


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ([[1.0, 2.0]], "shape"),
        ([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], "2 vectors for 1 texts"),
        ([[1.0, float("nan"), 3.0]], "NaN"),
        ([[1.0, float("inf"), 3.0]], "infinite"),
        ([[1.0, 1e300, 3.0]], "too large"),
        ([[0.0, 0.0, 0.0]], "all zeros"),
        ([["a", "b", "c"]], "not a list of numbers"),
        (None, "not a list of vectors"),
        ([], "0 vectors"),
    ],
)
async def test_bad_vectors_are_embedding_errors(result: Any, message: str) -> None:
    with pytest.raises(EmbeddingError, match=message):
        await Embedder(fixed(result), 3).embed_texts(["one"])


async def test_a_failing_embed_call_is_an_embedding_error() -> None:
    def embed(texts: list[str]) -> list[list[float]]:
        raise ConnectionError("no server")

    with pytest.raises(EmbeddingError, match="no server"):
        await Embedder(embed, 3, model="m").embed_texts(["x"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dims": 0}, "dims"),
        ({"dims": True}, "dims"),
        ({"fields": ()}, "fields"),
        ({"fields": "$"}, "fields"),
        ({"fields": ("a..b",)}, "field name"),
        ({"fields": ("",)}, "field name"),
        ({"fields": ("a", "a")}, "twice"),
        ({"model": " "}, "model"),
    ],
)
def test_bad_configuration_is_a_validation_error(kwargs: dict[str, Any], message: str) -> None:
    options = {"dims": 3, **kwargs}
    with pytest.raises(ValidationError, match=message):
        Embedder(fixed([]), **options)


def test_fields_select_what_is_embedded() -> None:
    embedder = Embedder(fixed([]), 3, fields=("$", "title", "author.name", "tags"))
    value = {"title": "Review", "author": {"name": "alice"}, "tags": ["b", 1], "z": 1, "a": "é"}
    assert embedder.texts(value) == [
        ("$", '{"a":"é","author":{"name":"alice"},"tags":["b",1],"title":"Review","z":1}'),
        ("title", "Review"),
        ("author.name", "alice"),
        ("tags", '["b",1]'),
    ]
    assert embedder.texts({"author": "bob"}) == [("$", '{"author":"bob"}')]


# ------------------------------------------------------------------ HashingEmbedder


async def test_hashing_embedder_is_deterministic_normalised_and_lexical() -> None:
    embedder = HashingEmbedder()
    assert embedder.dims == 384 and embedder.model == "hashing-v1"
    first, again, related, unrelated = await embedder.embed_texts(
        [
            "Alice prefers small pull requests",
            "Alice prefers small pull requests",
            "what does alice prefer for pull requests",
            "sushi on fridays",
        ]
    )
    assert first.tolist() == again.tolist()
    assert float(np.linalg.norm(first)) == pytest.approx(1.0)
    assert float(first @ related) > 0.3 > float(first @ unrelated)


def test_hashing_vectors_do_not_depend_on_the_process() -> None:
    """BLAKE2b, not Python's salted hash(): another process gives the same vector."""
    code = (
        "from abathur.embeddings import HashingEmbedder;"
        "print(HashingEmbedder(dims=16).vector('alice prefers small reviews'))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
    assert outputs == {str(HashingEmbedder(dims=16).vector("alice prefers small reviews")) + "\n"}


async def test_a_query_of_function_words_still_has_a_vector() -> None:
    (vector,) = await HashingEmbedder(dims=32).embed_texts(["what is it"])
    assert np.any(vector)
    with pytest.raises(EmbeddingError, match="all zeros"):
        await HashingEmbedder(dims=32).embed_texts(["!!! ..."])


# ------------------------------------------------------------------ OpenAI-compatible


class FakeServer:
    """A local server speaking ``POST /v1/embeddings``: each text's vector is
    ``[len(text), number of spaces, 1]``; the data items come back in reverse
    order (clients must sort by ``index``)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_with: int | None = None
        self.reply: Any = None
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append(
                    {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
                )
                if owner.fail_with is not None:
                    self.send_response(owner.fail_with)
                    self.end_headers()
                    self.wfile.write(b'{"error": "model not loaded"}')
                    return
                if not self.path.endswith("/v1/embeddings"):
                    self.send_response(404)
                    self.end_headers()
                    return
                data = [
                    {"object": "embedding", "index": i, "embedding": [len(t), t.count(" "), 1]}
                    for i, t in enumerate(body["input"])
                ]
                payload = (
                    owner.reply
                    if owner.reply is not None
                    else {
                        "object": "list",
                        "model": body["model"],
                        "data": list(reversed(data)),
                    }
                )
                raw = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    yield fake
    fake.close()


def test_the_api_path_below_the_base_url() -> None:
    assert embeddings_url("http://h:11434") == "http://h:11434/v1/embeddings"
    assert embeddings_url("http://h:11434/") == "http://h:11434/v1/embeddings"
    assert embeddings_url("https://api.example/v1") == "https://api.example/v1/embeddings"
    with pytest.raises(ValidationError, match="base_url"):
        OpenAICompatibleEmbedder("localhost:11434", "m")
    with pytest.raises(ValidationError, match="timeout"):
        OpenAICompatibleEmbedder("http://h", "m", timeout=0)


@pytest.mark.parametrize("suffix", ["", "/v1", "/v1/"])
async def test_openai_compatible_embedder_speaks_the_api(server: FakeServer, suffix: str) -> None:
    embedder = OpenAICompatibleEmbedder(server.url + suffix, "nomic-embed-text", api_key="sk-1")
    vectors = await embedder.embed_texts(["a b", "hello", "x y z w"])
    assert [v.tolist() for v in vectors] == [[3, 1, 1], [5, 0, 1], [7, 3, 1]]
    assert embedder.dims == 3  # learned from the first response
    (request,) = server.requests
    assert request["path"] == "/v1/embeddings"
    assert request["body"] == {"model": "nomic-embed-text", "input": ["a b", "hello", "x y z w"]}
    assert request["auth"] == "Bearer sk-1"


async def test_openai_compatible_embedder_batches_and_checks_dims(server: FakeServer) -> None:
    embedder = OpenAICompatibleEmbedder(server.url, "m", dims=3)
    vectors = await embedder.embed_texts([f"t{i}" for i in range(150)])
    assert len(vectors) == 150 and vectors[149].tolist() == [4, 0, 1]
    assert [len(r["body"]["input"]) for r in server.requests] == [64, 64, 22]
    assert server.requests[0]["auth"] is None
    with pytest.raises(EmbeddingError, match="shape"):
        await OpenAICompatibleEmbedder(server.url, "m", dims=4).embed_texts(["x"])


async def test_server_failures_are_embedding_errors(server: FakeServer) -> None:
    embedder = OpenAICompatibleEmbedder(server.url, "m")
    server.fail_with = 503
    with pytest.raises(EmbeddingError, match=r"503.*model not loaded"):
        await embedder.embed_texts(["x"])
    server.fail_with = None
    for reply, message in [
        ({"data": []}, "no 'data' list"),
        ({"nothing": 1}, "no 'data' list"),
        ({"data": [{"index": 0}]}, "malformed"),
        ({"data": [{"index": 0, "embedding": "x"}]}, "not a list"),
        ([1, 2], "no 'data' list"),
    ]:
        server.reply = reply
        with pytest.raises(EmbeddingError, match=message):
            await embedder.embed_texts(["x"])


@pytest.mark.parametrize(
    "indices",
    [[0, 0], [1, 1], [0, 2], [-1, 0], [1, 2], [0, True], [0, "1"], [0, None]],
    ids=["duplicate", "duplicate-1", "gap", "negative", "one-based", "bool", "text", "null"],
)
async def test_embeddings_must_answer_each_input_once(
    server: FakeServer, indices: list[Any]
) -> None:
    """``data[i].index`` says which input a vector embeds: a response whose
    indices are not each input's position exactly once would give some text
    another text's vector (sorted as they came, silently)."""
    server.reply = {
        "data": [
            {"index": index, "embedding": [float(n + 1), 1.0, 1.0]}
            for n, index in enumerate(indices)
        ]
    }
    with pytest.raises(EmbeddingError, match="indices"):
        await OpenAICompatibleEmbedder(server.url, "m").embed_texts(["a", "b"])


async def test_embeddings_without_indices_keep_the_response_order(server: FakeServer) -> None:
    server.reply = {"data": [{"embedding": [1.0, 0.0]}, {"embedding": [0.0, 1.0]}]}
    vectors = await OpenAICompatibleEmbedder(server.url, "m").embed_texts(["a", "b"])
    assert [v.tolist() for v in vectors] == [[1.0, 0.0], [0.0, 1.0]]


async def test_an_unreachable_server_is_an_embedding_error() -> None:
    fake = FakeServer()
    url = fake.url
    fake.close()  # nothing listens there any more
    with pytest.raises(EmbeddingError, match="unreachable"):
        await OpenAICompatibleEmbedder(url, "m", timeout=5).embed_texts(["x"])
