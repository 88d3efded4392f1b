"""Values and pure rules: what services accept (``Input``) and return (``Record``
for tasks and documents, TypedDicts for sessions, events and memory)."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic import ValidationError as PydanticError

from abathur.errors import ValidationError

M = TypeVar("M", bound=BaseModel)


class Input(BaseModel):
    """What a service accepts: strict (a wrong type is an error, never silently
    converted), no unknown fields, immutable once validated."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Record(BaseModel):
    """A row read back from the database, as tasks and documents return it."""

    model_config = ConfigDict(from_attributes=True, frozen=True)


def validated(schema: type[M], /, **fields: Any) -> M:
    """Build an input model, turning pydantic's error into abathur's ValidationError."""
    try:
        return schema(**fields)
    except PydanticError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
        )
        raise ValidationError(problems) from exc


def text_arg(value: Any, what: str) -> str:
    """A non-empty string argument, or a ValidationError naming it: a number or
    None must not reach the database, where the backends would disagree."""
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{what} must be a non-empty string, not {value!r}")
    return value


def count_arg(value: Any, what: str, *, least: int) -> int:
    """An int argument of at least ``least`` (not a bool), or a ValidationError."""
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ValidationError(f"{what} must be an integer of at least {least}, not {value!r}")
    return value
