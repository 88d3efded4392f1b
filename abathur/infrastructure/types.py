"""Column types shared by every model: UTC timestamps and JSON documents.

Both are dialect-neutral. On SQLite a JSON document is TEXT (guarded by a
``json_valid`` CHECK in the model) and a timestamp is naive UTC text; on
PostgreSQL they are JSONB and TIMESTAMPTZ. Python always sees parsed JSON and
timezone-aware UTC datetimes.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Dialect, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine

from abathur.errors import ValidationError


def utcnow() -> datetime:
    return datetime.now(UTC)


# A JSON escape of NUL that is not itself an escaped backslash followed by "u0000".
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


class JSONText(str):
    """A document that ``check_json`` has already serialised: ``dumps`` (and
    so every JSON column, on either backend) stores its text as it is."""

    __slots__ = ()


def dumps(value: Any) -> str:
    """Serialise to strict JSON, keeping unicode as is.

    Refused with ValidationError, on every backend alike: values JSON cannot
    hold (sets, bytes, objects), NaN and Infinity (not JSON), lone surrogates
    (not UTF-8), and the NUL character (PostgreSQL's JSONB cannot store it).
    """
    if type(value) is JSONText:
        return str(value)
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        text.encode("utf-8")
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise ValidationError(f"not strict JSON: {exc}") from exc
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise ValidationError("not storable JSON: strings may not contain the NUL character")
    return text


def loads(text: str | bytes) -> Any:
    return json.loads(text)


def check_json(value: Any, what: str) -> JSONText:
    """Raise ValidationError, naming ``what``, unless ``value`` is storable JSON
    that reads back equal: tuples and non-string keys, which JSON would silently
    change (``{1: "a", "1": "b"}`` would even lose a key), are refused too.
    Returns the serialised text, which a JSON column then stores as it is."""
    _check_shape(value, what)
    try:
        return JSONText(dumps(value))
    except ValidationError as exc:
        raise ValidationError(f"{what} is {exc}") from exc


def _check_shape(value: Any, what: str) -> None:
    """What ``dumps`` would store changed: tuples (read back as lists) and keys
    that are not strings (read back as strings). Walks the containers only,
    much cheaper than serialising and parsing the document again."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise ValidationError(
                        f"{what} does not survive a JSON round trip unchanged "
                        f"(non-string key {key!r})"
                    )
                if isinstance(child, dict | list | tuple):
                    pending.append(child)
        elif isinstance(item, list):
            pending.extend(c for c in item if isinstance(c, dict | list | tuple))
        elif isinstance(item, tuple):
            raise ValidationError(
                f"{what} does not survive a JSON round trip unchanged (tuple {item!r})"
            )


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    Naive datetimes are refused on the way in: a naive value has no defined
    instant, and guessing its zone is how timestamps silently drift.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValidationError(f"naive datetime {value!r}: pass a timezone-aware value")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class JSONDocument(TypeDecorator[Any]):
    """JSON stored as TEXT on SQLite and JSONB on PostgreSQL.

    SQL NULL and the JSON value ``null`` are different things: Python ``None``
    for the whole column is SQL NULL; ``None`` inside a document is JSON null.
    """

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB(none_as_null=True))
        return dialect.type_descriptor(Text())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return value
        return dumps(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return value
        return loads(value)
