"""Memory namespaces: ``prefix:segment[:segment...]``, matched by whole segments.

``user:alice`` is the root of a subtree holding ``user:alice`` itself and every
``user:alice:...``; it never matches ``user:alice2``. Matching is a byte-wise
range, ``ns = p OR (ns >= 'p:' AND ns < 'p;')`` (``;`` follows ``:`` in ASCII),
so ``%``, ``_`` and backslashes are ordinary characters and the database
serves it with an index range scan. On PostgreSQL the namespace column uses
the "C" collation so that its order is byte order there too.
"""

from __future__ import annotations

import re
from typing import Any

from abathur.errors import ValidationError

SEPARATOR = ":"
PERSISTENT_PREFIXES = ("session", "user", "app", "project")
# In UTF-8 bytes. Together they stay below PostgreSQL's limit for one btree
# index entry (2704 bytes) of the unique (namespace, key, version) index.
MAX_NAMESPACE_BYTES = 1024
MAX_KEY_BYTES = 1024
# A control character: C0 (below 32) or DEL. One regex search instead of a
# Python test per character (every read and write parses its namespace).
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def _utf8_size(text: str, what: str) -> int:
    """The UTF-8 length of ``text``; a lone surrogate (not text) is refused."""
    if str.isascii(text):  # (a flag of the string: no scan) one byte a character
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ValidationError(
            f"{what} is not valid text: {exc.reason} at position {exc.start}"
        ) from exc


def parse_namespace(namespace: Any, *, allow_prefix_only: bool = False) -> list[str]:
    """The segments of a valid memory namespace; ValidationError names the problem."""
    if not isinstance(namespace, str):
        raise ValidationError(f"namespace must be a string, got {type(namespace).__name__}")
    size = _utf8_size(namespace, "namespace")
    if size > MAX_NAMESPACE_BYTES:
        raise ValidationError(
            f"namespace is {size} bytes long in UTF-8; the limit is {MAX_NAMESPACE_BYTES}"
        )
    segments = namespace.split(SEPARATOR)
    prefix = segments[0]
    if prefix == "temp":
        raise ValidationError(
            f"namespace {namespace!r}: temp: data lives only in session state "
            "and is never persisted as memory"
        )
    if prefix not in PERSISTENT_PREFIXES:
        allowed = ", ".join(f"{p}:" for p in PERSISTENT_PREFIXES)
        raise ValidationError(f"namespace {namespace!r} must start with one of {allowed}")
    rest = segments[1:]
    if not rest and not allow_prefix_only:
        raise ValidationError(
            f"namespace {namespace!r} needs at least one segment after '{prefix}:'"
        )
    if "" in rest:
        raise ValidationError(f"namespace {namespace!r} has an empty segment")
    if CONTROL_CHARACTER.search(namespace):
        raise ValidationError(f"namespace {namespace!r} contains a control character")
    return segments


def check_key(key: Any) -> str:
    """``key`` unchanged if it is a valid memory key; ValidationError names the problem.

    Any characters are allowed (``%`` and ``_`` are ordinary) except NUL, which
    PostgreSQL text cannot hold, and lone surrogates, which are not text.
    """
    if not isinstance(key, str):
        raise ValidationError(f"key must be a string, got {type(key).__name__}")
    if not key:
        raise ValidationError("key must not be empty")
    size = _utf8_size(key, "key")
    if size > MAX_KEY_BYTES:
        raise ValidationError(f"key is {size} bytes long in UTF-8; the limit is {MAX_KEY_BYTES}")
    if "\x00" in key:
        raise ValidationError("key contains a NUL character")
    return key


def subtree_bounds(root: str) -> dict[str, str]:
    """The parameters of ``in_subtree``: the root, and the range holding its descendants."""
    return {"root": root, "lower": root + SEPARATOR, "upper": root + chr(ord(SEPARATOR) + 1)}


def is_in_subtree(namespace: str, root: str) -> bool:
    """The Python twin of ``in_subtree``."""
    return namespace == root or namespace.startswith(root + SEPARATOR)
