"""Values and pure rules: what services accept (``Input``) and return (``Record``
for tasks and documents, TypedDicts for sessions, events and memory)."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic import ValidationError as PydanticError

from abathur.domain.values import check_text
from abathur.domain.values import count_arg as count_arg  # re-exported
from abathur.errors import ValidationError

M = TypeVar("M", bound=BaseModel)


class Input(BaseModel):
    """What a service accepts: strict (a wrong type is an error, never silently
    converted), no unknown fields, immutable once validated."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    def __init__(self, /, **data: Any) -> None:
        # Built directly by a caller (``AccessContext(...)``) as well as by
        # ``validated``: either way a bad field is abathur's ValidationError.
        try:
            super().__init__(**data)
        except PydanticError as exc:
            raise ValidationError(_problems(exc)) from exc


class Record(BaseModel):
    """A row read back from the database, as tasks and documents return it."""

    model_config = ConfigDict(from_attributes=True, frozen=True)


def _problems(exc: PydanticError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {_message(e)}" for e in exc.errors()
    )


def _message(error: Any) -> str:
    """An error's message; one raised by abathur's own validator is its text
    as raised, without pydantic's "Value error, " in front of it."""
    raised = error.get("ctx", {}).get("error") if error["type"] == "value_error" else None
    return str(raised) if isinstance(raised, ValueError) else str(error["msg"])


def validated(schema: type[M], /, **fields: Any) -> M:
    """Build an input model, turning pydantic's error into abathur's ValidationError."""
    try:
        return schema(**fields)
    except PydanticError as exc:
        raise ValidationError(_problems(exc)) from exc


def text_arg(value: Any, what: str) -> str:
    """A non-empty string argument, or a ValidationError naming it: a number or
    None must not reach the database, where the backends would disagree; nor
    may a lone surrogate, a NUL or more than ``MAX_ID_BYTES`` (``values.py``)."""
    return check_text(value, what)
