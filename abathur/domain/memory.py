"""Milestone 2 memory values: the inputs MemoryService accepts, the dict it
returns (``MemoryDict``, built by ``memory_dict``) and the access scope."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, NamedTuple, NotRequired, Protocol, TypedDict, get_args

from pydantic import AfterValidator, Field, StrictInt

from abathur.domain import Input
from abathur.domain.namespaces import check_key, parse_namespace
from abathur.domain.values import TaskIdValue, brief_repr, check_text
from abathur.errors import AlreadyExistsError, NotFoundError, ValidationError
from abathur.strict_json import MAX_JSON_DEPTH, JSONText, check_json

MemoryType = Literal["semantic", "episodic", "procedural"]
MEMORY_TYPES: tuple[MemoryType, ...] = get_args(MemoryType)
ConsolidationStrategy = Literal["latest_wins", "merge", "llm_based"]
CONSOLIDATION_STRATEGIES: tuple[ConsolidationStrategy, ...] = get_args(ConsolidationStrategy)
MAX_SEARCH_LIMIT = 1000
MAX_NAMESPACE_LIST_LIMIT = 1000
# Offsets and filter integers must fit the databases' signed 64-bit integers.
MAX_INT64 = 2**63 - 1
MAX_ACTOR_LENGTH = 256


def json_object(value: dict[str, Any], what: str = "value") -> dict[str, Any]:
    """``value`` unchanged if it is a dict that survives a strict JSON round trip.

    NaN and Infinity are refused (strict JSON), and so is anything JSON would
    silently change (tuples, non-string keys nested inside) and the NUL
    character, which PostgreSQL's JSONB cannot hold.
    """
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object (dict), got {type(value).__name__}")
    check_json(value, what)
    return value


def _text(value: str) -> str:
    return check_text(value, "value")


def _namespace(value: str) -> str:
    parse_namespace(value)
    return value


def _subtree_root(value: str) -> str:
    parse_namespace(value, allow_prefix_only=True)
    return value


def _key(value: str) -> str:
    check_key(value)
    return value


def _json(value: dict[str, Any]) -> dict[str, Any]:
    return json_object(value)


def _metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else json_object(value, "metadata")


Namespace = Annotated[str, Field(strict=True), AfterValidator(_namespace)]
SubtreeRoot = Annotated[str, Field(strict=True), AfterValidator(_subtree_root)]
Key = Annotated[str, Field(strict=True), AfterValidator(_key)]
Actor = Annotated[
    str, Field(strict=True, min_length=1, max_length=MAX_ACTOR_LENGTH), AfterValidator(_text)
]
TaskId = TaskIdValue  # a str, or a uuid.UUID stored as its string form
JSONObject = Annotated[dict[str, Any], Field(strict=True), AfterValidator(_json)]
Version = Annotated[StrictInt, Field(ge=1, le=2**31 - 1)]  # an INTEGER column


class KeyRef(Input):
    namespace: Namespace
    key: Key


class VersionRef(KeyRef):
    version: Version | None = None


class NewMemory(KeyRef):
    value: JSONObject
    memory_type: MemoryType
    created_by: Actor
    task_id: TaskId
    metadata: Annotated[dict[str, Any] | None, Field(strict=True), AfterValidator(_metadata)] = None


class MemoryUpdate(KeyRef):
    value: JSONObject
    updated_by: Actor
    task_id: TaskId


class MemoryDeletion(KeyRef):
    deleted_by: Actor
    task_id: TaskId


class MemoryRestore(KeyRef):
    version: Version
    restored_by: Actor
    task_id: TaskId


class MemoryPublish(Input):
    from_namespace: Namespace
    to_namespace: Namespace
    key: Key
    published_by: Actor
    task_id: TaskId


class MemoryPut(KeyRef):
    value: JSONObject
    memory_type: MemoryType
    by: Actor
    task_id: TaskId
    metadata: Annotated[dict[str, Any] | None, Field(strict=True), AfterValidator(_metadata)] = None


PutFields = tuple[str, str, dict[str, Any], str, str, str, "dict[str, Any] | None"]


# Namespaces (``parse_namespace``) and texts (``check_text(..., "value")``:
# actors, task ids) that ``put_fields`` has accepted: a write repeats a
# few of them, and each check is a pure function of the string, so each is
# made once (up to ``ACCEPTED_KEPT`` kept; then the set starts afresh).
# Only plain ``str`` values come here, and only accepted ones: a refused value
# is checked again, and refused again with the same error, every time.
ACCEPTED_KEPT = 4096
_ACCEPTED: set[tuple[str, str]] = set()


def _accept(kind: str, value: str) -> None:
    if len(_ACCEPTED) >= ACCEPTED_KEPT:
        _ACCEPTED.clear()
    _ACCEPTED.add((kind, value))


def put_fields(
    namespace: Any,
    key: Any,
    value: Any,
    memory_type: Any,
    by: Any,
    task_id: Any,
    metadata: Any,
) -> tuple[PutFields, JSONText | None]:
    """``MemoryPut``'s fields, in its order, as ``validated(MemoryPut, ...)``
    gives them (the same values, the same errors, at a fraction of the cost),
    and the value's JSON text when its check made it (``check_json``, which
    ``dumps`` then stores as it is: the value is not serialised twice), else
    None.

    The common input (each argument of exactly the type the model wants, the
    objects' keys plain strings) is judged by the model's own field rules,
    called directly; anything else, and anything those rules refuse, goes
    through the model itself, whose result or error is then the answer. The
    model's checks being a superset of these, an input passes here only if
    the model would accept it, unchanged (it would copy the dicts)."""
    if (
        type(namespace) is str
        and type(key) is str
        and type(value) is dict
        and type(memory_type) is str
        and memory_type in MEMORY_TYPES
        and type(by) is str
        and 0 < len(by) <= MAX_ACTOR_LENGTH
        and type(task_id) is str
        and (metadata is None or type(metadata) is dict)
    ):
        try:
            if all(type(k) is str for k in value) and (
                metadata is None or all(type(k) is str for k in metadata)
            ):
                accepted = _ACCEPTED
                if ("namespace", namespace) not in accepted:
                    _namespace(namespace)
                    _accept("namespace", namespace)
                _key(key)
                text = check_json(value, "value")  # _json's check, its text kept
                if ("text", by) not in accepted:
                    _text(by)
                    _accept("text", by)
                if ("text", task_id) not in accepted:
                    check_text(task_id, "value")
                    _accept("text", task_id)
                _metadata(metadata)
                return (namespace, key, value, memory_type, by, task_id, metadata), text
        except Exception:  # the model below raises its own error for it
            pass
    put = MemoryPut(
        namespace=namespace,
        key=key,
        value=value,
        memory_type=memory_type,
        by=by,
        task_id=task_id,
        metadata=metadata,
    )
    fields = put.namespace, put.key, put.value, put.memory_type, put.by, put.task_id, put.metadata
    return fields, None


Offset = Annotated[StrictInt, Field(ge=0, le=MAX_INT64)]


class MemorySearch(Input):
    namespace_prefix: SubtreeRoot
    memory_type: MemoryType | None = None
    limit: Annotated[StrictInt, Field(ge=1, le=MAX_SEARCH_LIMIT)] = 50
    offset: Offset = 0


class NamespaceListing(Input):
    prefix: SubtreeRoot | None = None
    suffix: Annotated[str, Field(strict=True, min_length=1)] | None = None
    max_depth: Annotated[StrictInt, Field(ge=1)] | None = None
    limit: Annotated[StrictInt, Field(ge=1, le=MAX_NAMESPACE_LIST_LIMIT)] = 100
    offset: Offset = 0
    wildcard: Annotated[str, Field(strict=True, min_length=1, pattern=r"^[^:]+$")] | None = None
    min_depth: Annotated[StrictInt, Field(ge=1)] | None = None


def check_suffix(suffix: str) -> list[str]:
    """The segments of a ``list_namespaces`` suffix: whole, non-empty segments."""
    segments = suffix.split(":")
    if "" in segments:
        raise ValidationError(f"suffix {suffix!r} has an empty segment")
    if any(ord(ch) < 32 or ch == "\x7f" for ch in suffix):
        raise ValidationError(f"suffix {suffix!r} contains a control character")
    return segments


def ttl_arg(ttl: Any) -> timedelta | None:
    """``ttl`` if it is None or a positive timedelta; ValidationError otherwise."""
    if ttl is None:
        return None
    if not isinstance(ttl, timedelta):
        raise ValidationError(f"ttl must be a datetime.timedelta or None, not {brief_repr(ttl)}")
    if ttl <= timedelta(0):
        raise ValidationError(f"ttl must be positive, not {ttl}")
    return ttl


def expiry_after(now: datetime, ttl: timedelta) -> datetime:
    """``now + ttl``; a TTL reaching past the year 9999 is a ValidationError."""
    try:
        return now + ttl
    except OverflowError as exc:
        raise ValidationError(f"ttl={ttl} reaches past the year 9999") from exc


# ------------------------------------------------------------ value filters

FILTER_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in")
ORDERING_OPERATORS = ("$gt", "$gte", "$lt", "$lte")
# The most conditions (operators, ``$in`` options) in one search filter: every
# backend runs as many (SQLite's expressions nest at most 1,000 deep, and
# take at most 32,766 bound values), and both refuse more alike.
MAX_FILTER_CONDITIONS = 1000


@dataclass(frozen=True)
class FilterTerm:
    """One condition of a search filter: the value at ``path`` (object keys,
    outermost first) compared by ``operator`` with ``operand`` (a tuple of
    scalars for ``$in``)."""

    path: tuple[str, ...]
    operator: str
    operand: Any


def json_type(value: Any) -> str:
    """The JSON type of a parsed value: null, boolean, number, string, array, object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _beyond_int64(value: Any) -> bool:
    """An integer outside -2**63 .. 2**63 - 1 (not a bool)."""
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not -MAX_INT64 - 1 <= value <= MAX_INT64
    )


def _container(value: list[Any] | dict[str, Any], where: str) -> Any:
    """A list or object operand of an equality: strict JSON whose integers fit
    in 64 bits (beyond them SQLite holds a float and PostgreSQL the exact
    number, so the backends would disagree), returned as it is."""
    try:
        check_json(value, f"filter {where}")
    except (ValueError, TypeError) as exc:
        raise ValidationError(str(exc)) from exc
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif _beyond_int64(item):
            raise ValidationError(f"filter {where}: integer {item} does not fit in 64 bits")
    return value


def _scalar(value: Any, where: str, containers: bool = False) -> Any:
    if containers and isinstance(value, dict | list):
        return _container(value, where)
    if isinstance(value, dict | list | tuple):
        raise ValidationError(
            f"filter {where}: compare JSON scalars (string, number, boolean, null)"
            + (", lists or objects" if containers else "")
            + f"; reach into nested objects with a dotted field name, not {value!r}"
        )
    if _beyond_int64(value):
        raise ValidationError(f"filter {where}: integer {value} does not fit in 64 bits")
    try:
        check_json(value, f"filter {where}")
    except (ValueError, TypeError) as exc:
        raise ValidationError(str(exc)) from exc
    if value is not None and not isinstance(value, bool | int | float | str):
        raise ValidationError(f"filter {where}: {value!r} is not a JSON value")
    return value


def _field_path(field: Any) -> tuple[str, ...]:
    if not isinstance(field, str) or not field:
        raise ValidationError(
            f"Invalid filter key {field!r}: field names must be non-empty strings"
        )
    path = tuple(field.split("."))
    if "" in path:
        raise ValidationError(f"Invalid filter key {field!r}: it has an empty segment")
    if len(path) > MAX_JSON_DEPTH:  # no stored value nests deeper
        raise ValidationError(
            f"Invalid filter key {brief_repr(field)}: it names {len(path)} levels; "
            f"values nest at most {MAX_JSON_DEPTH}"
        )
    try:
        field.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(
            f"Invalid filter key {brief_repr(field)}: not valid text: "
            f"{exc.reason} at position {exc.start}"
        ) from exc
    for segment in path:
        if '"' in segment or "\\" in segment or any(ord(ch) < 32 for ch in segment):
            raise ValidationError(
                f"Invalid filter key {field!r}: a field name may not contain '\"', '\\' "
                "or control characters"
            )
    return path


def _number_operand(value: Any) -> Any:
    """An integer beyond 64 bits compares as the float nearest to it (or as an
    infinity beyond the float range); anything else is returned as it is."""
    if _beyond_int64(value):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    return value


def _unmatchable(value: Any) -> bool:
    """No stored value equals this operand: NaN and the infinities are not JSON,
    and a stored string never holds the NUL character."""
    if isinstance(value, float):
        return not math.isfinite(value)
    return isinstance(value, str) and "\x00" in value


def _never(path: tuple[str, ...]) -> FilterTerm:
    return FilterTerm(path, "$in", ())


def _ordering(path: tuple[str, ...], operator: str, value: float) -> FilterTerm:
    """An ordering against NaN or an infinity: it holds for every number, or
    for nothing."""
    if math.isnan(value):
        return _never(path)
    below = operator in ("$lt", "$lte")
    if (value > 0) == below:  # x < inf, x > -inf: every number
        return FilterTerm(path, "$gte", -sys.float_info.max)
    return _never(path)


def _count_conditions(filter: dict[Any, Any]) -> int:
    """The operators and ``$in`` options of a filter (a dict), as written."""
    count = 0
    for condition in filter.values():
        if not isinstance(condition, dict):
            count += 1
            continue
        for operator, raw in condition.items():
            count += len(raw) if operator == "$in" and isinstance(raw, list) else 1
    return count


def parse_filter(filter: Any) -> tuple[FilterTerm, ...]:
    """The terms of a ``search_memories`` filter, all of which must hold.

    ``{"status": "open"}`` is equality; ``{"priority": {"$gte": 3}}`` an
    operator (several in one dict all hold); ``"author.name"`` reaches into
    nested objects. ``$eq``, ``$ne`` and ``$in``'s options also take lists and
    objects, equal to a stored value of the same structure (object keys in any
    order, ``1`` equal to ``1.0``, lists in order; strict JSON, integers within
    64 bits); ``$gt``/``$gte``/``$lt``/``$lte`` take a number or a string. Operands no
    stored value can equal are accepted and compare as such: NaN, the
    infinities and strings holding NUL equal nothing (``$ne`` holds for
    all), every number is below infinity and none below NaN; an integer
    beyond 64 bits compares as the nearest float. At most
    ``MAX_FILTER_CONDITIONS`` operators and ``$in`` options in all. Anything
    else is a ValidationError naming the problem.
    """
    if filter is None:
        return ()
    if not isinstance(filter, dict):
        raise ValidationError(f"filter must be a dict, not {type(filter).__name__}")
    conditions = _count_conditions(filter)
    if conditions > MAX_FILTER_CONDITIONS:
        raise ValidationError(
            f"filter has {conditions} conditions (operators and $in options); "
            f"the limit is {MAX_FILTER_CONDITIONS}"
        )
    terms: list[FilterTerm] = []
    for field, condition in filter.items():
        path = _field_path(field)
        if not isinstance(condition, dict):
            condition = {"$eq": condition}
        if not condition:
            raise ValidationError(f"filter field {field!r}: empty operator object")
        for operator, raw in condition.items():
            where = f"{field}.{operator}"
            if operator not in FILTER_OPERATORS:
                raise ValidationError(
                    f"filter field {field!r}: unknown operator {operator!r}; "
                    f"use one of {', '.join(FILTER_OPERATORS)}"
                )
            if operator == "$in":
                if not isinstance(raw, list):
                    raise ValidationError(f"filter {where} takes a list of JSON values")
                options = [_number_operand(v) for v in raw]
                kept = tuple(_scalar(v, where, True) for v in options if not _unmatchable(v))
                terms.append(FilterTerm(path, operator, kept))
                continue
            operand = _number_operand(raw)
            if isinstance(operand, float) and not math.isfinite(operand):
                if operator == "$eq":
                    terms.append(_never(path))
                elif operator in ORDERING_OPERATORS:
                    terms.append(_ordering(path, operator, operand))
                continue  # $ne: holds for every value
            if operator in ("$eq", "$ne") and _unmatchable(operand):
                if operator == "$eq":
                    terms.append(_never(path))
                continue
            value = _scalar(operand, where, operator in ("$eq", "$ne"))
            if operator in ORDERING_OPERATORS and (value is None or isinstance(value, bool)):
                raise ValidationError(f"filter {where} compares numbers or strings, not {value!r}")
            terms.append(FilterTerm(path, operator, value))
    return tuple(terms)


class Consolidation(Input):
    namespace: SubtreeRoot
    strategy: ConsolidationStrategy
    consolidated_by: Actor
    task_id: TaskId | None = None


def _scope_id(value: str) -> str:
    if ":" in value:
        raise ValueError("must not contain ':' (it would name a sub-namespace of another scope)")
    if any(ord(ch) < 32 or ch == "\x7f" for ch in value):
        raise ValueError("must not contain control characters")
    return value


ScopeId = Annotated[
    str,
    Field(strict=True, min_length=1, max_length=256),
    AfterValidator(_text),
    AfterValidator(_scope_id),
]


class AccessContext(Input):
    """Who is asking: the namespaces a scoped memory view may read and write.

    Reads: ``session:<session_id>``, ``user:<user_id>``, ``app:<app_name>`` and,
    with a project, ``project:<project_id>`` (each with everything below it).
    Writes: the session and user subtrees; the app subtree only with
    ``can_write_app``; the project subtree only with ``can_write_project``.
    Identifiers may not contain ``:``, so that no scope names a part of another.
    """

    session_id: ScopeId
    user_id: ScopeId
    app_name: ScopeId
    project_id: ScopeId | None = None
    can_write_app: bool = False
    can_write_project: bool = False

    def readable_roots(self) -> list[str]:
        roots = [f"session:{self.session_id}", f"user:{self.user_id}", f"app:{self.app_name}"]
        if self.project_id is not None:
            roots.append(f"project:{self.project_id}")
        return roots

    def writable_roots(self) -> list[str]:
        roots = [f"session:{self.session_id}", f"user:{self.user_id}"]
        if self.can_write_app:
            roots.append(f"app:{self.app_name}")
        if self.can_write_project and self.project_id is not None:
            roots.append(f"project:{self.project_id}")
        return roots


class MemoryFields(Protocol):
    """What ``memory_dict`` reads: a memory version row (ORM object or plain row)."""

    @property
    def id(self) -> int: ...
    @property
    def namespace(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def value(self) -> Any: ...
    @property
    def memory_type(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def is_deleted(self) -> Any: ...
    @property
    def metadata_(self) -> Any: ...
    @property
    def created_by(self) -> str | None: ...
    @property
    def updated_by(self) -> str | None: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...


class MemoryDict(TypedDict):
    """One memory version as every MemoryService read and write returns it."""

    id: int
    namespace: str
    key: str
    value: dict[str, Any]
    memory_type: str
    version: int
    is_deleted: bool
    metadata: dict[str, Any] | None
    created_by: str | None
    updated_by: str | None
    created_at: datetime
    updated_at: datetime
    score: NotRequired[float]
    """Only in the results of a query search: the cosine similarity to the query, -1..1."""


def memory_not_found(namespace: str, key: str) -> NotFoundError:
    """A key that is not live (never written, deleted or expired)."""
    return NotFoundError(f"memory {namespace!r}/{key!r} not found")


def memory_exists(namespace: str, key: str, version: int) -> AlreadyExistsError:
    """``add_memory`` of a live key, whose current version is ``version``."""
    return AlreadyExistsError(
        f"memory {namespace!r}/{key!r} already exists (version {version}); use update_memory"
    )


def memory_dict(row: MemoryFields) -> MemoryDict:
    return {
        "id": row.id,
        "namespace": row.namespace,
        "key": row.key,
        "value": row.value,
        "memory_type": row.memory_type,
        "version": row.version,
        "is_deleted": bool(row.is_deleted),
        "metadata": row.metadata_,
        "created_by": row.created_by,
        "updated_by": row.updated_by,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


# ------------------------------------------------------------ bulk put (put_memories)

PUT_FIELDS = ("namespace", "key", "value", "memory_type", "by", "task_id")
PUT_OPTIONS = ("metadata", "ttl", "index")
_PUT_FIELDS = frozenset(PUT_FIELDS)
_PUT_NAMES = frozenset((*PUT_FIELDS, *PUT_OPTIONS))


class BulkPut(NamedTuple):
    """One valid item of ``put_memories``: ``put_memory``'s arguments after its
    checks, with the value's JSON text (``check_json``) ready to store. A named
    tuple: built in a fifth of the time a frozen dataclass takes (one per item)."""

    namespace: str
    key: str
    value: dict[str, Any]
    text: JSONText
    memory_type: str
    by: str
    task_id: str
    metadata: dict[str, Any] | None
    ttl: timedelta | None
    index: Any


# The namespaces, actors and task ids that ``_plain_put`` has accepted in a
# ``bulk_puts`` call (all plain ``str``): each is checked once per call.
_Seen = tuple[set[str], set[str], set[str]]


_tuple_new = tuple.__new__


class _Unusual(Exception):
    """An item the quick checks leave to pydantic (a str subclass, a UUID task id...)."""


def bulk_puts(items: Any) -> list[BulkPut]:
    """Every item of ``put_memories`` checked by ``put_memory``'s rules (``MemoryPut``
    and ``ttl_arg``); a ValidationError names the first bad item's index.

    Plain items (exact ``str`` and ``dict`` values) are checked by the very
    functions ``MemoryPut``'s validators call, each distinct namespace, actor
    and task id once; anything else, or any item those checks refuse, goes
    through ``MemoryPut`` itself, so the result and every error message are
    the ones ``put_memory`` would give. ``index`` is returned as given.
    """
    if isinstance(items, str | bytes | dict) or not isinstance(items, list | tuple):
        raise ValidationError(
            f"items must be a list of dicts (put_memory's arguments), not {type(items).__name__}"
        )
    seen: _Seen = (set(), set(), set())
    puts = []
    for number, item in enumerate(items):
        try:
            puts.append(_bulk_put(item, seen))
        except ValidationError as exc:
            raise ValidationError(f"item {number}: {exc}") from exc
    return puts


def _bulk_put(item: Any, seen: _Seen) -> BulkPut:
    if not isinstance(item, dict):
        raise ValidationError(
            f"must be a dict of put_memory's arguments, not {type(item).__name__}"
        )
    names = item.keys()
    if not (names == _PUT_FIELDS or _PUT_FIELDS <= names <= _PUT_NAMES):  # usually the first
        missing = [name for name in PUT_FIELDS if name not in item]
        if missing:
            raise ValidationError(f"missing {', '.join(missing)}")
        unknown = [name for name in item if name not in PUT_FIELDS and name not in PUT_OPTIONS]
        raise ValidationError(f"unknown field(s) {', '.join(map(repr, unknown))}")
    ttl = ttl_arg(item.get("ttl"))
    try:
        return _plain_put(item, ttl, seen)
    except (_Unusual, ValidationError):
        pass
    put = MemoryPut(**{name: item[name] for name in (*PUT_FIELDS, "metadata") if name in item})
    return BulkPut(
        namespace=put.namespace,
        key=put.key,
        value=put.value,
        text=check_json(put.value, "value"),
        memory_type=put.memory_type,
        by=put.by,
        task_id=put.task_id,
        metadata=put.metadata,
        ttl=ttl,
        index=item.get("index", True),
    )


def _plain_put(item: dict[str, Any], ttl: timedelta | None, seen: _Seen) -> BulkPut:
    """``MemoryPut``'s checks on an item of exact ``str`` and ``dict`` values."""
    namespace, key, value = item["namespace"], item["key"], item["value"]
    memory_type, by, task_id = item["memory_type"], item["by"], item["task_id"]
    metadata = item.get("metadata")
    if not (
        type(namespace) is str
        and type(key) is str
        and type(value) is dict
        and type(memory_type) is str
        and type(by) is str
        and type(task_id) is str
        and (metadata is None or type(metadata) is dict)
    ):
        raise _Unusual
    namespaces, actors, task_ids = seen
    if namespace not in namespaces:
        parse_namespace(namespace)
        namespaces.add(namespace)
    check_key(key)
    if memory_type not in MEMORY_TYPES:
        raise _Unusual
    if by not in actors:
        if not 1 <= len(by) <= MAX_ACTOR_LENGTH:
            raise _Unusual
        check_text(by, "value")
        actors.add(by)
    if task_id not in task_ids:
        check_text(task_id, "value")
        task_ids.add(task_id)
    text = check_json(value, "value")
    if metadata is not None:
        check_json(metadata, "metadata")
        metadata = dict(metadata)
    # ``tuple.__new__`` as ``BulkPut._make`` calls it, without the two Python
    # calls around it: the same named tuple (one per item).
    return _tuple_new(
        BulkPut,
        (namespace, key, dict(value), text, memory_type, by, task_id, metadata, ttl,
         item.get("index", True)),
    )  # fmt: skip
