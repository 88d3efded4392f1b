"""Namespace rules and whole-segment subtree matching, in Python and in SQL."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from abathur.domain.namespaces import (
    MAX_KEY_BYTES,
    MAX_NAMESPACE_BYTES,
    check_key,
    is_in_subtree,
    parse_namespace,
)
from abathur.errors import ValidationError
from abathur.infrastructure.database import Database
from abathur.repositories.subtree import in_subtree
from abathur.schema.models import MemoryEntry


@pytest.mark.parametrize(
    "namespace",
    [
        "user:alice",
        "user:alice:preferences",
        "session:s1",
        "app:abathur:x",
        "project:p",
        "user:a%_",
    ],
)
def test_valid_namespaces(namespace: str) -> None:
    assert parse_namespace(namespace) == namespace.split(":")


@pytest.mark.parametrize(
    ("namespace", "message"),
    [
        ("temp:scratch", "temp: data lives only in session state"),
        ("temp", "temp: data lives only in session state"),
        ("other:x", "must start with one of"),
        ("user", "needs at least one segment"),
        ("user:", "empty segment"),
        ("user::x", "empty segment"),
        ("user:x:", "empty segment"),
        ("", "must start with one of"),
        ("user:a\nb", "control character"),
        ("user:" + "a" * MAX_NAMESPACE_BYTES, "the limit is"),
        (42, "must be a string"),
    ],
)
def test_invalid_namespaces_name_the_problem(namespace: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_namespace(namespace)


def test_bare_prefix_only_when_allowed() -> None:
    assert parse_namespace("user", allow_prefix_only=True) == ["user"]
    with pytest.raises(ValidationError, match="temp:"):
        parse_namespace("temp", allow_prefix_only=True)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "must not be empty"),
        ("a" * (MAX_KEY_BYTES + 1), "the limit is"),
        ("a\x00", "NUL"),
        (3, "must be a string"),
    ],
)
def test_invalid_keys(key: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        check_key(key)


def test_keys_may_hold_wildcard_characters() -> None:
    assert check_key("50%_off\\") == "50%_off\\"


@pytest.mark.parametrize(
    ("namespace", "root", "inside"),
    [
        ("user:alice", "user:alice", True),
        ("user:alice:preferences", "user:alice", True),
        ("user:alice2", "user:alice", False),
        ("user:al", "user:alice", False),
        ("user:alice;x", "user:alice", False),
        ("user:alice0", "user:alice", False),
        ("user:aXb", "user:a_b", False),
        ("user:a_b:c", "user:a_b", True),
        ("user:abc", "user:a%", False),
        ("user:a\\b", "user:a\\", False),
        ("user:alice", "user", True),
    ],
)
def test_is_in_subtree(namespace: str, root: str, inside: bool) -> None:
    assert is_in_subtree(namespace, root) is inside


SEGMENT = st.text(alphabet="ab%_\\:;0~", min_size=0, max_size=4)


@given(namespace=SEGMENT, root=SEGMENT)
def test_python_twin_is_segment_prefix(namespace: str, root: str) -> None:
    expected = namespace == root or (
        namespace.split(":")[: len(root.split(":"))] == root.split(":")
        and len(namespace.split(":")) > len(root.split(":"))
    )
    assert is_in_subtree(namespace, root) is expected


async def test_sql_subtree_matches_the_python_twin(db: Database, task_id: str) -> None:
    """The byte-order range over the real column agrees with the Python rule."""
    names = [
        "user:a",
        "user:a:b",
        "user:ab",
        "user:a%",
        "user:a_",
        "user:a_:x",
        "user:a;",
        "user:a0",
        "user:a\\",
        "user:A",
        "user:a:b:c",
        "user:\u00e9",
        "user:\u00e9:x",
        "user:a~",
    ]
    for name in names:
        await db.memory.add_memory(name, "k", {}, "semantic", "me", task_id)
    async with db.transaction(write=False) as session:
        for root in [*names, "user", "user:a:", "user:\u00e9"]:
            found = set(
                (
                    await session.scalars(
                        select(MemoryEntry.namespace).where(in_subtree(MemoryEntry.namespace, root))
                    )
                ).all()
            )
            assert found == {n for n in names if is_in_subtree(n, root)}, root


def test_exactly_the_control_characters_are_refused_in_a_namespace() -> None:
    for code in [*range(0x3000), 0xFEFF, 0x10FFFF]:
        ch = chr(code)
        if 0xD800 <= code <= 0xDFFF:
            continue  # lone surrogates are refused as not text
        refused = code < 32 or code == 0x7F
        try:
            parse_namespace(f"user:a{ch}b")
        except ValidationError as exc:
            assert refused and "control character" in str(exc), hex(code)
        else:
            assert not refused, hex(code)
