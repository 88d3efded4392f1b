"""Public values: pydantic models that services accept and return."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticError

from abathur.errors import ValidationError

M = TypeVar("M", bound=BaseModel)


def validated(schema: type[M], /, **fields: Any) -> M:
    """Build an input model, turning pydantic's error into abathur's ValidationError."""
    try:
        return schema(**fields)
    except PydanticError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
        )
        raise ValidationError(problems) from exc
