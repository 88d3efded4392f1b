"""Strict JSON: the one serialiser every stored document goes through.

``dumps`` writes what both backends can hold and read back equal; ``check_json``
also refuses what JSON would silently change (tuples, non-string keys) and
returns the text, which JSON columns then store as it is (``JSONText``).
"""

from __future__ import annotations

import json
import re
from json.encoder import encode_basestring
from json.scanner import make_scanner
from typing import Any

from abathur.errors import ValidationError

MAX_JSON_DEPTH = 100
"""How deeply containers may nest in a stored document (``{"a": [1]}`` is 2
deep). SQLite's JSON functions stop at 1000, PostgreSQL's parser at its stack
depth, and pydantic's serialiser (the CLI's output) at about 250: one limit,
well inside all of them, checked on every write by ``check_json``."""

# A JSON escape of NUL that is not itself an escaped backslash followed by "u0000".
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


class JSONText(str):
    """A document that ``check_json`` has already serialised: ``dumps`` (and
    so every JSON column, on either backend) stores its text as it is."""

    __slots__ = ()


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _encoder() -> Any:
    """``json.dumps(ensure_ascii=False, allow_nan=False, separators=(",", ":"))``
    without its per-call set-up: the C encoder built once (it keeps no state
    between calls, so both threads may share it). Without the C accelerator,
    ``json.dumps`` itself. Called as ``_encode(value, 0)`` (the C encoder's
    own signature, 0 its indent level: no wrapper per call); returns the
    text's chunks."""
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)  # not in typeshed
    if c_make_encoder is None:  # pragma: no cover - CPython always has _json
        return lambda value, _level: (
            json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")),
        )
    # No circular-reference markers: a cycle ends in RecursionError, refused below.
    return c_make_encoder(None, _not_json, encode_basestring, None, ":", ",", False, False, False)


_encode = _encoder()


def dumps(value: Any) -> str:
    """Serialise to strict JSON, keeping unicode as is.

    Refused with ValidationError, on every backend alike: values JSON cannot
    hold (sets, bytes, objects), NaN and Infinity (not JSON), lone surrogates
    (not UTF-8), the NUL character (PostgreSQL's JSONB cannot store it) and
    containers that contain themselves.
    """
    if type(value) is JSONText:
        return str(value)
    try:
        text = "".join(_encode(value, 0))
        if not text.isascii():  # (a flag of the string: no scan) ASCII is UTF-8
            text.encode("utf-8")
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise ValidationError(f"not strict JSON: {exc}") from exc
    except RecursionError as exc:
        raise ValidationError("not storable JSON: circular or too deeply nested") from exc
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise ValidationError("not storable JSON: strings may not contain the NUL character")
    return text


# ``json.loads`` without its per-call layers (``decode``, ``raw_decode``, the
# whitespace regex): the C scanner ``json.loads`` itself runs, built once (it
# clears its key memo after each call and holds the GIL throughout, so both
# threads may share it, as they share ``json``'s default decoder).
_scan: Any = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # typeshed: the C one takes a decoder


def loads(text: str | bytes) -> Any:
    """``json.loads``, faster for a compact document (what ``dumps`` writes).

    The scanner reads one value from the first character; a text with
    anything around that value (whitespace, a BOM, trailing data), bytes, or
    one the scanner rejects goes to ``json.loads``, so results and errors are
    ``json.loads``' own."""
    if type(text) is str:
        try:
            value, end = _scan(text, 0)
        except (StopIteration, ValueError):
            return json.loads(text)
        if end == len(text):
            return value
    return json.loads(text)


def check_json(value: Any, what: str) -> JSONText:
    """Raise ValidationError, naming ``what``, unless ``value`` is storable JSON
    that reads back equal: tuples and non-string keys, which JSON would silently
    change (``{1: "a", "1": "b"}`` would even lose a key), are refused too.
    Documents nested more than ``MAX_JSON_DEPTH`` containers deep are refused.
    Returns the serialised text, which a JSON column then stores as it is."""
    try:
        text = JSONText(dumps(value))
    except ValidationError as exc:
        raise ValidationError(f"{what} is {exc}") from exc
    _check_shape(value, what)  # after dumps, which refuses cycles this walk would follow
    return text


def check_members(value: dict[str, Any], what: str) -> dict[str, JSONText]:
    """``check_json`` of each value of a JSON object, by key: what a merge of
    those keys into a stored document binds."""
    return {key: check_json(child, f"{what}[{key!r}]") for key, child in value.items()}


_CONTAINERS = (dict, list, tuple)
_SCALARS = frozenset((str, int, float, bool, type(None)))  # exactly these types


def _check_shape(value: Any, what: str) -> None:
    """What ``dumps`` would store changed: tuples (read back as lists) and keys
    that are not strings (read back as strings); and nesting deeper than
    ``MAX_JSON_DEPTH``. Walks the containers only, much cheaper than
    serialising and parsing the document again."""
    if type(value) is dict:  # the usual document: a flat object, done in one loop
        for key, child in value.items():
            if type(key) is not str or type(child) not in _SCALARS:
                break
        else:
            return
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_JSON_DEPTH and isinstance(item, _CONTAINERS):
            raise ValidationError(
                f"{what} is nested more than {MAX_JSON_DEPTH} levels deep "
                f"(the limit for stored JSON)"
            )
        if isinstance(item, dict):
            for key in item:
                if not isinstance(key, str):
                    raise ValidationError(
                        f"{what} does not survive a JSON round trip unchanged "
                        f"(non-string key {key!r})"
                    )
            pending += [(c, depth + 1) for c in item.values() if isinstance(c, _CONTAINERS)]
        elif isinstance(item, list):
            pending += [(c, depth + 1) for c in item if isinstance(c, _CONTAINERS)]
        elif isinstance(item, tuple):
            raise ValidationError(
                f"{what} does not survive a JSON round trip unchanged (tuple {item!r})"
            )
