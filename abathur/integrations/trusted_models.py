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
validator and ``model_post_init`` run as in ``model_validate_json``, in Rust,
with no Python in between. A no-op may name keys whose presence makes it
matter (ADK's routing of ``message``, ``state``, ...): a document whose text
holds one of them as a JSON string (``"message"``, anywhere in the document)
is validated in full. So is a document the fast validator refuses, so
``from_json`` returns what ``cls.model_validate`` of the parsed document
returns, and raises what it raises.

Nested models are validated by their own class's validator unless the
validator is built apart from them (``_use_prebuilt=False``, which pydantic
itself passes when it rebuilds a model); a pydantic-core without that argument
gets no fast validator, and every document is validated in full.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from pydantic_core import SchemaError, SchemaValidator

M = TypeVar("M", bound=BaseModel)

# A function of a model's schema known to change nothing in its dumped JSON,
# by qualified name ("module.Class.function"), and the keys whose presence in a
# document makes it matter (empty: never).
NoOps = Mapping[str, tuple[str, ...]]

_VALIDATORS = ("function-before", "function-after", "function-wrap")


def _qualname(function: Any) -> str:
    function = getattr(function, "__func__", function)  # a classmethod bound to its class
    return f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', '')}"


class _Stripper:
    """A copy of a core schema without the no-op validators and ``__init__``s."""

    def __init__(self, no_ops: NoOps):
        self.no_ops = no_ops
        self.used: set[str] = set()
        self.config: Any = None

    def strip(self, node: Any, owner: type[BaseModel]) -> Any:
        if isinstance(node, list):
            return [self.strip(item, owner) for item in node]
        if not isinstance(node, dict):
            return node
        while node.get("type") in _VALIDATORS and isinstance(node.get("function"), dict):
            name = _qualname(node["function"].get("function"))
            if name not in self.no_ops:
                break
            self.used.add(name)
            node = node["schema"]
        copied = {key: self.strip(value, owner) for key, value in node.items()}
        if copied.get("type") == "model":
            cls = copied["cls"]
            if cls is owner and self.config is None:
                self.config = copied.get("config")
            init = f"{cls.__module__}.{cls.__qualname__}.__init__"
            if copied.get("custom_init") and init in self.no_ops:
                self.used.add(init)
                copied["custom_init"] = False
        return copied


class StoredModel(Generic[M]):
    """``cls`` validated from its own dumps; see the module docstring."""

    def __init__(self, cls: type[M], no_ops: NoOps):
        self.cls = cls
        self._no_ops = dict(no_ops)
        self._validator: SchemaValidator | None = None
        self._mentions: re.Pattern[str] | None = None
        self._built = False

    @property
    def validator(self) -> SchemaValidator | None:
        """The fast validator, or None where pydantic-core cannot build it."""
        if not self._built:
            self._build()
        return self._validator

    def from_json(self, text: str) -> M:
        """``cls.model_validate(json.loads(text))``, without the no-ops."""
        return self.many_from_json([text])[0]

    def many_from_json(self, texts: Iterable[str]) -> list[M]:
        """``from_json`` of each of ``texts``."""
        validator = self.validator
        if validator is None:
            return [self._in_full(text) for text in texts]
        validate, mentions = validator.validate_json, self._mentions
        built: list[M] = []
        for text in texts:
            if mentions is None or mentions.search(text) is None:
                try:
                    built.append(validate(text))
                    continue
                except ValueError:  # pydantic's ValidationError: the full validation decides
                    pass
            built.append(self._in_full(text))
        return built

    def _in_full(self, text: str) -> M:
        return self.cls.model_validate(json.loads(text))

    def _build(self) -> None:
        stripper = _Stripper(self._no_ops)
        schema = stripper.strip(self.cls.__pydantic_core_schema__, self.cls)
        try:
            self._validator = SchemaValidator(schema, stripper.config, _use_prebuilt=False)
        except (TypeError, SchemaError):  # a pydantic-core before _use_prebuilt
            self._validator = None
        keys = sorted({key for name in stripper.used for key in self._no_ops[name]})
        if keys:  # each key as a JSON string: "message"
            self._mentions = re.compile("|".join(re.escape(json.dumps(k)) for k in keys))
        self._built = True
