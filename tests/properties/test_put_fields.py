"""``put_fields`` (``put_memory``'s validation without building the model for
the common input, with the value's JSON text) gives what
``validated(MemoryPut, ...)`` gives: the same values for every input the
model accepts, the same error for every other."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from abathur.domain import validated
from abathur.domain.memory import MAX_ACTOR_LENGTH, MemoryPut, put_fields
from abathur.errors import ValidationError
from abathur.strict_json import JSONText, dumps

_TEXT = st.one_of(
    st.sampled_from(["", "x", "a:b", "\x00", "\ud800", "é" * 300, "y" * (MAX_ACTOR_LENGTH + 1)]),
    st.text(max_size=12),
)
_NAMESPACES = st.one_of(
    st.sampled_from(["app:x", "user:u:notes", "session:", "app:", "bad", "app:a::b", "app:\x00"]),
    _TEXT,
)
_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.tuples(children),
        st.dictionaries(st.one_of(st.text(max_size=4), st.integers()), children, max_size=3),
    ),
    max_leaves=8,
)
_OTHERS: st.SearchStrategy[Any] = st.one_of(
    st.none(), st.integers(), st.just(b"x"), st.just(["app:x"]), st.just(uuid.UUID(int=7))
)


def _either(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a value of the right type (so that whole inputs often pass)."""
    return st.one_of(values, values, values, _OTHERS)


def _outcome(call: Any) -> tuple[str, Any]:
    try:
        return "ok", call()
    except ValidationError as exc:
        return "error", str(exc)


_VALID = ("app:x", "k", {"a": 1}, "semantic", "me", "t1", None)
_FIELDS = (
    _either(_NAMESPACES),
    _either(_TEXT),
    _either(st.dictionaries(st.one_of(st.text(max_size=4), st.integers()), _JSON, max_size=3)),
    _either(st.sampled_from(["semantic", "episodic", "procedural", "other", ""])),
    _either(_TEXT),
    _either(_TEXT),
    _either(st.dictionaries(st.one_of(st.text(max_size=4), st.integers()), _JSON, max_size=2)),
)


@settings(max_examples=800, deadline=None)
@given(data=st.data(), changed=st.sets(st.integers(0, 6), min_size=0, max_size=7))
def test_put_fields_is_the_model(data: st.DataObject, changed: set[int]) -> None:
    """A valid input with some fields (often one) replaced by arbitrary ones."""
    fields = tuple(data.draw(_FIELDS[i]) if i in changed else _VALID[i] for i in range(len(_VALID)))

    def model() -> tuple[Any, ...]:
        names = ("namespace", "key", "value", "memory_type", "by", "task_id", "metadata")
        put = validated(MemoryPut, **dict(zip(names, fields, strict=True)))
        return tuple(getattr(put, name) for name in names)

    outcome = _outcome(lambda: put_fields(*fields))
    expected = _outcome(model)
    assert (outcome if outcome[0] == "error" else ("ok", outcome[1][0])) == expected
    if outcome[0] == "ok":  # the text, bound in the value's place on PostgreSQL
        got, text = outcome[1]
        assert text is None or (type(text) is JSONText and text == dumps(got[2]))


def test_the_common_input_is_returned_as_given() -> None:
    value, metadata = {"a": [1, {"b": None}]}, {"m": 1}
    got, _text = put_fields("app:x", "k", value, "semantic", "me", "t1", metadata)
    assert got == ("app:x", "k", value, "semantic", "me", "t1", metadata)
    assert got[2] is value and got[6] is metadata


def test_the_common_input_comes_with_its_text() -> None:
    value = {"b": "é", "a": [1.5, None]}
    fields, text = put_fields("app:x", "k", value, "semantic", "me", "t1", None)
    assert fields[2] is value and text == '{"b":"é","a":[1.5,null]}'
    # Through the model (a UUID task id): no text, the value serialised at the bind.
    assert put_fields("app:x", "k", value, "semantic", "me", uuid.UUID(int=7), None)[1] is None


def test_accepted_strings_are_kept_per_check(monkeypatch: Any) -> None:
    """A string accepted by one check (a task id) is not thereby accepted by
    another (a namespace); a refused one is refused again, with the same
    error; the set of accepted strings stays bounded."""
    from abathur.domain import memory

    valid = ("app:x", "k", {"a": 1}, "semantic", "me", "not-a-namespace", None)
    put_fields(*valid)  # "not-a-namespace" accepted as a task id
    as_namespace = ("not-a-namespace", *valid[1:])
    first = _outcome(lambda: put_fields(*as_namespace))
    assert first[0] == "error"
    assert _outcome(lambda: put_fields(*as_namespace)) == first
    monkeypatch.setattr(memory, "ACCEPTED_KEPT", 3)
    for i in range(10):
        put_fields(f"app:n{i}", "k", {}, "semantic", f"by{i}", f"t{i}", None)
        assert len(memory._ACCEPTED) <= 3
