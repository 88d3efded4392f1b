"""The rules every argument of every service obeys, whatever the backend.

Each backend refuses different things in its own way (PostgreSQL: NUL in
text, index entries over 2704 bytes, integers past the bound parameter's
type; SQLite: integers past 64 bits; both drivers: lone surrogates, which are
not text), so a service checks them first and raises ``ValidationError``
naming the argument, the same way on both.

``Id`` is any identifier or other indexed text (session, task, agent, user,
app and project ids, actors, filters); ``TaskIdValue`` also takes a
``uuid.UUID``, stored as its string form; ``Count`` is an int in the range of
an INTEGER column (limits, seq numbers, iterations, versions); ``RowId`` in the
range of a BIGINT. The same rules are offered as functions (``check_text``,
``task_id_arg``, ``count_arg``; ``text_arg`` in ``abathur.domain``) for
arguments that are not validated through a model.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, StrictInt

from abathur.domain.namespaces import _utf8_size
from abathur.errors import ValidationError

# In UTF-8 bytes: with two of them in one index entry (app_name, user_id) and
# the rest of the entry, still below PostgreSQL's btree limit (2704 bytes).
MAX_ID_BYTES = 1024
MAX_COUNT = 2**31 - 1  # INTEGER columns, and the int4 parameters they compare with
MAX_ROW_ID = 2**63 - 1  # BIGINT ids


def brief_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for an error message: cut to ``limit`` characters, and
    never an error itself (the repr of an int of 5000 digits raises)."""
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_text(
    value: Any, what: str, *, max_bytes: int | None = MAX_ID_BYTES, empty: bool = False
) -> str:
    """``value`` unchanged if it is a ``str`` that both backends store and
    compare alike: no lone surrogate, no NUL, at most ``max_bytes`` bytes in
    UTF-8 (``None``: no limit), not empty unless ``empty``. Otherwise
    ValidationError naming ``what``."""
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a string, not {type(value).__name__}")
    if not value and not empty:
        raise ValidationError(f"{what} must not be empty")
    size = _utf8_size(value, what)
    if max_bytes is not None and size > max_bytes:
        raise ValidationError(f"{what} is {size} bytes long in UTF-8; the limit is {max_bytes}")
    if "\x00" in value:
        raise ValidationError(f"{what} contains a NUL character")
    return value


def as_task_id(value: Any) -> Any:
    """A ``uuid.UUID`` task id as its string form (the specification's tests
    pass ``uuid.uuid4()``); anything else unchanged, for the checks to judge."""
    return str(value) if isinstance(value, uuid.UUID) else value


def task_id_arg(value: Any, what: str = "task_id") -> str:
    """A task id argument: a string or a ``uuid.UUID`` (see ``as_task_id``)."""
    return check_text(as_task_id(value), what)


def bool_arg(value: Any, what: str) -> bool:
    """A flag argument: a ``bool`` (not 0 or 1), or a ValidationError."""
    if not isinstance(value, bool):
        raise ValidationError(f"{what} must be a bool, not {brief_repr(value)}")
    return value


def count_arg(value: Any, what: str, *, least: int, most: int = MAX_COUNT) -> int:
    """An int argument (not a bool) in ``least..most``, or a ValidationError."""
    if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= most:
        raise ValidationError(
            f"{what} must be an integer from {least} to {most}, not {brief_repr(value)}"
        )
    return value


def _text(value: str) -> str:
    return check_text(value, "value")


def _long_text(value: str) -> str:
    return check_text(value, "value", max_bytes=None)


def _any_text(value: str) -> str:
    return check_text(value, "value", max_bytes=None, empty=True)


Id = Annotated[str, Field(strict=True), AfterValidator(_text)]
"""Indexed text: non-empty, no surrogate, no NUL, at most ``MAX_ID_BYTES``."""
Text = Annotated[str, Field(strict=True), AfterValidator(_long_text)]
"""Text that is not indexed (a prompt, a state key): like ``Id``, of any length."""
AnyText = Annotated[str, Field(strict=True), AfterValidator(_any_text)]
"""Like ``Text``, and may be empty."""
TaskIdValue = Annotated[str, BeforeValidator(as_task_id), Field(strict=True), AfterValidator(_text)]
"""A task id: an ``Id``, or a ``uuid.UUID`` stored as its string form."""
Count = Annotated[StrictInt, Field(ge=0, le=MAX_COUNT)]
"""A non-negative int an INTEGER column (and an int4 parameter) holds."""
PositiveCount = Annotated[StrictInt, Field(ge=1, le=MAX_COUNT)]
RowId = Annotated[StrictInt, Field(ge=1, le=MAX_ROW_ID)]
"""A BIGINT row id."""
