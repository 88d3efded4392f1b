"""``new_session`` (issue 16): ``create_session``'s argument check without
pydantic for plain arguments. Whatever the arguments, it returns the same
fields as ``validated(NewSession, ...)`` or raises the same ValidationError,
with the same message."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from abathur.domain import validated
from abathur.domain.sessions import NewSession, PlainNewSession, new_session
from abathur.domain.values import MAX_ID_BYTES
from abathur.errors import ValidationError


class Text(str):
    """A str subclass: not a plain ``str`` for the fast path."""


EDGE_IDS: list[Any] = [
    "s", "x" * MAX_ID_BYTES, "x" * (MAX_ID_BYTES + 1), "é" * 512, "é" * 513, "", " ",
    "\x00", "a\x00b", "\ud800", "x\udfffy", "\U0001f600", "\x7f", Text("s"), Text(""),
    None, 1, 1.5, True, b"s", ["s"],
]  # fmt: skip
IDS = st.one_of(st.sampled_from(EDGE_IDS), st.text(max_size=20), st.text(max_size=1100))
STATES = st.one_of(
    st.none(),
    st.sampled_from([{}, {"k": 1}, {"app:a": 1, "user:u": [1]}, {1: "a"}, {Text("k"): 1}]),
    st.sampled_from([[], (), "{}", 0, {"k": (1, 2)}, {"k": {1: 2}}]),
    st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), st.integers(), max_size=3),
)


def outcome(check: Any, *args: Any) -> tuple[str, Any]:
    try:
        got = check(*args)
    except ValidationError as exc:
        return "error", str(exc)
    return "ok", (got.id, got.app_name, got.user_id, got.project_id, got.state)


def through_pydantic(session_id: Any, app: Any, user: Any, project: Any, state: Any) -> Any:
    return validated(
        NewSession,
        id=session_id,
        app_name=app,
        user_id=user,
        project_id=project,
        state={} if state is None else state,
    )


@settings(max_examples=400, deadline=None)
@given(IDS, IDS, IDS, st.one_of(st.none(), IDS), STATES)
def test_same_fields_or_same_error_as_pydantic(
    session_id: Any, app: Any, user: Any, project: Any, state: Any
) -> None:
    args = (session_id, app, user, project, state)
    assert outcome(new_session, *args) == outcome(through_pydantic, *args)


def test_plain_arguments_take_the_fast_path() -> None:
    # The test above would pass with no fast path at all: these must take it.
    for args in [
        ("s", "app", "u", None, None),
        ("s", "app", "u", "p", {"k": 1, "app:a": [1]}),
        ("x" * MAX_ID_BYTES, "a", "u", None, {}),
        ("é" * (MAX_ID_BYTES // 2), "app", "u", None, None),  # 1,024 bytes in UTF-8
    ]:
        assert type(new_session(*args)) is PlainNewSession
    assert type(new_session("s", Text("app"), "u", None, None)) is NewSession
