"""Validate pydantic models from their own stored JSON, without the Python
validators known to change nothing in it.

An adapter stores a framework's pydantic object as its ``model_dump(mode="json")``
and reads it back many times (ADK reads a session's whole event log on every
turn). For Google's genai types most of ``model_validate`` is Python run for
every nested model: a ``before`` validator that only logs type mismatches (an
object of another model class, which JSON cannot hold), ADK's routing of
convenience arguments (which a dump never holds) and ``Part``'s own
``__init__``, which validates each part a second time. About 30 us per ADK
``Event``, most of a ``get_session``.

``StoredModel(cls, no_ops).from_json(text)`` validates with a pydantic-core
validator built from ``cls.__pydantic_core_schema__`` without the functions
named in ``no_ops``: the field types, defaults, constraints, every other
validator and ``model_post_init`` run as in ``model_validate_json``, in Rust
but for those other validators and ``model_post_init`` themselves. A
model-level no-op may hold only for documents whose keys are all fields of
its model (``FIELDS_ONLY``: ADK's routing of
``message``, ``state``, ...): the fast validator refuses any other key of
that model, and such a document is validated in full, as is any document the
fast validator refuses. So ``from_json`` returns what ``cls.model_validate``
of the parsed document returns, and raises what it raises.

A document read back is keyed by field names (``model_dump``'s default), so
the fast validator looks fields up by name alone in models that accept names
and ignore or forbid other keys (``_by_name_only``): such a model then forbids
any other key, and a document holding an alias is validated in full.

Two kinds of no-op hold only for some documents, and the fast validator
refuses the others (which are then validated in full): ``EMPTY_ONLY``, a
field's ``after`` validator that returns an empty value as it is (ADK's
``EventActions._parse_auth_configs``): the field must be empty; and
``NonEmpty(fields)``, a ``model_post_init`` that changes nothing when those
fields hold a value (``Event.model_post_init`` gives an event without an id a
new one): they must be present and non-empty. A condition that cannot be put
on the schema (a field without a length) keeps the function.

``dropped`` names keys of the stored document that are not the model's (an
adapter's own, such as the ADK adapter's ``event_id``): the fast validator
accepts them as fields whose value is always refused and then omitted
(``on_error="omit"``), so they never reach the result, which is then what
validation returns without them. The validator of many documents requires
the keys (the ADK adapter's documents always hold them: then no Python runs
per document); a document without one is validated on its own by the
validator of one document, where the key's default is removed afterwards.

Nested models are validated by their own class's validator unless the
validator is built apart from them (``_use_prebuilt=False``, which pydantic
itself passes when it rebuilds a model); a pydantic-core without that argument
gets no fast validator, and every document is validated in full.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from pydantic_core import SchemaError, SchemaValidator

M = TypeVar("M", bound=BaseModel)

ALWAYS = "always"
"""A no-op whatever the document."""
FIELDS_ONLY = "fields only"
"""A model-level no-op for documents whose keys are all fields of its model."""
EMPTY_ONLY = "empty only"
"""A field's ``after`` validator that returns an empty value unchanged: a
no-op for documents where that field is empty (a dict, list, set or string of
length 0). The fast validator refuses any other value of the field."""


@dataclass(frozen=True)
class NonEmpty:
    """A model's ``model_post_init`` that changes nothing when each of
    ``fields`` is in the document with a non-empty value: the fast validator
    requires them, non-empty (a string, list, dict or set of length 1 or
    more), and refuses a document without them."""

    fields: tuple[str, ...]


# A function of a model's schema (a validator, a model's ``__init__`` or its
# ``model_post_init``) known to change nothing in its dumped JSON, by
# qualified name ("module.Class.function"): ALWAYS, FIELDS_ONLY, EMPTY_ONLY
# or NonEmpty.
NoOps = Mapping[str, "str | NonEmpty"]

_SIZED = ("str", "list", "dict", "set", "frozenset")

_VALIDATORS = ("function-before", "function-after", "function-wrap")


class _Unsupported(Exception):
    """The schema has a shape this module does not strip: no fast validator."""


def _qualname(function: Any) -> str:
    function = getattr(function, "__func__", function)  # a classmethod bound to its class
    return f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', '')}"


class _NotJson:
    """The one value a dropped key's schema accepts, which no JSON document holds."""


def _dropped_field(*, required: bool) -> dict[str, Any]:
    """A dropped key as a field: its value always refused, and then omitted
    (``on_error="omit"``: neither in the model's dict nor in its fields set).
    Where the key may be missing (``required=False``) its default, None, is
    put in the dict instead, for ``StoredModel._drop`` to remove."""
    schema: dict[str, Any] = {
        "type": "default",
        "schema": {"type": "literal", "expected": [_NotJson]},
        "on_error": "omit",
    }
    if not required:
        schema["default"] = None
    return {"type": "model-field", "schema": schema}


class _Stripper:
    """A copy of a core schema without the no-op validators and ``__init__``s;
    ``required``: a document without a ``dropped`` key is refused."""

    def __init__(
        self,
        no_ops: NoOps,
        owner: type[BaseModel],
        dropped: tuple[str, ...],
        *,
        required: bool = False,
    ):
        self.no_ops = no_ops
        self.owner = owner
        self.dropped = dropped
        self.required = required
        self.config: Any = None
        self.owners = 0  # model nodes of the owner's class

    def strip(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.strip(item) for item in node]
        if not isinstance(node, dict):
            return node
        if node.get("type") == "model":
            return self._model(node)
        node, _, empty_only = self._unwrap(node, model_level=False)
        if isinstance(node, dict) and node.get("type") == "model":
            return self._model(node)
        copied = {key: self.strip(value) for key, value in node.items()}
        if empty_only:
            copied["max_length"] = 0
        return copied

    def _unwrap(self, node: Any, *, model_level: bool) -> tuple[Any, bool, bool]:
        """``node`` without the no-op validators wrapped around it; whether
        one of them holds only for documents of the model's own fields, and
        whether one holds only for an empty value (then ``node`` is of a
        type with a length)."""
        fields_only = empty_only = False
        while (
            isinstance(node, dict)
            and node.get("type") in _VALIDATORS
            and isinstance(node.get("function"), dict)
        ):
            kind = self.no_ops.get(_qualname(node["function"].get("function")))
            if kind == EMPTY_ONLY:
                inner = node.get("schema")
                if (
                    model_level
                    or node["type"] != "function-after"
                    or not isinstance(inner, dict)
                    or inner.get("type") not in _SIZED
                ):
                    break
                empty_only = True
            elif kind == FIELDS_ONLY:
                if not model_level:
                    break
                fields_only = True
            elif kind != ALWAYS:
                break
            node = node["schema"]
        return node, fields_only, empty_only

    def _model(self, node: dict[str, Any]) -> dict[str, Any]:
        cls = node["cls"]
        inner, fields_only, _ = self._unwrap(node["schema"], model_level=True)
        inner = self.strip(inner)
        fields = inner  # the model-fields schema, inside the validators that are kept
        while isinstance(fields, dict) and fields.get("type") != "model-fields":
            fields = fields.get("schema")
        copied = {**node, "schema": inner}
        if isinstance(fields, dict) and fields.get("type") == "model-fields":
            _by_name_only(fields, node.get("config") or {})
        own = cls is self.owner
        if fields_only or (own and self.dropped):
            if not isinstance(fields, dict):
                raise _Unsupported(f"{cls.__qualname__}: no model-fields schema")
            if fields_only:
                fields["extra_behavior"] = "forbid"
            if own and self.dropped:
                if set(self.dropped) & set(fields["fields"]):
                    raise _Unsupported(f"{cls.__qualname__} has a field named as a dropped key")
                added = {key: _dropped_field(required=self.required) for key in self.dropped}
                fields["fields"] = {**fields["fields"], **added}
        if own:
            self.owners += 1
            self.config = node.get("config")
        if node.get("custom_init"):
            init = f"{cls.__module__}.{cls.__qualname__}.__init__"
            if self.no_ops.get(init) == ALWAYS:
                copied["custom_init"] = False
        post_init = node.get("post_init")
        if post_init:
            kind = self.no_ops.get(_qualname(getattr(cls, post_init, None)))
            if kind == ALWAYS or (
                isinstance(kind, NonEmpty)
                and isinstance(fields, dict)
                and _require_non_empty(fields, kind.fields)
            ):
                del copied["post_init"]
        return copied


def _require_non_empty(fields: dict[str, Any], names: tuple[str, ...]) -> bool:
    """``names`` made required fields of at least one item or character in
    the model-fields schema ``fields``; False (and ``fields`` unchanged) where
    one of them is not a field whose type has a length."""
    specs = fields["fields"]
    changed = {}
    for name in names:
        spec = specs.get(name)
        if not isinstance(spec, dict):
            return False
        schema = spec["schema"]
        if schema.get("type") == "default":  # the field becomes required
            schema = schema["schema"]
        if schema.get("type") not in _SIZED:
            return False
        least = max(1, schema.get("min_length") or 0)
        changed[name] = {**spec, "schema": {**schema, "min_length": least}}
    fields["fields"] = {**specs, **changed}
    return True


def _by_name_only(fields: dict[str, Any], config: Mapping[str, Any]) -> None:
    """A model's fields looked up by their names alone, where that changes
    nothing for a document keyed by field names (what ``model_dump`` writes):
    the model accepts names (``validate_by_name``), its aliases are plain
    strings that name no other field, and it ignores or forbids other keys.
    Other keys are then forbidden, so that a document holding an alias (or
    any key the model would ignore) is refused and validated in full. Each
    alias costs a second lookup per field and model instance."""
    specs = fields["fields"]
    aliases = {name: spec.get("validation_alias") for name, spec in specs.items()}
    if not any(aliases.values()) or config.get("validate_by_name") is not True:
        return
    extra = fields.get("extra_behavior") or config.get("extra_fields_behavior") or "ignore"
    if extra not in ("ignore", "forbid"):
        return  # "allow": extra keys are kept, forbidding them would change the model
    for name, alias in aliases.items():
        if alias is not None and (not isinstance(alias, str) or (alias != name and alias in specs)):
            return  # a path or choices, or a name of another field
    fields["fields"] = {
        name: {key: value for key, value in spec.items() if key != "validation_alias"}
        for name, spec in specs.items()
    }
    fields["extra_behavior"] = "forbid"


class StoredModel(Generic[M]):
    """``cls`` validated from its own dumps; see the module docstring."""

    def __init__(self, cls: type[M], no_ops: NoOps, *, dropped: Iterable[str] = ()):
        self.cls = cls
        self._no_ops = dict(no_ops)
        self._dropped = tuple(dropped)
        self._validator: SchemaValidator | None = None
        self._list_validator: SchemaValidator | None = None
        self._built = False

    @property
    def validator(self) -> SchemaValidator | None:
        """The fast validator, or None where pydantic-core cannot build it."""
        if not self._built:
            self._build()
        return self._validator

    def from_json(self, text: str) -> M:
        """``cls.model_validate(json.loads(text))`` (the ``dropped`` keys
        ignored), without the no-ops."""
        return self.many_from_json([text])[0]

    def many_from_json(self, texts: Iterable[str]) -> list[M]:
        """``from_json`` of each of ``texts``.

        The documents are validated together, as one JSON array of them (one
        call into pydantic-core, not one per document). If the array is
        refused, or does not hold one element per text, each text is validated
        on its own (then a refused document is validated in full).
        """
        texts = list(texts)
        if not self._built:
            self._build()
        many = self._list_validator
        if many is None:
            return [self._in_full(text) for text in texts]
        try:
            built: list[M] = many.validate_json("[" + ",".join(texts) + "]")
        except ValueError:  # pydantic's ValidationError, or not JSON
            built = []
        if len(built) != len(texts):
            return [self._one(text) for text in texts]
        return built

    def _one(self, text: str) -> M:
        assert self._validator is not None
        try:
            model: M = self._validator.validate_json(text)
        except ValueError:  # pydantic's ValidationError: the full validation decides
            return self._in_full(text)
        self._drop(model)
        return model

    def _drop(self, model: M) -> None:
        """``model`` without the defaults of the ``dropped`` keys its document
        did not hold (those it held were omitted in validation)."""
        values = model.__dict__
        for key in self._dropped:
            values.pop(key, None)

    def _in_full(self, text: str) -> M:
        document = json.loads(text)
        if self._dropped and isinstance(document, dict):
            for key in self._dropped:
                document.pop(key, None)
        return self.cls.model_validate(document)

    def _build(self) -> None:
        """The fast validator of one document and that of a JSON array of
        them (both None where pydantic-core cannot build them)."""
        self._built = True
        validators = []
        try:
            for required in (False, True):
                stripper = _Stripper(self._no_ops, self.cls, self._dropped, required=required)
                schema = stripper.strip(self.cls.__pydantic_core_schema__)
                if self._dropped and stripper.owners != 1:  # nested copies would keep them
                    raise _Unsupported(f"{self.cls.__qualname__} appears {stripper.owners} times")
                if required:
                    schema = {"type": "list", "items_schema": schema}
                validators.append(SchemaValidator(schema, stripper.config, _use_prebuilt=False))
        except (_Unsupported, TypeError, SchemaError):  # TypeError: before _use_prebuilt
            return
        self._validator, self._list_validator = validators
