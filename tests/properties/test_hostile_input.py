"""Every public method of the four services, driven with hostile arguments.

One or more arguments of a valid call are replaced by hostile values: huge and
negative integers, bools, floats, bytes, lone surrogates, NUL, very long
strings, nested junk. Whatever the value, the call either succeeds, and what
it stored reads back equal, or raises an ``abathur.errors`` exception: never a
driver, SQLAlchemy, pydantic or Python error, on either backend.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abathur.domain.memory import AccessContext
from abathur.errors import AbathurError, ValidationError
from abathur.infrastructure.database import Database
from tests.db.test_json_roundtrip import as_json_numbers

SESSION, TASK, NS, KEY = "s-hostile", "t-hostile", "user:alice", "k"
HERE = Path(__file__).parent  # a small directory that exists

SPECIAL_INTS = [0, -1, 1, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1]
SPECIAL_TEXT = [
    "", " ", "\x00", "a\x00b", "\ud800", "x\udfffy", "é" * 700, "\U0001f600" * 300,
    "x" * 3000, ":", "user:", "temp:x", "user:alice", "user:alice:ü", "%_\\", "\n", "'\"",
    "session", "semantic", "active", "latest_wins", "**/*.md", "../x", "/nonexistent-abathur",
]  # fmt: skip


def _deep(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = {"a": value}
    return value


scalars = st.one_of(
    st.integers(),
    st.sampled_from(SPECIAL_INTS),
    st.booleans(),
    st.none(),
    st.floats(),
    st.binary(max_size=8),
    st.sampled_from(SPECIAL_TEXT),
    st.text(max_size=12),
    st.datetimes(),  # naive
    st.datetimes(timezones=st.just(UTC)),
    st.timedeltas(),
    st.uuids(),
    st.sampled_from([object(), Path("x"), 1j, b"bytes", bytearray(b"x")]),
)
hostile = st.one_of(
    # Each kind of trouble drawn often enough to meet every argument.
    st.sampled_from(SPECIAL_TEXT),
    st.sampled_from(["\ud800", "a\udfff", "x\x00", "\x00", "é" * 1500, "k" * 3000]),
    st.sampled_from(SPECIAL_INTS),
    st.integers(min_value=2**31, max_value=2**80) | st.integers(max_value=-1),
    # Even repr() of this int raises (Python's limit on int to str conversion);
    # built, not sampled, so that the strategy's own repr stays short.
    st.builds(lambda: 10**5000),
    st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.one_of(st.text(max_size=3), st.integers()), children, max_size=3)
            | st.tuples(children)
            | st.sets(st.integers(), max_size=2)
        ),
        max_leaves=6,
    ),
    st.integers(min_value=95, max_value=300).map(_deep),
)


Check = Callable[[Database, dict[str, Any], Any], Awaitable[None]]


@dataclass
class Method:
    """A public method: how to call it, valid arguments, and how to read back
    what a successful call stored (None: nothing to read back)."""

    name: str
    call: Callable[[Database, dict[str, Any]], Awaitable[Any]]
    valid: dict[str, Any]
    check: Check | None = None


def same(a: Any, b: Any) -> bool:
    """Equal as JSON (PostgreSQL's JSONB keeps numbers as NUMERIC)."""
    return bool(as_json_numbers(a) == as_json_numbers(b))


# ------------------------------------------------------------------ read-back checks


async def check_session(db: Database, a: dict[str, Any], _: Any) -> None:
    got = await db.sessions.get_session(a["session_id"])
    assert got is not None
    assert (got["app_name"], got["user_id"], got["project_id"]) == (
        a["app_name"], a["user_id"], a["project_id"],
    )  # fmt: skip
    assert same(got["state"], a["initial_state"] or {})


async def check_event(db: Database, a: dict[str, Any], _: Any) -> None:
    last = (await db.sessions.list_events(a["session_id"], limit=1_000_000))[-1]["event"]
    assert same({k: last[k] for k in a["event"]}, a["event"])
    for k, v in (a["state_delta"] or {}).items():
        assert same(await db.sessions.get_state(a["session_id"], k), v)


async def check_events(db: Database, a: dict[str, Any], last_seq: Any) -> None:
    events = await db.sessions.list_events(a["session_id"], limit=1_000_000)
    stored = [e["event"] for e in events][len(events) - len(a["events"]) :]
    assert (events[-1]["seq"] if events else 0) == last_seq
    assert all(same({k: s[k] for k in e}, e) for s, e in zip(stored, a["events"], strict=True))


async def check_state(db: Database, a: dict[str, Any], _: Any) -> None:
    assert same(await db.sessions.get_state(a["session_id"], a["key"]), a["value"])


async def check_status(db: Database, a: dict[str, Any], _: Any) -> None:
    got = await db.sessions.get_session(a["session_id"])
    assert got is not None and got["status"] == a["status"]


async def check_memory(db: Database, a: dict[str, Any], row_id: Any) -> None:
    got = await db.memory.get_memory(a["namespace"], a["key"])
    assert got is not None and got["id"] == row_id
    assert same(got["value"], a["value"])
    if "metadata" in a:
        assert same(got["metadata"], a["metadata"] or {})
        assert (got["memory_type"], got["created_by"]) == (a["memory_type"], a["created_by"])


async def _reindex(db: Database, a: dict[str, Any]) -> int:
    """``reindex`` needs an embedder: a service over the same database with one."""
    from abathur.embeddings import HashingEmbedder
    from abathur.infrastructure.memory_service import MemoryService

    return await MemoryService(db, embedder=HashingEmbedder(dims=8)).reindex(**a)


async def check_put(db: Database, a: dict[str, Any], written: Any) -> None:
    got = await db.memory.get_memory(a["namespace"], a["key"])
    assert got is not None and got == written
    assert same(got["value"], a["value"])


async def check_put_many(db: Database, a: dict[str, Any], written: Any) -> None:
    assert isinstance(written, list) and len(written) == 1
    await check_put(db, a, written[0])


def _bulk_item() -> dict[str, Any]:
    """The one valid item of ``put_memories`` when its ``analyze`` flag is the argument."""
    return {"namespace": NS, "key": "bulk-analyzed", "value": {"v": 5},
            "memory_type": "semantic", "by": "dave", "task_id": TASK}  # fmt: skip


async def check_put_many_analyzed(db: Database, _a: dict[str, Any], written: Any) -> None:
    await check_put_many(db, _bulk_item(), written)


async def check_task(db: Database, a: dict[str, Any], task: Any) -> None:
    got = await db.tasks.get_task(task.id)
    assert got is not None and got.prompt == a["prompt"]
    for name in ("agent_type", "priority", "status", "created_by", "session_id"):
        assert getattr(got, name) == a[name]
    assert same(got.input_data, a["input_data"])
    assert got.dependencies == (
        None if a["dependencies"] is None else [str(d) for d in a["dependencies"]]
    )
    if a["id"] is not None:
        assert got.id == str(a["id"])


async def check_agent(db: Database, a: dict[str, Any], agent: Any) -> None:
    got = await db.tasks.get_agent(agent.id)
    assert got is not None
    assert (got.name, got.specialization, got.model, got.task_id) == (
        a["name"], a["specialization"], a["model"], str(a["task_id"]),
    )  # fmt: skip
    assert same(got.resource_usage, a["resource_usage"])


async def check_checkpoint(db: Database, a: dict[str, Any], _: Any) -> None:
    got = await db.tasks.latest_checkpoint(a["task_id"])
    assert got is not None
    if got.iteration == a["iteration"]:
        assert same(got.state, a["state"])


async def check_audit(db: Database, a: dict[str, Any], row: Any) -> None:
    got = [r for r in await db.tasks.audit_for_task(a["task_id"], 1000) if r.id == row.id]
    assert len(got) == 1
    assert (got[0].action_type, got[0].agent_id, got[0].result) == (
        a["action_type"], a["agent_id"], a["result"],
    )  # fmt: skip
    assert same(got[0].action_data, a["action_data"])


async def check_synced(db: Database, a: dict[str, Any], _: Any) -> None:
    got = await db.documents.get_document(a["document_id"])
    assert got is not None and got.sync_status == "synced"
    assert got.embedding_model == a["embedding_model"]


# ------------------------------------------------------------------ the methods


def m(method: str, call: Any, check: Check | None = None, /, **valid: Any) -> Method:
    return Method(method, call, valid, check)


SESSION_METHODS = [
    m("create_session", lambda db, a: db.sessions.create_session(**a), check_session,
      session_id="s-new", app_name="app", user_id="bob", project_id=None, initial_state={}),
    m("get_session", lambda db, a: db.sessions.get_session(**a),
      session_id=SESSION, recent_events=2, after=datetime(2020, 1, 1, tzinfo=UTC)),
    m("get_session_log", lambda db, a: db.sessions.get_session_log(**a), session_id=SESSION),
    m("append_event", lambda db, a: db.sessions.append_event(**a), check_event,
      session_id=SESSION, event={"n": 1}, state_delta={"k": 1}, expected_seq=None),
    m("append_events", lambda db, a: db.sessions.append_events(**a), check_events,
      session_id=SESSION, events=[{"n": 1}], state_delta=None, expected_seq=None),
    m("update_status", lambda db, a: db.sessions.update_status(**a), check_status,
      session_id=SESSION, status="paused"),
    m("get_state", lambda db, a: db.sessions.get_state(**a), session_id=SESSION, key="k"),
    m("get_shared_state", lambda db, a: db.sessions.get_shared_state(**a),
      app_name="app", user_id="alice"),
    m("get_app_shared_state", lambda db, a: db.sessions.get_app_shared_state(**a),
      app_name="app"),
    m("set_state", lambda db, a: db.sessions.set_state(**a), check_state,
      session_id=SESSION, key="k", value={"v": 1}),
    m("list_active_sessions", lambda db, a: db.sessions.list_active_sessions(**a),
      user_id="alice"),
    m("terminate_session", lambda db, a: db.sessions.terminate_session(**a),
      session_id="s-other"),
    m("list_events", lambda db, a: db.sessions.list_events(**a),
      session_id=SESSION, after_seq=0, limit=10),
    m("list_sessions", lambda db, a: db.sessions.list_sessions(**a),
      app_name="app", user_id="alice", project_id=None, status=None, limit=10, before=None),
    m("delete_session", lambda db, a: db.sessions.delete_session(**a), session_id="s-gone"),
]  # fmt: skip

MEMORY_METHODS = [
    m("get_memory", lambda db, a: db.memory.get_memory(**a), namespace=NS, key=KEY, version=1,
      refresh_ttl=False),
    m("get_memory_history", lambda db, a: db.memory.get_memory_history(**a),
      namespace=NS, key=KEY),
    m("search_memories", lambda db, a: db.memory.search_memories(**a),
      namespace_prefix="user", memory_type="semantic", limit=10,
      filter={"v": {"$gte": 1}}, offset=0, refresh_ttl=False),
    m("put_memory", lambda db, a: db.memory.put_memory(**a), check_put,
      namespace=NS, key="put", value={"v": 3}, memory_type="semantic", by="carol",
      task_id=TASK, metadata=None, ttl=timedelta(hours=1)),
    # One item whose every field is a hostile argument in turn: the bulk path
    # validates each item as put_memory does.
    m("put_memories", lambda db, a: db.memory.put_memories([a]), check_put_many,
      namespace=NS, key="bulk", value={"v": 4}, memory_type="semantic", by="dave",
      task_id=TASK, metadata=None, ttl=timedelta(hours=1)),
    m("put_memories", lambda db, a: db.memory.put_memories([_bulk_item()], **a),
      check_put_many_analyzed, analyze=True),
    m("refresh_statistics", lambda db, a: db.memory.refresh_statistics(**a), rows=10),
    m("list_namespaces", lambda db, a: db.memory.list_namespaces(**a),
      prefix="user", suffix=None, max_depth=None, limit=10, offset=0),
    m("sweep_expired", lambda db, a: db.memory.sweep_expired(**a), task_id=TASK),
    m("reindex", lambda db, a: _reindex(db, a), namespace_prefix="user", batch_size=10,
      progress=None),
    m("add_memory", lambda db, a: db.memory.add_memory(**a), check_memory,
      namespace=NS, key="new", value={"v": 1}, memory_type="semantic", created_by="alice",
      task_id=TASK, metadata=None),
    m("update_memory", lambda db, a: db.memory.update_memory(**a), check_memory,
      namespace=NS, key=KEY, value={"v": 2}, updated_by="bob", task_id=TASK),
    m("delete_memory", lambda db, a: db.memory.delete_memory(**a),
      namespace=NS, key="doomed", deleted_by="bob", task_id=TASK),
    m("restore_memory", lambda db, a: db.memory.restore_memory(**a),
      namespace=NS, key=KEY, version=1, restored_by="bob", task_id=TASK),
    m("publish_memory", lambda db, a: db.memory.publish_memory(**a),
      from_ns=f"session:{SESSION}", to_ns=NS, key="draft", published_by="bob", task_id=TASK),
    m("consolidate_memories", lambda db, a: db.memory.consolidate_memories(**a),
      namespace=NS, consolidation_strategy="latest_wins", consolidated_by="bob", task_id=TASK),
    m("expire_episodic", lambda db, a: db.memory.expire_episodic(**a),
      older_than=timedelta(days=1), expired_by="bob", task_id=TASK),
    m("seed_defaults", lambda db, a: db.memory.seed_defaults(**a), task_id=TASK),
    m("scoped", lambda db, a: _scoped(db, a), context=None, namespace=NS, key=KEY),
]  # fmt: skip

TASK_METHODS = [
    m("create_task", lambda db, a: db.tasks.create_task(**a), check_task,
      prompt="p", id=None, agent_type="general", priority=5, status="pending",
      input_data={}, created_by=None, parent_task_id=None, dependencies=None, session_id=None),
    m("get_task", lambda db, a: db.tasks.get_task(**a), task_id=TASK),
    m("list_session_tasks", lambda db, a: db.tasks.list_session_tasks(**a), session_id=SESSION),
    m("create_agent", lambda db, a: db.tasks.create_agent(**a), check_agent,
      name="n", specialization="s", model="m", task_id=TASK, id=None, state="idle",
      resource_usage=None, session_id=None),
    m("get_agent", lambda db, a: db.tasks.get_agent(**a), agent_id="a"),
    m("save_checkpoint", lambda db, a: db.tasks.save_checkpoint(**a), check_checkpoint,
      task_id=TASK, iteration=1, state={"i": 1}, session_id=None),
    m("latest_checkpoint", lambda db, a: db.tasks.latest_checkpoint(**a), task_id=TASK),
    m("record_audit", lambda db, a: db.tasks.record_audit(**a), check_audit,
      task_id=TASK, action_type="x", action_data=None, agent_id=None, result=None,
      memory_operation_type=None, memory_namespace=None, memory_entry_id=None),
    m("audit_for_task", lambda db, a: db.tasks.audit_for_task(**a), task_id=TASK, limit=10),
    m("audit_tail", lambda db, a: db.tasks.audit_tail(**a), namespace_prefix=NS, limit=10),
]  # fmt: skip

DOCUMENT_METHODS = [
    m("sync_directory", lambda db, a: db.documents.sync_directory(**a),
      path="DOCS", pattern="**/*.md", batch_size=10, follow_external_symlinks=False,
      max_file_bytes=1000),
    m("get_document", lambda db, a: db.documents.get_document(**a), document_id=1),
    m("list_documents", lambda db, a: db.documents.list_documents(**a), directory="DOCS"),
    m("pending_documents", lambda db, a: db.documents.pending_documents(**a),
      limit=10, include_missing=False),
    m("mark_synced", lambda db, a: db.documents.mark_synced(**a), check_synced,
      document_id=1, embedding_model="model", embedding=b"\x00\x01", content_hash=None),
]  # fmt: skip


async def _scoped(db: Database, a: dict[str, Any]) -> Any:
    context = a["context"]
    if context is None:
        context = AccessContext(session_id=SESSION, user_id="alice", app_name="app")
    return await db.memory.scoped(context).get_memory(a["namespace"], a["key"])


# ------------------------------------------------------------------ the driver


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    """A directory with one document, for the document index methods."""
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.md").write_text("# A\n")
    return root


async def _prepare(db: Database, docs: Path) -> None:
    """What the valid arguments name: a task, sessions, memories, a document."""
    if await db.tasks.get_task(TASK) is not None:
        return  # prepared by an earlier example
    await db.tasks.create_task("hostile", id=TASK)
    for sid in (SESSION, "s-other", "s-gone"):
        await db.sessions.create_session(sid, "app", "alice")
    await db.sessions.update_status(SESSION, "active")
    await db.memory.add_memory(NS, KEY, {"v": 1}, "semantic", "alice", TASK)
    await db.memory.add_memory(NS, "doomed", {"v": 1}, "episodic", "alice", TASK)
    await db.memory.add_memory(f"session:{SESSION}", "draft", {"v": 1}, "semantic", "a", TASK)
    await db.documents.sync_directory(docs)


async def _drive(db: Database, docs: Path, method: Method, data: st.DataObject) -> None:
    names = sorted(method.valid)
    replaced = data.draw(st.sets(st.sampled_from(names), min_size=1, max_size=2), "replaced")
    args = {k: v.replace("DOCS", str(docs)) if v == "DOCS" else v for k, v in method.valid.items()}
    for name in sorted(replaced):
        args[name] = data.draw(hostile, name)
    try:
        result = await method.call(db, args)
    except AbathurError as exc:
        # The message is abathur's own: not pydantic's "Value error, " wording.
        assert "Value error," not in str(exc), str(exc)
        return
    if method.check is not None:
        await method.check(db, args, result)


def hostile_settings(max_examples: int) -> Any:
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


SERVICES = {
    "sessions": SESSION_METHODS,
    "memory": MEMORY_METHODS,
    "tasks": TASK_METHODS,
    "documents": DOCUMENT_METHODS,
}


@pytest.mark.parametrize("service", sorted(SERVICES))
@hostile_settings(max_examples=150)
@given(data=st.data())
async def test_hostile_arguments_are_stored_equal_or_refused_with_abathur_errors(
    db: Database, docs: Path, service: str, data: st.DataObject
) -> None:
    await _prepare(db, docs)
    method = data.draw(st.sampled_from(SERVICES[service]), "method")
    await _drive(db, docs, method, data)


@hostile_settings(max_examples=200)
@given(
    fields=st.fixed_dictionaries(
        {},
        optional={
            "session_id": hostile | st.just("s1"),
            "user_id": hostile | st.just("alice"),
            "app_name": hostile | st.just("app"),
            "project_id": hostile,
            "can_write_app": hostile,
            "can_write_project": hostile,
            "other": hostile,
        },
    )
)
def test_access_context_refuses_bad_fields_with_abathur_errors(fields: dict[str, Any]) -> None:
    try:
        context = AccessContext(**fields)
    except ValidationError:
        return
    assert context.session_id == fields["session_id"]


@pytest.mark.parametrize(
    "bad",
    [
        {"session_id": 1, "user_id": "a", "app_name": "b"},
        {"session_id": "s", "user_id": "a:b", "app_name": "b"},
        {"session_id": "s", "user_id": "\ud800", "app_name": "b"},
        {"session_id": "s", "user_id": "a"},
    ],
)
def test_access_context_errors_are_abathur_validation_errors(bad: dict[str, Any]) -> None:
    """Before, ``AccessContext(...)`` raised pydantic's own ValidationError."""
    with pytest.raises(ValidationError):
        AccessContext(**bad)


def test_a_method_table_entry_per_public_method() -> None:
    """The driver covers every public method of the four services."""
    from abathur.infrastructure.document_service import DocumentIndexService
    from abathur.infrastructure.memory_service import MemoryService
    from abathur.infrastructure.session_service import SessionService
    from abathur.infrastructure.task_service import TaskService

    for service, cls in [
        ("sessions", SessionService),
        ("memory", MemoryService),
        ("tasks", TaskService),
        ("documents", DocumentIndexService),
    ]:
        public = {n for n in vars(cls) if not n.startswith("_") and callable(getattr(cls, n))}
        assert public <= {method.name for method in SERVICES[service]}, service


Call = Callable[[Database], Awaitable[Any]]
REFUSED: list[tuple[str, Call]] = [
    ("limit past BIGINT", lambda db: db.tasks.audit_tail(limit=2**63)),
    ("list_events limit past INTEGER", lambda db: db.sessions.list_events(SESSION, limit=2**64)),
    ("recent_events past BIGINT", lambda db: db.sessions.get_session(SESSION, recent_events=2**63)),
    ("after_seq past INTEGER", lambda db: db.sessions.list_events(SESSION, after_seq=2**31)),
    ("expected_seq past INTEGER",
     lambda db: db.sessions.append_event(SESSION, {}, expected_seq=2**40)),
    ("iteration past INTEGER", lambda db: db.tasks.save_checkpoint(TASK, 2**31, {})),
    ("document id past BIGINT", lambda db: db.documents.get_document(2**63)),
    ("memory entry id past BIGINT",
     lambda db: db.tasks.record_audit(TASK, "x", memory_entry_id=2**64)),
    ("session id with a lone surrogate", lambda db: db.sessions.get_session("s\ud800")),
    ("user id with a lone surrogate",
     lambda db: db.sessions.create_session("s-x", "app", "\udc80")),
    ("user id filter with a lone surrogate",
     lambda db: db.sessions.list_active_sessions("\ud800")),
    ("state key with a lone surrogate", lambda db: db.sessions.set_state(SESSION, "\ud800", 1)),
    ("state key with NUL", lambda db: db.sessions.get_state(SESSION, "a\x00")),
    ("task id with a lone surrogate", lambda db: db.tasks.get_task("\ud800")),
    ("session id past the index entry limit",
     lambda db: db.sessions.create_session("s" * 3000, "app", "u")),
    ("user id past the index entry limit",
     lambda db: db.sessions.create_session("s-x", "app", "\U0001f600" * 700)),
    ("task id past the index entry limit", lambda db: db.tasks.create_task("p", id="t" * 3000)),
    ("agent id past the index entry limit",
     lambda db: db.tasks.create_agent("n", "s", "m", TASK, id="a" * 3000)),
    ("audit namespace past the index entry limit",
     lambda db: db.tasks.record_audit(TASK, "x", memory_namespace="n" * 3000)),
    ("session id with NUL", lambda db: db.sessions.create_session("s\x00", "app", "u")),
    ("sync_directory of an int", lambda db: db.documents.sync_directory(5)),
    ("sync_directory of bytes", lambda db: db.documents.sync_directory(b"/tmp")),
    ("sync_directory with an int pattern", lambda db: db.documents.sync_directory(HERE, 5)),
    ("sync_directory with a bad glob", lambda db: db.documents.sync_directory(HERE, "a**b/x")),
    ("sync_directory with a pattern longer than a file name may be",
     lambda db: db.documents.sync_directory(HERE, "é" * 1500)),
    ("sync_directory with a float batch",
     lambda db: db.documents.sync_directory(HERE, batch_size=1.5)),
    ("pending_documents of a string", lambda db: db.documents.pending_documents("x")),
    ("pending_documents past BIGINT", lambda db: db.documents.pending_documents(2**63)),
    ("get_document of a string", lambda db: db.documents.get_document("x")),
    ("get_document of a bool", lambda db: db.documents.get_document(True)),
    ("a status of 5000 digits", lambda db: db.sessions.update_status(SESSION, 10**5000)),
    ("a limit of 5000 digits", lambda db: db.tasks.audit_tail(limit=10**5000)),
    ("a pattern of 5000 digits", lambda db: db.documents.sync_directory(HERE, 10**5000)),
    ("a strategy of 5000 digits", lambda db: db.memory.consolidate_memories(NS, 10**5000)),
    ("an after_seq of 5000 digits",
     lambda db: db.sessions.list_events(SESSION, after_seq=10**5000)),
    ("prompt given as bytes", lambda db: db.tasks.create_task(prompt=b"summarise")),
    ("resource usage that is not JSON",
     lambda db: db.tasks.create_agent("n", "s", "m", TASK, resource_usage={"x": float("nan")})),
]  # fmt: skip


async def test_the_reported_cases_are_validation_errors(db: Database, docs: Path) -> None:
    """The fuzzing run's cases, one by one (on one database, to keep the run
    short): each was a raw exception, or stored on one backend and refused by
    the other, before."""
    await _prepare(db, docs)
    escaped: list[str] = []
    for name, call in REFUSED:
        try:
            await call(db)
        except ValidationError:
            continue
        except Exception as exc:  # reported below, by case
            escaped.append(f"{name}: {type(exc).__name__}")
        else:
            escaped.append(f"{name}: accepted")
    assert escaped == []
