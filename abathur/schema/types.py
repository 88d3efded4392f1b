"""Column types shared by every model: UTC timestamps and JSON documents.

Both are dialect-neutral. On SQLite a JSON document is TEXT (guarded by a
``json_valid`` CHECK in the model) and a timestamp is naive UTC text; on
PostgreSQL they are JSONB (``json`` for a log's entries: ``JSONLog``) and
TIMESTAMPTZ. Python always sees parsed JSON and
timezone-aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Dialect, Text
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import ARRAY, JSON, JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine

from abathur.errors import ValidationError
from abathur.strict_json import dumps, loads


class _SQLiteDateTime(sqlite.DATETIME):
    """SQLite's DATETIME text in SQLAlchemy's default storage format
    (``2026-01-31 12:00:00.000000``), written by ``isoformat``, which renders
    the same text about three times faster than its ``%``-formatting."""

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any]:
        def process(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat(" ", "microseconds")

        return process


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    Naive datetimes are refused on the way in: a naive value has no defined
    instant, and guessing its zone is how timestamps silently drift.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return _SQLiteDateTime()  # type: ignore[no-untyped-call]
        return super().load_dialect_impl(dialect)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValidationError(f"naive datetime {value!r}: pass a timezone-aware value")
        if value.tzinfo is not UTC:
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

    def result_processor(self, dialect: Dialect, coltype: Any) -> Callable[[Any], Any] | None:
        """On SQLite, the text's parse (the dialect's own) and
        ``process_result_value`` in one function: reads convert every
        timestamp of every row. The text we store (``2026-01-31 12:00:00``,
        with or without six digits of microseconds) is read with its zone
        by ``fromisoformat``: several times faster than a naive parse and
        ``replace(tzinfo=UTC)``, and the same datetime; any other text takes
        the dialect's parse."""
        if dialect.name != "sqlite":
            return _aware_utc_processor(self, dialect, coltype)
        parse = self.load_dialect_impl(dialect).result_processor(dialect, coltype)
        if parse is None:  # pragma: no cover - SQLite's DATETIME always parses text
            return super().result_processor(dialect, coltype)
        read_utc = datetime.fromisoformat

        def process(value: Any) -> datetime | None:
            if value is None:
                return None
            if type(value) is str and len(value) in _STORED_LENGTHS and value[10] == " ":
                try:
                    return read_utc(value + "+00:00")
                except ValueError:
                    pass
            parsed: datetime = parse(value)  # type: ignore[assignment]
            if parsed.tzinfo is None:
                return parsed.replace(tzinfo=UTC)
            return parsed.astimezone(UTC)

        return process


_STORED_LENGTHS = (19, 26)  # len("2026-01-31 12:00:00"), with ".000000"


def _aware_utc_processor(
    type_: UTCDateTime, dialect: Dialect, coltype: Any
) -> Callable[[Any], Any] | None:
    """``UTCDateTime``'s result processor on PostgreSQL: a timestamp the
    driver already returns in UTC (asyncpg's ``timestamptz``: tzinfo is
    ``datetime.UTC``) is returned as it is, as ``astimezone(UTC)`` would
    return it (the same object), without the decorator's generic wrapping
    (every row of a read converts each timestamp); any other value takes
    ``process_result_value``."""
    if type_.impl_instance.result_processor(dialect, coltype) is not None:
        return super(UTCDateTime, type_).result_processor(dialect, coltype)
    convert = type_.process_result_value

    def process(value: datetime | None) -> datetime | None:
        if value is None or value.tzinfo is UTC:
            return value
        return convert(value, dialect)

    return process


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

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """On SQLite, ``process_bind_param`` without the decorator's generic
        wrapping (the text column converts nothing more): a bulk write binds
        a document or two per row."""
        if dialect.name == "postgresql" or self.load_dialect_impl(dialect).bind_processor(dialect):
            return super().bind_processor(dialect)
        return _dump_document

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return value
        return loads(value)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Callable[[Any], Any] | None:
        """On SQLite, ``loads`` itself (``process_result_value`` without the
        decorator's generic wrapping): every read parses its documents."""
        if dialect.name == "postgresql":
            # The driver's own decoding (asyncpg's codec) is the whole of it:
            # ``process_result_value`` returns PostgreSQL's values unchanged.
            return self.impl_instance.result_processor(dialect, coltype)
        return _load_document


class JSONLog(JSONDocument):
    """``JSONDocument`` for a log's entries, stored as written: TEXT on SQLite
    (as ``JSONDocument``) and ``json`` on PostgreSQL, which keeps the text it
    was given (validated, not converted), where JSONB stores a binary form
    the server converts back to text at every read. Python sees the same
    parsed JSON: same binds, same codec (asyncpg's ``json`` and ``jsonb``
    codecs are the engine's ``dumps``/``loads`` alike). Only for documents
    written once and read whole (no JSONB operators, no equality in SQL):
    ``session_events.event`` (revision 0017)."""

    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSON(none_as_null=True))
        return dialect.type_descriptor(Text())


def _dump_document(value: Any) -> Any:
    return None if value is None else dumps(value)


def _load_document(value: Any) -> Any:
    if value == "{}":  # the usual metadata: a new empty dict, as loads returns
        return {}
    return None if value is None else loads(value)


def load_documents(texts: list[str]) -> list[Any]:
    """``[JSONDocument's SQLite result processor(t) for t in texts]`` for
    texts of stored documents (none NULL), in one parse of their JSON array:
    a call of the scanner per document costs more than the array's commas.
    Each stored text is one JSON value (the columns' ``json_valid`` CHECK),
    so the array holds exactly theirs; any surprise (a parse error, another
    count) takes the documents one by one, with their own results and errors."""
    if texts:
        try:
            documents = loads("[" + ",".join(texts) + "]")
        except (ValueError, RecursionError):
            pass
        else:
            if type(documents) is list and len(documents) == len(texts):
                return documents
    return [_load_document(text) for text in texts]


class JSONDocumentArray(TypeDecorator[list[Any]]):
    """PostgreSQL: a ``text[]`` of stored JSON texts (none NULL), read as
    their documents in one parse of their JSON array (``load_documents``):
    ``abathur_session_whole``'s events (revision 0018)."""

    impl = ARRAY(Text)
    cache_ok = True

    def process_result_value(self, value: list[str] | None, dialect: Dialect) -> list[Any] | None:
        return None if value is None else load_documents(value)
