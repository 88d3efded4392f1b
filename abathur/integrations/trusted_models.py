"""Rebuild pydantic models from their own stored dumps without validating again.

An adapter stores a framework's pydantic object as its ``model_dump(mode="json")``
and reads it back many times (ADK reads a session's whole event log on every
turn). ``model_validate`` redoes work the write already did, and for Google's
genai types most of it is Python ``before`` validators that only warn or route
convenience arguments: about 45 us per ADK ``Event``, most of a ``get_session``.

``TrustedModels(allowed).build(cls, data)`` makes the same object from data of
that shape with ``model_construct``, converting JSON back to the field types
(nested models, ``Optional``, lists, dicts, sets, enums, literals, base64 bytes,
float from int) as validation would. A model is only constructed when every one
of its validators is in ``allowed`` (validators known to change nothing in
data that came from a dump) and every field's type is one of those above;
other models are validated as usual (the whole subtree). When the data does not
fit (an unknown key, a value of another type, a validator whose condition is
not met), ``build`` validates the whole object with ``model_validate`` instead,
so it never returns anything validation would not, and it raises what
validation raises. What it skips are field constraints (``ge=0``, lengths)
and the warnings of the allowed validators: the data was validated when it was
dumped.
"""

from __future__ import annotations

import base64
import copy
import enum
import functools
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, RootModel

Converter = Callable[[Any], Any]

# A validator known to change nothing in dumped data: (class qualname as
# "module.Class", validator name) -> None (never changes anything) or the name
# of the field whose falsy value makes it a no-op (else the model is validated).
Allowed = Mapping[tuple[str, str], str | None]


class _Mismatch(Exception):
    """The data does not fit the fast path: validate instead."""


def _identity(value: Any) -> Any:
    return value


def _str(value: Any) -> Any:
    if type(value) is not str:
        raise _Mismatch
    return value


def _bool(value: Any) -> Any:
    if type(value) is not bool:
        raise _Mismatch
    return value


def _int(value: Any) -> Any:
    if type(value) is not int:
        raise _Mismatch
    return value


def _float(value: Any) -> Any:
    kind = type(value)
    if kind is float:
        return value
    if kind is int:
        return float(value)
    raise _Mismatch


def _base64(value: Any) -> Any:
    if type(value) is not str:
        raise _Mismatch
    try:
        return base64.urlsafe_b64decode(value)
    except ValueError as exc:
        raise _Mismatch from exc


_SCALARS: dict[Any, Converter] = {str: _str, bool: _bool, int: _int, float: _float}


def _exact(annotation: Any) -> frozenset[type] | None:
    """The exact types of the values validation keeps as they are, for
    ``str``, ``int`` and ``bool`` and their optional forms; else None."""
    if annotation in (str, int, bool):
        return frozenset((annotation,))
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        args = typing.get_args(annotation)
        kept = [a for a in args if a is not type(None)]
        if len(kept) == 1 and len(args) == 2 and kept[0] in (str, int, bool):
            return frozenset((kept[0], type(None)))
    return None


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class TrustedModels:
    """Builders of pydantic models from their dumps; see the module docstring."""

    def __init__(self, allowed: Allowed):
        self._allowed = dict(allowed)
        self._models: dict[type[BaseModel], Converter] = {}

    def build(self, cls: type[BaseModel], data: Any) -> Any:
        """``cls.model_validate(data)``, without validating what a dump of
        ``cls`` already guarantees."""
        try:
            return self._model(cls)(data)
        except _Mismatch:
            return cls.model_validate(data)

    # ------------------------------------------------------------ converters

    def _model(self, cls: type[BaseModel]) -> Converter:
        found = self._models.get(cls)
        if found is not None:
            return found
        # Filled in below; registered first, as a model's fields may refer to it.
        kept: dict[str, frozenset[type]] = {}  # fields whose value is kept as it is
        converted: dict[str, Converter] = {}
        guards: list[str] = []
        plan: list[Callable[[dict[str, Any]], Any]] = []

        def convert(data: Any) -> Any:
            if type(data) is not dict or not plan:
                raise _Mismatch
            values = dict(data)
            for key, value in data.items():
                kinds = kept.get(key)
                if kinds is not None:
                    if type(value) not in kinds:
                        raise _Mismatch
                    continue
                field = converted.get(key)
                if field is None:
                    raise _Mismatch
                values[key] = field(value)
            for guard in guards:
                if values.get(guard):
                    return cls.model_validate(data)
            return plan[0](values)

        self._models[cls] = convert
        allowed_guards = self._guards(cls)
        fields = None if allowed_guards is None else self._fields(cls)
        if allowed_guards is None or fields is None:
            self._models[cls] = cls.model_validate
            return cls.model_validate
        guards += allowed_guards
        for name, field in fields.items():
            if isinstance(field, frozenset):
                kept[name] = field
            else:
                converted[name] = field
        plan.append(_constructor(cls))
        return convert

    def _guards(self, cls: type[BaseModel]) -> list[str] | None:
        """The fields whose truthy value makes an allowed validator matter;
        None when the model has a validator that is not allowed, or anything
        else ``model_construct`` would not reproduce."""
        if issubclass(cls, RootModel) or cls.model_config.get("extra") == "allow":
            return None
        if cls.model_config.get("use_enum_values"):
            return None
        decorators = cls.__pydantic_decorators__
        names = [
            *decorators.validators,
            *decorators.field_validators,
            *decorators.root_validators,
            *decorators.model_validators,
        ]
        guards: list[str] = []
        for name in names:
            owner = next(
                (
                    base
                    for base in cls.__mro__
                    if name in vars(base) and isinstance(base, type) and issubclass(base, BaseModel)
                ),
                cls,
            )
            key = (_qualname(owner), name)
            if key not in self._allowed:
                return None
            guard = self._allowed[key]
            if guard is not None:
                guards.append(guard)
        return guards

    def _fields(self, cls: type[BaseModel]) -> dict[str, Converter | frozenset[type]] | None:
        """Each field's converter, or the exact types its value keeps as it is
        (``str``, ``int``, ``bool``, optional or not); None when a field is
        beyond this module."""
        by_name = bool(
            cls.model_config.get("populate_by_name") or cls.model_config.get("validate_by_name")
        )
        plan: dict[str, Converter | frozenset[type]] = {}
        for name, info in cls.model_fields.items():
            if info.alias not in (None, name) and not by_name:
                return None
            if info.validation_alias not in (None, name, info.alias):
                return None
            if any(type(m).__module__ != "annotated_types" for m in info.metadata):
                return None
            exact = _exact(info.annotation)
            if exact is not None:
                plan[name] = exact
                continue
            converter = self._converter(info.annotation, cls)
            if converter is None:
                return None
            plan[name] = converter
        return plan

    def _converter(self, annotation: Any, owner: type[BaseModel]) -> Converter | None:
        """How validation turns a dumped value into ``annotation``; None when
        this module does not know."""
        if annotation is Any or annotation is object:
            return _identity
        scalar = _SCALARS.get(annotation)
        if scalar is not None:
            return scalar
        if annotation is bytes:
            return _base64 if owner.model_config.get("val_json_bytes") == "base64" else None
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin is typing.Union or origin is types.UnionType:
            kept = [a for a in args if a is not type(None)]
            inner = self._converter(kept[0], owner) if len(kept) == 1 else self._union(kept, owner)
            if inner is None:
                return None
            return lambda value: None if value is None else inner(value)
        if origin is typing.Literal:
            allowed = set(args)
            kinds = {type(a) for a in args}

            def literal(value: Any) -> Any:
                if type(value) not in kinds or value not in allowed:
                    raise _Mismatch
                return value

            return literal
        if origin is list or origin is set:
            item = self._converter(args[0], owner) if args else _identity
            if item is None:
                return None
            if origin is list:

                def sequence(value: Any) -> Any:
                    if type(value) is not list:
                        raise _Mismatch
                    return [item(v) for v in value]

                return sequence

            def members(value: Any) -> Any:
                if type(value) is not list:
                    raise _Mismatch
                return {item(v) for v in value}

            return members
        if origin is dict:
            if args and args[0] is not str:
                return None
            entry = self._converter(args[1], owner) if args else _identity
            if entry is None:
                return None

            def mapping(value: Any) -> Any:
                if type(value) is not dict:
                    raise _Mismatch
                if entry is _identity:
                    return dict(value)
                return {k: entry(v) for k, v in value.items()}

            return mapping
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):

            def member(value: Any) -> Any:
                try:
                    return annotation(value)
                except ValueError as exc:
                    raise _Mismatch from exc

            return member
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return self._model(annotation)
        return None

    def _union(self, members: list[Any], owner: type[BaseModel]) -> Converter | None:
        """A union of JSON scalars and lists: pydantic's smart mode takes the
        member of the value's exact type; so does this (any other value, such
        as an int for a union without ``int``, is validated instead)."""
        by_type: dict[type, Converter] = {}
        for member in members:
            if member in _SCALARS:
                kind = member
            elif typing.get_origin(member) is list:
                kind = list
            else:
                return None
            converter = self._converter(member, owner)
            if converter is None or kind in by_type:
                return None
            by_type[kind] = converter

        def pick(value: Any) -> Any:
            converter = by_type.get(type(value))
            if converter is None:
                raise _Mismatch
            return converter(value)

        return pick


_IMMUTABLE = (type(None), bool, int, float, str, bytes, enum.Enum)


def _constructor(cls: type[BaseModel]) -> Callable[[dict[str, Any]], Any]:
    """``cls.model_construct(**values)`` for values of every field by its name,
    without its per-call walk over the field definitions: the defaults are
    sorted out once. The first call checks the result against
    ``model_construct``'s; should they ever differ (another pydantic), every
    call is ``model_construct``'s."""
    template: dict[str, Any] = {}
    factories: list[tuple[str, Callable[[], Any]]] = []
    required: list[str] = []
    for name, info in cls.model_fields.items():
        if info.default_factory is not None:
            if getattr(info, "default_factory_takes_validated_data", True):
                return lambda values: cls.model_construct(**values)
            template[name] = None
            factories.append((name, info.default_factory))  # type: ignore[arg-type]
        elif info.is_required():
            template[name] = None
            required.append(name)
        elif isinstance(info.default, _IMMUTABLE):
            template[name] = info.default
        elif type(info.default) in (list, dict, set) and not info.default:
            template[name] = None
            factories.append((name, type(info.default)))
        else:
            template[name] = None
            factories.append((name, functools.partial(copy.deepcopy, info.default)))
    post_init = bool(cls.__pydantic_post_init__)
    new = cls.__new__
    setattr_ = object.__setattr__
    mode = ["unchecked"]  # then "fast", or "slow" (model_construct's)

    def make(values: dict[str, Any]) -> Any:
        if mode[0] != "fast":
            return first(values) if mode[0] == "unchecked" else cls.model_construct(**values)
        for name in required:
            if name not in values:
                raise _Mismatch
        fields = template.copy()
        for name, factory in factories:
            if name not in values:
                fields[name] = factory()
        fields.update(values)
        model = new(cls)
        setattr_(model, "__dict__", fields)
        setattr_(model, "__pydantic_fields_set__", set(values))
        setattr_(model, "__pydantic_extra__", None)
        setattr_(model, "__pydantic_private__", None)
        if post_init:
            model.model_post_init(None)
        return model

    def first(values: dict[str, Any]) -> Any:
        reference = cls.model_construct(**values)
        mode[0] = "fast"
        built = make(dict(values))
        same = (
            built == reference
            and built.model_fields_set == reference.model_fields_set
            and list(vars(built)) == list(vars(reference))
        )
        mode[0] = "fast" if same else "slow"
        return reference

    return make
