"""What goes into a JSON column comes back equal, on both backends."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Text, select

from abathur.errors import ValidationError
from abathur.infrastructure.database import Database
from abathur.schema.models import MemoryEntry
from abathur.strict_json import MAX_JSON_DEPTH, check_json, dumps, loads

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"))
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.text(max_size=8).filter(lambda k: "\x00" not in k), children, max_size=5
        )
    ),
    max_leaves=25,
)


def with_database(max_examples: int) -> Any:
    """Hypothesis settings for a test that uses the ``db`` fixture: no
    per-example deadline (a database call is not a unit of pure Python), and
    one database for all the examples of a run."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )


def as_json_numbers(value: Any) -> Any:
    """JSON's own notion of equality: numbers by decimal value, whatever their Python type.

    PostgreSQL's JSONB keeps numbers as NUMERIC, so 1e20 may come back as the
    integer 100000000000000000000 (equal as a JSON number); -0.0 comes back 0.
    """
    return json.loads(dumps(value), parse_float=Decimal, parse_int=Decimal)


@with_database(max_examples=60)
@given(value=json_values)
async def test_json_column_round_trip(db: Database, value: Any) -> None:
    task = await db.tasks.create_task("json", input_data={"v": value})
    stored = await db.tasks.get_task(task.id)
    assert stored is not None
    if db.is_sqlite:  # TEXT keeps Python's own JSON rendering: exact equality
        assert stored.input_data == {"v": value}
    assert as_json_numbers(stored.input_data) == as_json_numbers({"v": value})


@with_database(max_examples=40)
@given(value=json_values)
async def test_event_round_trip(db: Database, value: Any) -> None:
    """Events are serialised once, by the check, and stored as that text."""
    if await db.sessions.get_session("rt") is None:
        await db.sessions.create_session("rt", "app", "u")
    seq = await db.sessions.append_events("rt", [{"v": value}])
    (stored,) = await db.sessions.list_events("rt", after_seq=seq - 1)
    event = {k: v for k, v in stored["event"].items() if k not in ("event_id", "timestamp")}
    if db.is_sqlite:
        assert event == {"v": value}
    assert as_json_numbers(event) == as_json_numbers({"v": value})


@with_database(max_examples=40)
@given(value=json_values, metadata=json_values)
async def test_memory_round_trip(db: Database, value: Any, metadata: Any) -> None:
    """A memory's value and metadata come back equal from every path: the
    version a write returns (on PostgreSQL: the row abathur_write_memory
    returns, fetched by asyncpg directly), get_memory, its history and a
    search (one-statement reads, asyncpg directly), and a read through
    SQLAlchemy's own execution (``db.transaction``)."""
    task = await db.tasks.get_task("rt") or await db.tasks.create_task("rt", id="rt")
    document, extra = {"v": value}, {"m": metadata}
    written = await db.memory.put_memory(
        "user:rt", "k", document, "semantic", by="me", task_id=task.id, metadata=extra
    )
    got = await db.memory.get_memory("user:rt", "k")
    history = await db.memory.get_memory_history("user:rt", "k")
    found = await db.memory.search_memories("user:rt")
    async with db.transaction(write=False) as session:
        row = (
            await session.execute(
                select(MemoryEntry.value, MemoryEntry.metadata_, MemoryEntry.updated_at).where(
                    MemoryEntry.id == written["id"]
                )
            )
        ).one()
    assert got == written == history[-1] == {k: v for k, v in found[0].items()}
    assert (row.value, row.metadata_, row.updated_at) == (
        written["value"], written["metadata"], written["updated_at"]
    )  # fmt: skip
    assert written["updated_at"].tzinfo is not None
    if db.is_sqlite:
        assert (written["value"], written["metadata"]) == (document, extra)
    assert as_json_numbers(written["value"]) == as_json_numbers(document)
    assert as_json_numbers(written["metadata"]) == as_json_numbers(extra)


def test_checked_documents_are_not_serialised_twice() -> None:
    text = check_json({"a": [1, "é", None]}, "doc")
    assert text == '{"a":[1,"é",null]}'
    assert dumps(text) == text  # stored as it is, not as a JSON string
    assert dumps(str(text)) == '"{\\"a\\":[1,\\"é\\",null]}"'


@pytest.mark.parametrize(
    "bad",
    [{"x": math.nan}, {"x": math.inf}, {"x": {1, 2}}, {"x": "\x00"}, {"\x00": 1}, {"x": "\ud800"}],
)
async def test_values_json_cannot_hold_are_refused_before_the_database(
    db: Database, bad: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError, match="input_data"):
        await db.tasks.create_task("bad", input_data=bad)


@settings(max_examples=200, deadline=None)
@given(value=json_values)
def test_dumps_is_strict_compact_json(value: Any) -> None:
    """The prebuilt encoder writes exactly what ``json.dumps`` would."""
    expected = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    assert dumps(value) == expected


@settings(max_examples=200, deadline=None)
@given(value=json_values, before=st.sampled_from(["", " ", "\n\t"]),
       after=st.sampled_from(["", " ", "\r\n"]))  # fmt: skip
def test_loads_reads_what_json_loads_reads(value: Any, before: str, after: str) -> None:
    """The scanner fast path gives ``json.loads``' result, whitespace around or not."""
    text = before + dumps(value) + after
    assert loads(text) == json.loads(text)


@settings(max_examples=200, deadline=None)
@given(value=json_values)
def test_loads_reads_postgresql_jsonb_text_as_json_loads_does(value: Any) -> None:
    """PostgreSQL's JSONB comes back as text with a space after each ``:`` and
    ``,`` (the engine's deserializer, asyncpg's codec): the same as ``json.loads``."""
    text = json.dumps(value, ensure_ascii=False)
    assert loads(text) == json.loads(text)


async def test_postgresql_documents_are_read_as_json_loads_reads_them(
    db: Database, task_id: str
) -> None:
    """A document read back on PostgreSQL (``loads``, the engine's JSON
    deserializer) equals ``json.loads`` of the server's own text of it, key
    order included."""
    if db.is_sqlite:
        pytest.skip("PostgreSQL's JSON codec")
    value = {"zz": [1, 2.5, -0.0, 10**30, None], "a": {"é": "\u2028", "": True}, "bb": "x"}
    row = await db.memory.put_memory("user:u", "k", value, "semantic", by="me", task_id=task_id)
    async with db.transaction(write=False) as session:
        text = (
            await session.execute(
                select(MemoryEntry.value.cast(Text)).where(MemoryEntry.id == row["id"])
            )
        ).scalar_one()
    assert list(row["value"].items()) == list(json.loads(text).items())
    assert row == await db.memory.get_memory("user:u", "k")


@pytest.mark.parametrize(
    "text", ["", " ", "\ufeff{}", "{} x", "[1] [2]", '{"a":', "nul", "1 2", "[1,]", '"\\ud800"x']
)
def test_loads_refuses_what_json_loads_refuses(text: str) -> None:
    """Errors and messages are ``json.loads``' own."""
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as found:
        loads(text)
    assert str(found.value) == str(expected.value)


def _deep(depth: int, inner: Any = 0) -> Any:
    """``depth`` containers, alternating objects and arrays, around ``inner``."""
    value = inner
    for level in range(depth):
        value = {"a": value} if level % 2 else [value]
    return value


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 300, 900])
def test_documents_nested_past_the_limit_are_refused(depth: int) -> None:
    with pytest.raises(ValidationError, match="event is nested more than 100 levels deep"):
        check_json(_deep(depth), "event")
    check_json(_deep(MAX_JSON_DEPTH), "event")  # the limit itself is fine
    check_json(_deep(MAX_JSON_DEPTH, inner="scalars do not count"), "event")


async def test_the_deepest_document_allowed_round_trips(db: Database) -> None:
    """What the limit lets in, both backends store and read back equal."""
    await db.sessions.create_session("deep", "app", "u")
    deepest = _deep(MAX_JSON_DEPTH - 1)  # inside the event object: MAX_JSON_DEPTH
    await db.sessions.append_event("deep", {"x": deepest}, {"k": _deep(MAX_JSON_DEPTH)})
    got = await db.sessions.get_session("deep")
    assert got is not None and got["events"][0]["x"] == deepest
    assert got["state"]["k"] == _deep(MAX_JSON_DEPTH)
    with pytest.raises(ValidationError, match="nested more than 100"):
        await db.sessions.append_event("deep", {"x": _deep(MAX_JSON_DEPTH)})
    with pytest.raises(ValidationError, match="nested more than 100"):
        await db.tasks.create_task("deep", input_data={"x": _deep(MAX_JSON_DEPTH)})


def _cyclic_dict() -> Any:
    loop: dict[str, Any] = {"a": 1}
    loop["self"] = loop
    return loop


def _cyclic_list() -> Any:
    loop: list[Any] = [1]
    loop.append({"again": loop})
    return loop


@pytest.mark.parametrize("make", [_cyclic_dict, _cyclic_list])
def test_containers_that_contain_themselves_are_refused(make: Any) -> None:
    # The shape walk alone would follow the cycle forever.
    with pytest.raises(ValidationError, match="state_delta is not storable JSON: circular"):
        check_json(make(), "state_delta")


state_keys = st.text(max_size=6).filter(lambda k: "\x00" not in k) | st.sampled_from(
    ['a"b', "a\\b", "tab\there", "new\nline", "ü", "$.x", "a[0]", ""]
)
states = st.dictionaries(state_keys, json_values, max_size=5)


@with_database(max_examples=40)
@given(initial=states, delta=states, key=state_keys.filter(bool), value=json_values)
async def test_state_merges_replace_whole_keys(
    db: Database, initial: dict[str, Any], delta: dict[str, Any], key: str, value: Any
) -> None:
    """The database merges a delta into the state (``json_set`` / ``||``): each
    key's value is replaced whole (a nested object is not merged into, a null
    is stored), every other key stays, whatever characters the keys hold.
    Each example has an app of its own: an ``app:`` or ``user:`` key is shared
    by every session of its app (and user), so one example's would show in
    the next one's state."""
    sid = f"merge-{uuid.uuid4().hex}"
    await db.sessions.create_session(sid, f"app-{sid}", "u", initial_state=initial)
    await db.sessions.append_event(sid, {"n": 1}, state_delta=delta)
    await db.sessions.set_state(sid, key, value)
    stored = await db.sessions.get_session(sid)
    assert stored is not None
    expected = {**initial, **delta, key: value}
    if db.is_sqlite:
        assert stored["state"] == expected
    assert as_json_numbers(stored["state"]) == as_json_numbers(expected)


@pytest.mark.parametrize(
    "stored",
    [None, "2026-01-31 12:00:00.000001", "2026-01-31 12:00:00", "2026-01-31 12:00:00.5",
     "2026-01-31T12:00:00+02:00", "2026-01-31 12:00:00.123+01", "2026-01-31 12:00:00.12345Z",
     "2026-01-31 12:00:00+01:00"],
)  # fmt: skip
def test_sqlite_result_processors_convert_as_the_decorators_do(stored: str | None) -> None:
    """The SQLite result processors of the JSON and timestamp columns (one
    function each) give what the dialect's parse followed by
    ``process_result_value`` gives."""
    from sqlalchemy.dialects import sqlite

    from abathur.schema.types import JSONDocument, UTCDateTime

    dialect = sqlite.dialect()
    stamp = UTCDateTime()
    parse = stamp.load_dialect_impl(dialect).result_processor(dialect, None)
    assert parse is not None
    processor = stamp.result_processor(dialect, None)
    assert processor is not None
    expected = stamp.process_result_value(None if stored is None else parse(stored), dialect)
    assert processor(stored) == expected
    assert stored is None or processor(stored).tzinfo is UTC
    assert repr(processor(stored)) == repr(expected)
    document = JSONDocument()
    to_value = document.result_processor(dialect, None)
    assert to_value is not None
    for text in (None, '{"a":[1,2.5,"x"]}', " {} "):
        assert to_value(text) == document.process_result_value(text, dialect)


@pytest.mark.parametrize(
    "stamp",
    [None, datetime(2026, 1, 31, 12, tzinfo=UTC), datetime(2026, 1, 31, 12, 0, 0, 5),
     datetime(2026, 1, 31, 14, tzinfo=timezone(timedelta(hours=2))),
     datetime(2026, 1, 31, 12, tzinfo=timezone(timedelta(0), "Z"))],
)  # fmt: skip
def test_postgresql_result_processors_convert_as_the_decorators_do(stamp: datetime | None) -> None:
    """On asyncpg, the timestamp columns' result processor returns a UTC
    value as it is (the object ``astimezone(UTC)`` returns) and converts any
    other as ``process_result_value`` does; the JSON columns' value is the
    driver's decoding, unchanged."""
    from sqlalchemy.dialects.postgresql import asyncpg

    from abathur.schema.types import JSONDocument, UTCDateTime

    dialect = asyncpg.dialect()  # type: ignore[no-untyped-call]
    column = UTCDateTime()
    processor = column._cached_result_processor(dialect, 1184)  # timestamptz
    assert processor is not None
    expected = column.process_result_value(stamp, dialect)
    assert repr(processor(stamp)) == repr(expected)
    if stamp is not None:
        assert processor(stamp).tzinfo is UTC
        assert (processor(stamp) is stamp) == (stamp.tzinfo is UTC)
    document = JSONDocument()
    to_value = document._cached_result_processor(dialect, 3802)  # jsonb
    for value in (None, {"a": [1, 2.5, "x"]}, []):
        assert (value if to_value is None else to_value(value)) == (
            document.process_result_value(value, dialect)
        )


@settings(max_examples=200, deadline=None)
@given(values=st.lists(json_values, max_size=6),
       spaces=st.lists(st.sampled_from(["", " ", "\n"]), min_size=6, max_size=6))  # fmt: skip
def test_load_documents_reads_each_document_as_the_column_does(
    values: list[Any], spaces: list[str]
) -> None:
    """``load_documents`` (a search's values, in one parse) gives, for each
    stored text, what the column's SQLite result processor gives for it."""
    from sqlalchemy.dialects import sqlite

    from abathur.schema.types import JSONDocument, load_documents

    to_value = JSONDocument().result_processor(sqlite.dialect(), None)
    assert to_value is not None
    texts = [space + dumps(value) for value, space in zip(values, spaces, strict=False)]
    documents = load_documents(texts)
    assert documents == [to_value(text) for text in texts]
    assert [type(d) for d in documents] == [type(to_value(text)) for text in texts]


@pytest.mark.parametrize("texts", [["1 2"], ["{}", "[1,]"], ["1", "2,3"]])
def test_load_documents_takes_texts_that_are_not_one_document_one_by_one(
    texts: list[str],
) -> None:
    """A text that is not one document is read alone, as the column reads it:
    an error, or (``"2,3"``, which would join into the array) that error too."""
    from abathur.schema.types import load_documents

    with pytest.raises(json.JSONDecodeError):
        load_documents(texts)


EXACT_EVENT = {"zz": 1e300, "a": 1e20, "mm": -0.0, "b": {"y": 1, "x": [2.5, 10**30]}}


async def test_events_come_back_as_written_on_both_backends(db: Database) -> None:
    """An event's numbers and key order come back as written, on every read
    path, as on SQLite: PostgreSQL stores events as ``json`` (revision 0017),
    which keeps the text; as JSONB, 1e300 came back as an integer of 301
    digits (not equal to the float), 1e20 as an int and the keys re-ordered."""
    await db.sessions.create_session("x", "app", "u")
    await db.sessions.append_events("x", [EXACT_EVENT])
    await db.sessions.append_event("x", EXACT_EVENT, {"k": 1})  # the one-statement append
    got = await db.sessions.get_session("x")
    as_text = await db.sessions.get_session("x", events_as_text=True)
    listed = await db.sessions.list_events("x")
    assert got is not None and as_text is not None
    reads = [
        *got["events"],
        *(loads(t) for t in as_text["events"]),
        *(e["event"] for e in listed),
    ]
    assert len(reads) == 6
    for read in reads:
        event = {k: v for k, v in read.items() if k not in ("event_id", "timestamp")}
        assert event == EXACT_EVENT
        assert list(event) == list(EXACT_EVENT) and list(event["b"]) == ["y", "x"]
        assert [type(event[k]) for k in ("zz", "a", "mm")] == [float, float, float]
        assert math.copysign(1, event["mm"]) == -1


@pytest.mark.parametrize("bad", [{"x": "\x00"}, {"\x00": 1}, {"x": ["a\x00b"]}])
async def test_events_json_or_jsonb_cannot_hold_are_refused_before_the_database(
    db: Database, bad: dict[str, Any]
) -> None:
    """The NUL character, which a ``json`` column would store and a ``jsonb``
    one refuses (so a downgrade of revision 0017 could not convert it), is
    refused by every append path on both backends, and nothing is stored."""
    await db.sessions.create_session("n", "app", "u")
    with pytest.raises(ValidationError, match="event"):
        await db.sessions.append_event("n", bad)
    with pytest.raises(ValidationError, match="event"):
        await db.sessions.append_events("n", [{"ok": 1}, bad], {"app:k": 1})
    assert await db.sessions.list_events("n") == []


@given(value=json_values)
def test_the_sqlite_bind_processor_writes_what_process_bind_param_writes(value: Any) -> None:
    """JSONDocument's SQLite bind processor (``process_bind_param`` without
    the decorator's wrapping) binds the same text, SQL NULL for None, and a
    checked document's text as it is."""
    from sqlalchemy.dialects import sqlite

    from abathur.schema.types import JSONDocument, JSONLog

    dialect = sqlite.dialect()
    for column in (JSONDocument(), JSONLog()):
        process = column.bind_processor(dialect)
        assert process is not None
        assert process(value) == column.process_bind_param(value, dialect)
        assert process(None) is None
        assert process(check_json(value, "v")) == dumps(value)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"a": (1,)}, "tuple"),
        ({1: "a"}, "non-string key"),
        ({"a": 1, "b": {2: "x"}}, "non-string key"),
        ({"a": [1, {"b": (2,)}]}, "tuple"),
        (type("Sub", (dict,), {})({"a": (1,)}), "tuple"),  # a dict subclass: walked too
        ({"a": type("Sub", (dict,), {})({3: 1})}, "non-string key"),
        ({"a": type("Sub", (list,), {})([(1,)])}, "tuple"),
    ],
)
def test_a_flat_object_and_a_nested_one_are_checked_alike(document: Any, message: str) -> None:
    """``check_json`` checks a flat object of scalars in one loop and walks
    anything else: a container at any place, of any dict or list subclass,
    is still walked."""
    with pytest.raises(ValidationError, match=message):
        check_json(document, "value")
    check_json(
        {"a": 1, "b": "x", "c": None, "d": 1.5, "e": True, "f": type("S", (str,), {})()}, "v"
    )
