"""``event_batch`` (issue 16): ``append_events``' argument check without
pydantic for plain arguments. Whatever the arguments, it returns the same
fields as ``validated(EventBatch, ...)`` or raises the same ValidationError,
with the same message."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from abathur.domain import validated
from abathur.domain.sessions import EventBatch, PlainEventBatch, event_batch
from abathur.domain.values import MAX_COUNT, MAX_ID_BYTES
from abathur.errors import ValidationError


class Text(str):
    """A str subclass: not a plain ``str`` for the fast path."""


class Doc(dict):  # type: ignore[type-arg]
    """A dict subclass: not a plain ``dict`` for the fast path."""


EDGE_IDS: list[Any] = [
    "s", "x" * MAX_ID_BYTES, "x" * (MAX_ID_BYTES + 1), "é" * 512, "é" * 513, "", "\x00",
    "a\x00b", "\ud800", "\U0001f600", Text("s"), None, 1, True, b"s",
]  # fmt: skip
IDS = st.one_of(st.sampled_from(EDGE_IDS), st.text(max_size=20), st.text(max_size=1100))
DOCS = st.one_of(
    st.sampled_from([{}, {"k": 1}, {"k": (1, 2)}, {1: "a"}, {Text("k"): 1}, Doc(k=1), [], "{}"]),
    st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), st.integers(), max_size=3),
)
EVENTS = st.one_of(
    st.lists(DOCS, max_size=3),
    st.sampled_from([(), ({"k": 1},), None, {"k": 1}, "events"]),
)
DELTAS = st.one_of(st.none(), DOCS)
SEQS = st.one_of(
    st.none(),
    st.sampled_from([0, 1, MAX_COUNT, MAX_COUNT + 1, -1, True, False, 1.0, "1"]),
    st.integers(),
)


def outcome(check: Any, *args: Any) -> tuple[str, Any]:
    try:
        got = check(*args)
    except ValidationError as exc:
        return "error", str(exc)
    return "ok", (got.session_id, got.events, got.state_delta, got.expected_seq)


def through_pydantic(session_id: Any, events: Any, delta: Any, seq: Any) -> Any:
    return validated(
        EventBatch, session_id=session_id, events=events, state_delta=delta, expected_seq=seq
    )


@settings(max_examples=400, deadline=None)
@given(IDS, EVENTS, DELTAS, SEQS)
def test_same_fields_or_same_error_as_pydantic(
    session_id: Any, events: Any, delta: Any, seq: Any
) -> None:
    args = (session_id, events, delta, seq)
    assert outcome(event_batch, *args) == outcome(through_pydantic, *args)


def test_plain_arguments_take_the_fast_path() -> None:
    # The test above would pass with no fast path at all: these must take it.
    for args in [
        ("s", [{"type": "m"}], None, None),
        ("s", [{"a": 1}, {"b": [1]}], {"k": 1, "app:a": 2}, 0),
        ("x" * MAX_ID_BYTES, [], {}, MAX_COUNT),
    ]:
        assert type(event_batch(*args)) is PlainEventBatch
    assert type(event_batch("s", [Doc(k=1)], None, None)) is EventBatch
    assert type(event_batch(Text("s"), [{"k": 1}], None, None)) is EventBatch
