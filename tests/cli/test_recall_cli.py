"""``abathur memory search --query``, ``abathur memory reindex``, the embedder a
command line chooses, and the demo's recall by meaning (issue 12)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from abathur.cli import cli
from abathur.cli.context import make_embedder
from abathur.cli.demo import NAMESPACE, RECALL_QUERY, TASK_ID
from abathur.embeddings import HashingEmbedder, OpenAICompatibleEmbedder
from abathur.errors import ConfigurationError, ValidationError
from tests.embeddings.test_embedders import FakeServer

CLEAN = {
    "ABATHUR_DATABASE_URL": None,
    "ABATHUR_DEBUG": None,
    "ABATHUR_EMBEDDER": None,
    "ABATHUR_EMBEDDER_MODEL": None,
    "ABATHUR_EMBEDDER_API_KEY": None,
}


def invoke(db: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    runner = CliRunner(env={**CLEAN, **(env or {})})
    return runner.invoke(cli, ["--db", str(db), *args], prog_name="abathur")


def ok(db: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    result = invoke(db, *args, env=env)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def ok_json(db: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return json.loads(ok(db, *args, "--json", env=env).stdout)


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    path = tmp_path / "cli.db"
    result = ok(path, "demo")
    assert "== 6. Recall by meaning" in result.stdout
    recall = result.stdout[result.stdout.index("== 6.") : result.stdout.index("== Session")]
    assert f"query: {RECALL_QUERY!r}" in recall
    first = recall.split(f"query: {RECALL_QUERY!r}\n")[1].splitlines()[0]
    assert first.endswith("review_style  " + first.split("review_style  ")[1])
    assert f"{NAMESPACE}/review_style" in first
    return path


def test_make_embedder_reads_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(make_embedder("hashing"), HashingEmbedder)
    assert make_embedder("hashing:64").dims == 64
    with pytest.raises(ValidationError, match="hashing:DIMS"):
        make_embedder("hashing:x")
    with pytest.raises(ValidationError, match="unknown embedder"):
        make_embedder("word2vec")
    monkeypatch.delenv("ABATHUR_EMBEDDER_MODEL", raising=False)
    with pytest.raises(ConfigurationError, match="ABATHUR_EMBEDDER_MODEL"):
        make_embedder("http://127.0.0.1:11434")
    monkeypatch.setenv("ABATHUR_EMBEDDER_MODEL", "nomic-embed-text")
    server = make_embedder("http://127.0.0.1:11434")
    assert isinstance(server, OpenAICompatibleEmbedder) and server.model == "nomic-embed-text"


def test_query_search_prints_ranked_results_with_scores(seeded: Path) -> None:
    found = ok_json(seeded, "memory", "search", "user:alice", "--query", RECALL_QUERY)
    assert found[0]["key"] == "review_style"
    scores = [r["score"] for r in found]
    assert scores == sorted(scores, reverse=True) and len(found) == 4
    text = ok(seeded, "memory", "search", "user:alice", "--query", "code review").stdout
    assert text.splitlines()[0].startswith(f"{NAMESPACE} / review_style")
    assert "score 0." in text.splitlines()[1]
    # Without --query nothing changes: newest first, no score.
    plain = ok_json(seeded, "memory", "search", "user:alice")
    assert all("score" not in r for r in plain)


def test_reindex_with_another_embedder_then_search_with_it(seeded: Path) -> None:
    other = {"ABATHUR_EMBEDDER": "hashing:32"}
    assert ok_json(seeded, "memory", "search", "user", "--query", "sushi", env=other) == []
    result = ok(seeded, "memory", "reindex", "user", "--batch-size", "2", env=other)
    assert "embedded 4 memory versions with hashing-v1" in result.stdout
    assert "embedded 2 versions" in result.stderr and "embedded 4 versions" in result.stderr
    found = ok_json(seeded, "memory", "search", "user", "--query", "sushi", env=other)
    assert found[0]["key"] == "lunch"
    assert ok_json(seeded, "memory", "reindex", env=other) == {
        "embedded": 0,
        "model": "hashing-v1",
    }


def test_writes_embed_when_the_environment_names_an_embedder(seeded: Path) -> None:
    env = {"ABATHUR_EMBEDDER": "hashing"}
    ok(seeded, "memory", "put", "user:alice:t", "tea", '{"text": "green tea, no sugar"}',
       "--type", "semantic", "--by", "me", "--task", TASK_ID, env=env)  # fmt: skip
    found = ok_json(seeded, "memory", "search", "user:alice:t", "--query", "tea")
    assert [r["key"] for r in found] == ["tea"]
    ok(seeded, "memory", "put", "user:alice:t", "milk", '{"text": "milk"}',
       "--type", "semantic", "--by", "me", "--task", TASK_ID)  # fmt: skip
    found = ok_json(seeded, "memory", "search", "user:alice:t", "--query", "milk")
    assert [r["key"] for r in found] == ["tea"]  # written without an embedder: not indexed


def test_search_through_a_model_server(seeded: Path) -> None:
    server = FakeServer()
    try:
        env = {"ABATHUR_EMBEDDER": server.url, "ABATHUR_EMBEDDER_MODEL": "fake"}
        assert ok_json(seeded, "memory", "reindex", env=env)["embedded"] == 4
        found = ok_json(seeded, "memory", "search", "user:alice", "--query", "x y", env=env)
        assert len(found) == 4
        assert {r["body"]["model"] for r in server.requests} == {"fake"}
    finally:
        server.close()


def test_bad_embedder_is_one_line(seeded: Path) -> None:
    result = invoke(seeded, "memory", "search", "user", "--query", "x", "--embedder", "bert")
    assert result.exit_code == 1
    assert "unknown embedder 'bert'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
