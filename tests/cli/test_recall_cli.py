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
from tests.cli.test_cli import _SEPARATE_STDERR
from tests.embeddings.test_embedders import FakeServer

CLEAN = {
    "ABATHUR_DATABASE_URL": None,
    "ABATHUR_DEBUG": None,
    "ABATHUR_EMBEDDER": None,
    "ABATHUR_EMBEDDER_MODEL": None,
    "ABATHUR_EMBEDDER_API_KEY": None,
}


def invoke(db: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    runner = CliRunner(env={**CLEAN, **(env or {})}, **_SEPARATE_STDERR)
    return runner.invoke(cli, ["--db", str(db), *args], prog_name="abathur")


def ok(db: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    result = invoke(db, *args, env=env)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def ok_json(db: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return json.loads(ok(db, *args, "--json", env=env).stdout)


FACTS = {
    "review_style": "Alice prefers small pull requests and code review within a day",
    "meetings": "no meetings before 10am; async updates in the team channel",
    "lunch": "sushi on Fridays, vegetarian otherwise",
}


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    """The demo's database plus three facts written with ABATHUR_EMBEDDER=hashing
    (embedded); the demo's own memory (coding_style) has no embedding."""
    path = tmp_path / "cli.db"
    result = ok(path, "demo")
    recall = result.stdout[result.stdout.index("== 6.") : result.stdout.index("== Session")]
    ranked = recall.split(f"query: {RECALL_QUERY!r}\n")[1].splitlines()
    assert ranked[0].endswith(f"{NAMESPACE}/review_style")
    for key, text in FACTS.items():
        value = json.dumps({"text": text})
        ok(path, "memory", "put", NAMESPACE, key, value, "--type", "semantic", "--by", "me",
           "--task", TASK_ID, env={"ABATHUR_EMBEDDER": "hashing"})  # fmt: skip
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
    assert scores == sorted(scores, reverse=True)
    assert sorted(r["key"] for r in found) == sorted(FACTS)  # coding_style has no embedding
    text = ok(seeded, "memory", "search", "user:alice", "--query", "code review").stdout
    assert text.splitlines()[0].startswith(f"{NAMESPACE} / review_style")
    assert "score 0." in text.splitlines()[1]
    # Without --query nothing changes: newest first, no score, every memory.
    plain = ok_json(seeded, "memory", "search", "user:alice")
    assert len(plain) == 4 and all("score" not in r for r in plain)


def test_reindex_embeds_what_lacks_an_embedding(seeded: Path) -> None:
    result = ok(seeded, "memory", "reindex", "user:alice")
    assert "embedded 1 memory versions with hashing-v1" in result.stdout
    assert "embedded 1 versions" in result.stderr
    found = ok_json(seeded, "memory", "search", "user:alice", "--query", "indent quotes")
    assert len(found) == 4 and found[0]["key"] == "coding_style"
    assert ok_json(seeded, "memory", "reindex") == {"embedded": 0, "model": "hashing-v1"}


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


def test_writes_embed_only_when_the_environment_names_an_embedder(seeded: Path) -> None:
    ok(seeded, "memory", "put", "user:alice:t", "milk", '{"text": "milk"}',
       "--type", "semantic", "--by", "me", "--task", TASK_ID)  # fmt: skip
    assert ok_json(seeded, "memory", "search", "user:alice:t", "--query", "milk") == []
    ok(seeded, "memory", "put", "user:alice:t", "tea", '{"text": "green tea, milk"}',
       "--type", "semantic", "--by", "me", "--task", TASK_ID,
       env={"ABATHUR_EMBEDDER": "hashing"})  # fmt: skip
    found = ok_json(seeded, "memory", "search", "user:alice:t", "--query", "milk")
    assert [r["key"] for r in found] == ["tea"]


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
