"""The ADK adapter's Sessions built without pydantic's validation, and its
storage marker read and written without pydantic's attribute hooks: whatever
the values, the Session is the one ``Session(...)`` plus the marker's
assignment gives (==, the same fields set, private attributes, extra, field
order and value types), and the marker reads and writes as pydantic's
``__getattr__`` / ``__setattr__`` do."""

from __future__ import annotations

from typing import Any

import pytest
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.sessions.session import Session
from google.genai import types
from hypothesis import given, settings
from hypothesis import strategies as st

from abathur.integrations import adk
from abathur.integrations.adk import AbathurSessionService
from abathur.strict_json import dumps


class Text(str):
    """A str subclass: Session(...) makes it a plain str."""


class Sub(Session):
    """A Session subclass: the marker goes through pydantic."""


def slow(
    app_name: Any, user_id: Any, session_id: Any, state: Any, seq: int, events: Any, at: Any
) -> Session:
    """What the adapter built before (ADK's own validation)."""
    session = Session(
        id=session_id,
        app_name=app_name,
        user_id=user_id,
        state=dict(state),
        events=events,
        last_update_time=at,
    )
    session._storage_update_marker = str(seq)
    return session


def same(a: Session, b: Session, *, shared: bool = True) -> None:
    assert a == b
    assert type(a) is type(b)
    assert a.model_fields_set == b.model_fields_set
    assert a.__pydantic_private__ == b.__pydantic_private__
    assert a.__pydantic_extra__ == b.__pydantic_extra__
    assert list(a.__dict__) == list(b.__dict__)
    assert [type(v) for v in a.__dict__.values()] == [type(v) for v in b.__dict__.values()]
    assert a._storage_update_marker == b._storage_update_marker
    if shared:  # a new container, the same values
        assert [id(v) for v in a.state.values()] == [id(v) for v in b.state.values()]
        assert [id(v) for v in a.events] == [id(v) for v in b.events]


def an_event(i: int) -> Event:
    return Event(
        author="agent",
        invocation_id=f"inv{i}",
        content=types.Content(role="model", parts=[types.Part(text="x" * i)]),
    )


IDS = st.one_of(st.text(max_size=12), st.sampled_from(["", "a/b", "é", "\x00", Text("t")]))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)
TIMES = st.one_of(st.floats(allow_nan=False), st.integers(0, 2**40), st.sampled_from([0.0, 1.5]))


def test_the_raw_session_applies_to_this_adk() -> None:
    assert adk._RAW_SESSION  # otherwise every Session goes through Session(...)


@settings(max_examples=300, deadline=None)
@given(
    app_name=IDS,
    user_id=IDS,
    session_id=IDS,
    state=st.dictionaries(st.text(max_size=6), JSON, max_size=4),
    seq=st.integers(0, 2**31),
    events=st.lists(st.integers(0, 5), max_size=3),
    at=TIMES,
)
def test_session_is_what_session_validation_gives(
    app_name: Any, user_id: Any, session_id: Any, state: Any, seq: int, events: Any, at: Any
) -> None:
    made = [an_event(i) for i in events]
    got = AbathurSessionService._session(app_name, user_id, session_id, state, seq, made, at)
    same(got, slow(app_name, user_id, session_id, state, seq, list(made), at))
    assert got.state is not state  # the caller's dict is not shared


@pytest.mark.parametrize("bad", [None, 1, True, b"x", ["x"], Text("t")])
def test_other_values_give_what_session_validation_gives(bad: Any) -> None:
    # (events are always the adapter's own list of Events)
    cases: list[tuple[Any, ...]] = [
        (bad, "u", "s", {}, 0, [], 1.0),
        ("a", bad, "s", {}, 0, [], 1.0),
        ("a", "u", bad, {}, 0, [], 1.0),
        ("a", "u", "s", {}, 0, [], bad),
    ]
    for args in cases:
        try:
            expected = slow(*args)
        except Exception as slow_error:
            with pytest.raises(type(slow_error)) as fast_error:
                AbathurSessionService._session(*args)
            assert str(fast_error.value) == str(slow_error)
        else:
            same(AbathurSessionService._session(*args), expected)


@pytest.mark.parametrize("cls", [Session, Sub])
def test_the_marker_and_time_are_set_as_pydantic_does(cls: type[Session]) -> None:
    session = cls(id="s", app_name="a", user_id="u")
    other = cls(id="s", app_name="a", user_id="u")
    assert adk._marker(session) is None is session._storage_update_marker
    adk._appended(session, 2.5, "7")
    other.last_update_time = 2.5
    other._storage_update_marker = "7"
    same(session, other)
    assert adk._marker(session) == "7" == session._storage_update_marker
    session._storage_update_marker = "8"
    assert adk._marker(session) == "8"


class Stub:
    """The core SessionService's ``append_events``, recorded."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    async def append_events(self, *args: Any, **kwargs: Any) -> int:
        self.calls.append((args, kwargs))
        return 3


class Hooked(AbathurSessionService):
    """BaseSessionService's hooks overridden (by themselves): the adapter
    calls them, as before."""

    def _apply_temp_state(self, session: Session, event: Event) -> None:
        super()._apply_temp_state(session, event)

    def _trim_temp_delta_state(self, event: Event) -> Event:
        return super()._trim_temp_delta_state(event)


def a_service(cls: type[AbathurSessionService]) -> tuple[AbathurSessionService, Stub]:
    service = object.__new__(cls)
    stub = Stub()
    service._db = type("Db", (), {"sessions": stub})()
    service._ready = True
    service._appending = {}
    return service, stub


DELTAS: list[Any] = [
    None, {}, {"a": 1}, {"temp:t": 1}, {"temp:t": [1], "a": 2, "app:k": 3, "user:u": {"x": 1}},
    {"a": object(), "temp:o": object()}, {"b": 1, "temp:b": 2, "a": 3},
]  # fmt: skip


@pytest.mark.parametrize("delta", DELTAS)
@pytest.mark.parametrize("marker", [None, "2", "x"])
@pytest.mark.parametrize("in_place", [False, True])
async def test_append_event_does_what_the_hooks_do(
    delta: Any, marker: str | None, in_place: bool
) -> None:
    assert AbathurSessionService._plain_hooks and not Hooked._plain_hooks
    results = []
    for cls in (AbathurSessionService, Hooked):
        service, stub = a_service(cls)
        session = Session(id="s", app_name="a", user_id="u", state={"k": 0, "temp:b": 9})
        session._storage_update_marker = marker
        if in_place:  # state_delta not in the fields set until the adapter trims it
            actions = EventActions()
            actions.state_delta.update(delta or {})
        else:
            actions = EventActions() if delta is None else EventActions(state_delta=dict(delta))
        event = Event(id="e", author="x", invocation_id="i", timestamp=5.0, actions=actions)
        got = await service.append_event(session, event)
        assert got is event
        results.append((session, event, stub.calls))
    (fast, fast_event, fast_calls), (slow_session, slow_event, slow_calls) = results
    same(fast, slow_session, shared=False)
    assert fast.events[0] is fast_event
    assert fast_event == slow_event
    assert fast_event.actions.model_fields_set == slow_event.actions.model_fields_set
    assert list(fast_event.actions.state_delta) == list(slow_event.actions.state_delta)
    assert [dumps(doc) for doc in fast_calls[0][0][1]] == [dumps(d) for d in slow_calls[0][0][1]]
    assert fast_calls[0][0][2] == slow_calls[0][0][2]
    assert fast_calls[0][1] == slow_calls[0][1]


def test_a_session_without_its_private_values_raises_as_pydantic_does() -> None:
    session = Session.model_construct(id="s", app_name="a", user_id="u")
    session.__pydantic_private__.clear()  # type: ignore[union-attr]
    with pytest.raises(AttributeError) as slow_error:
        session._storage_update_marker  # noqa: B018
    with pytest.raises(AttributeError) as fast_error:
        adk._marker(session)
    assert str(fast_error.value) == str(slow_error.value)
