"""The ADK adapter reads stored events from their JSON text without the
Python validators that change nothing in a dump
(``abathur.integrations.trusted_models``): whatever the event, the result is
what ``Event.model_validate`` of the stored document gives, and a document of
another shape is validated in full."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pydantic
import pytest
from google.adk.auth.auth_credential import AuthCredential, AuthCredentialTypes
from google.adk.auth.auth_tool import AuthConfig
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions, EventCompaction
from google.adk.tools.tool_confirmation import ToolConfirmation
from google.genai import types
from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from abathur.infrastructure.database import Database
from abathur.integrations import trusted_models
from abathur.integrations.adk import STORED_EVENTS, AbathurSessionService
from abathur.integrations.trusted_models import EMPTY_ONLY, FIELDS_ONLY, NonEmpty, StoredModel
from abathur.strict_json import dumps


def _events() -> list[Event]:
    text = types.Content(role="model", parts=[types.Part(text="hello")])
    return [
        Event(author="user", invocation_id="i1", content=text),
        Event(
            author="agent",
            invocation_id="i2",
            branch="a.b",
            content=types.Content(
                role="model",
                parts=[
                    types.Part(
                        function_call=types.FunctionCall(
                            id="c1", name="lookup", args={"q": [1, 2.5, {"x": None}], "n": 3}
                        ),
                        thought_signature=b"sig\x00\xff\xfe",
                    ),
                    types.Part(text="thinking", thought=True),
                ],
            ),
            long_running_tool_ids={"c1", "c2"},
            partial=False,
            turn_complete=True,
            finish_reason=types.FinishReason.STOP,
            usage_metadata=types.GenerateContentResponseUsageMetadata(
                prompt_token_count=12,
                candidates_token_count=3,
                total_token_count=15,
                prompt_tokens_details=[
                    types.ModalityTokenCount(modality=types.MediaModality.TEXT, token_count=12)
                ],
            ),
            custom_metadata={"k": {"nested": [True, None]}},
        ),
        Event(
            author="tool",
            invocation_id="i3",
            content=types.Content(
                role="user",
                parts=[
                    types.Part(
                        function_response=types.FunctionResponse(
                            id="c1", name="lookup", response={"result": "ok", "rows": [1, 2]}
                        )
                    ),
                    types.Part(
                        inline_data=types.Blob(mime_type="image/png", data=bytes(range(256)))
                    ),
                    types.Part(
                        file_data=types.FileData(file_uri="gs://b/f", mime_type="text/plain")
                    ),
                ],
            ),
            actions=EventActions(
                state_delta={"a": 1, "user:b": [1, 2], "app:c": {"d": "e"}},
                artifact_delta={"file.txt": 2},
                transfer_to_agent="other",
                escalate=True,
                skip_summarization=True,
                route=["x", 2, True],
                requested_tool_confirmations={
                    "c1": ToolConfirmation(hint="sure?", confirmed=False, payload={"p": 1})
                },
                compaction=EventCompaction(
                    start_timestamp=1.0, end_timestamp=2.5, compacted_content=text
                ),
            ),
        ),
        Event(
            author="agent",
            invocation_id="i4",
            error_code="SAFETY",
            error_message="blocked",
            interrupted=True,
            grounding_metadata=types.GroundingMetadata(
                web_search_queries=["q"],
                grounding_chunks=[types.GroundingChunk(web=types.GroundingChunkWeb(uri="u"))],
            ),
            citation_metadata=types.CitationMetadata(
                citations=[types.Citation(start_index=0, end_index=3, uri="u")]
            ),
        ),
        Event(
            author="tool",
            invocation_id="i5",
            actions=EventActions(
                requested_auth_configs={
                    "c1": AuthConfig(
                        auth_scheme={"type": "http", "scheme": "bearer"},
                        raw_auth_credential=AuthCredential(
                            auth_type=AuthCredentialTypes.HTTP,
                        ),
                    )
                }
            ),
        ),
        Event(author="agent", invocation_id="i6", actions=EventActions(route=7)),
    ]


def _same(built: BaseModel, validated: BaseModel) -> None:
    """Equal, field by field and type by type, with the same fields set."""
    assert type(built) is type(validated)
    assert built == validated
    assert built.model_fields_set == validated.model_fields_set
    assert list(vars(built)) == list(vars(validated))
    for name, value in vars(validated).items():
        other = vars(built)[name]
        assert type(other) is type(value), name
        if isinstance(value, BaseModel):
            _same(other, value)
        elif isinstance(value, list):
            for a, b in zip(other, value, strict=True):
                assert type(a) is type(b), name
                if isinstance(b, BaseModel):
                    _same(a, b)


def _stored(event: Event) -> str:
    """An event's document as the adapter stores it."""
    return dumps({"event_id": event.id, **event.model_dump(mode="json", exclude_none=True)})


@pytest.mark.parametrize("index", range(len(_events())))
def test_a_stored_event_is_rebuilt_as_validation_would(index: int) -> None:
    event = _events()[index]
    validated = Event.model_validate(event.model_dump(mode="json", exclude_none=True))
    built = STORED_EVENTS.from_json(_stored(event))
    _same(built, validated)
    assert built.model_dump(mode="json") == validated.model_dump(mode="json")


@contextmanager
def _python_calls() -> Iterator[list[str]]:
    """The qualified names of the Python functions called meanwhile."""
    called: list[str] = []

    def record(frame: Any, what: str, _arg: Any) -> None:
        if what == "call":
            called.append(frame.f_code.co_qualname)

    sys.setprofile(record)
    try:
        yield called
    finally:
        sys.setprofile(None)


def test_a_stored_event_is_read_without_the_no_ops() -> None:
    texts = [_stored(e) for e in _events()[:2]]  # parts, usage metadata: many genai models
    assert STORED_EVENTS.validator is not None
    with _python_calls() as called:
        STORED_EVENTS.many_from_json(texts)
    assert not {
        "BaseModel._check_field_type_mismatches",
        "Event._accept_convenience_kwargs",
        "Part.__init__",
        "BaseModel.model_validate",
        "Event.model_post_init",  # each event has its id
        "EventActions._parse_auth_configs",  # no auth configs
        "StoredModel._one",
        "StoredModel._drop",  # event_id is omitted in validation
    } & set(called)
    plain = [_stored(_events()[0])] * 3
    with _python_calls() as called:  # plain events: no Python at all per event
        STORED_EVENTS.many_from_json(plain)
    # the call itself, then leaving the with block
    assert set(called) == {
        "StoredModel.many_from_json",
        "_GeneratorContextManager.__exit__",
        "_python_calls",
    }


def test_auth_configs_are_still_converted() -> None:
    event = _events()[4]  # a requested auth config: its parser is not a no-op
    with _python_calls() as called:
        built = STORED_EVENTS.from_json(_stored(event))
    assert "EventActions._parse_auth_configs" in called
    assert isinstance(built.actions.requested_auth_configs["c1"], AuthConfig)
    _same(built, Event.model_validate(event.model_dump(mode="json", exclude_none=True)))


@pytest.mark.parametrize("change", [{"id": ""}, {"id": None}])
def test_an_event_without_its_id_gets_a_new_one(change: dict[str, Any]) -> None:
    document = {**_events()[0].model_dump(mode="json", exclude_none=True), **change}
    document = {k: v for k, v in document.items() if v is not None}
    validated = Event.model_validate(document)  # model_post_init: a new id
    built = STORED_EVENTS.from_json(dumps(document))
    assert built.id and built.id != validated.id
    built.id = validated.id
    _same(built, validated)


def _errors(exc: pydantic.ValidationError) -> list[tuple[Any, ...]]:
    return [(e["type"], e["loc"], e["msg"]) for e in exc.errors()]


def _validated_alike(
    model: type[BaseModel], stored: Any, reference: dict[str, Any], text: str
) -> BaseModel | None:
    """``model.model_validate(reference)``; None if it refuses the document,
    after checking that ``stored.from_json(text)`` refuses it with the same
    errors."""
    try:
        return model.model_validate(reference)
    except pydantic.ValidationError as exc:
        with pytest.raises(pydantic.ValidationError) as raised:
            stored.from_json(text)
        assert _errors(raised.value) == _errors(exc)
        return None


@pytest.mark.parametrize(
    "change",
    [
        {"timestamp": "1.5"},  # a string where a float goes: validation converts it
        {"surprise": 1},  # a key Event ignores
        {"actions": {"stateDelta": {"a": 1}}},  # a field by its alias
        {"content": {"parts": [{"text": 5}]}},  # invalid
        {"long_running_tool_ids": "x"},  # invalid
        {"invocationId": "by alias"},
        {"message": "hi"},  # Event's convenience arguments
        {"state": {"a": 1}},
        {"route": "r"},
        {"node_path": "a/b"},
        {"event_id": 5},  # the adapter's own key, of any value
        {"event_id": None},
        {"event_id": {"id": "x"}},
        {"actions": {"requested_auth_configs": {"c": 1}}},  # not an AuthConfig: kept as it is
        {"actions": {"requested_auth_configs": []}},  # invalid
        {"id": 5},  # invalid
    ],
)
def test_a_document_of_another_shape_is_validated(change: dict[str, Any]) -> None:
    document = {**_events()[0].model_dump(mode="json", exclude_none=True), **change}
    reference = {k: v for k, v in document.items() if k != "event_id"}
    validated = _validated_alike(Event, STORED_EVENTS, reference, dumps(document))
    if validated is not None:
        _same(STORED_EVENTS.from_json(dumps(document)), validated)


def test_many_documents_keep_their_order_whichever_way_each_is_validated() -> None:
    events = _events()
    texts = [_stored(e) for e in events]
    routed = {"id": "r", "timestamp": 1.5, "author": "a", "message": "routed"}
    texts.insert(2, dumps(routed))  # validated in full
    built = STORED_EVENTS.many_from_json(texts)
    assert [e.author for e in built] == [
        *(e.author for e in events[:2]),
        "a",
        *(e.author for e in events[2:]),
    ]
    assert built[2].content is not None
    assert built[2].content.parts == [types.Part(text="routed")]
    for text, event in zip(texts, built, strict=True):
        document = json.loads(text)
        document.pop("event_id", None)
        _same(event, Event.model_validate(document))


class _Checked(BaseModel):
    n: int

    @pydantic.field_validator("n")
    @classmethod
    def double(cls, v: int) -> int:
        return v * 2


class _Routed(BaseModel):
    inner: _Checked
    tags: set[str] = set()

    @pydantic.model_validator(mode="before")
    @classmethod
    def route(cls, data: Any) -> Any:
        if isinstance(data, dict) and "shortcut" in data:
            return {**data, "inner": {"n": data.pop("shortcut")}}
        return data


ROUTED = StoredModel(_Routed, {f"{__name__}._Routed.route": FIELDS_ONLY}, dropped=("row",))


def test_validators_that_are_not_no_ops_still_run() -> None:
    built = ROUTED.from_json('{"inner": {"n": 2}, "tags": ["a"]}')
    assert built.inner.n == 4
    _same(built, _Routed.model_validate({"inner": {"n": 2}, "tags": ["a"]}))


def test_a_no_op_for_field_keys_only_runs_for_other_keys() -> None:
    assert ROUTED.from_json('{"shortcut": 3}').inner.n == 6  # validated in full
    with _python_calls() as called:
        ROUTED.from_json('{"inner": {"n": 1}}')
    assert "_Routed.route" not in called
    assert "BaseModel.model_validate" not in called


def test_dropped_keys_are_not_in_the_model() -> None:
    with _python_calls() as called:
        built = ROUTED.from_json('{"row": 7, "inner": {"n": 1}}')
    assert "BaseModel.model_validate" not in called
    _same(built, _Routed.model_validate({"inner": {"n": 1}}))
    assert "row" not in vars(built)
    assert built.model_fields_set == {"inner"}
    _same(ROUTED.from_json('{"row": 7, "shortcut": 1}'), _Routed.model_validate({"shortcut": 1}))


def test_dropped_keys_need_no_python_after_validation() -> None:
    texts = ['{"row": 1, "inner": {"n": 1}}', '{"inner": {"n": 2}, "row": [null]}']
    with _python_calls() as called:
        built = ROUTED.many_from_json(texts)
    assert "StoredModel._drop" not in called
    assert "StoredModel._one" not in called
    for model, n in zip(built, (1, 2), strict=True):
        _same(model, _Routed.model_validate({"inner": {"n": n}}))
    # One document without the key: each is validated on its own, none in full.
    texts.append('{"inner": {"n": 3}}')
    with _python_calls() as called:
        built = ROUTED.many_from_json(texts)
    assert "BaseModel.model_validate" not in called
    for text, model in zip(texts, built, strict=True):
        document = json.loads(text)
        document.pop("row", None)
        _same(model, _Routed.model_validate(document))


class _Stamped(BaseModel):
    name: str = ""
    size: int = 0
    tags: dict[str, int] = {}
    labels: list[str] = []

    @pydantic.field_validator("tags")
    @classmethod
    def doubled(cls, v: dict[str, int]) -> dict[str, int]:
        return {k: n * 2 for k, n in v.items()} if v else v

    @pydantic.field_validator("labels", mode="before")
    @classmethod
    def listed(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    def model_post_init(self, _context: Any) -> None:
        if not self.name:
            self.name = "stamped"


STAMPED = StoredModel(
    _Stamped,
    {
        f"{__name__}._Stamped.doubled": EMPTY_ONLY,
        f"{__name__}._Stamped.listed": EMPTY_ONLY,  # a before validator: kept
        f"{__name__}._Stamped.model_post_init": NonEmpty(("name",)),
    },
)


@pytest.mark.parametrize(
    ("document", "fast"),
    [
        ({"name": "a"}, True),
        ({"name": "a", "tags": {}}, True),
        ({"name": "a", "tags": {"x": 1}}, False),  # the validator doubles it
        ({"tags": {}}, False),  # no name: model_post_init gives one
        ({"name": ""}, False),
        ({"name": "a", "labels": "one"}, True),
        ({"name": 5}, True),  # invalid
        ({"name": "a", "tags": []}, True),  # invalid
    ],
)
def test_conditional_no_ops_run_where_they_change_something(
    document: dict[str, Any], fast: bool
) -> None:
    text = dumps(document)
    validated = _validated_alike(_Stamped, STAMPED, document, text)
    if validated is None:
        return
    with _python_calls() as called:
        built = STAMPED.from_json(text)
    _same(built, validated)
    assert ("BaseModel.model_validate" not in called) is fast
    if fast:
        assert not {"_Stamped.doubled", "_Stamped.model_post_init"} & set(called)
        assert ("_Stamped.listed" in called) is ("labels" in document)


class _Sized(BaseModel):
    size: int = 0
    seen: bool = False

    def model_post_init(self, _context: Any) -> None:
        self.seen = True


def test_a_post_init_condition_on_a_field_without_a_length_keeps_the_post_init() -> None:
    stored = StoredModel(_Sized, {f"{__name__}._Sized.model_post_init": NonEmpty(("size",))})
    with _python_calls() as called:
        built = stored.from_json('{"size": 3}')
    assert "_Sized.model_post_init" in called
    assert "BaseModel.model_validate" not in called
    _same(built, _Sized.model_validate({"size": 3}))


def test_a_model_with_a_field_named_as_a_dropped_key_is_validated_in_full() -> None:
    stored = StoredModel(_Checked, {}, dropped=("n",))
    assert stored.validator is None
    with pytest.raises(pydantic.ValidationError):  # n is dropped, and required
        stored.from_json('{"n": 2}')


class _Watched(BaseModel):
    n: int


WATCHED = StoredModel(_Watched, {})


def test_documents_are_validated_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def one_by_one(*_a: Any) -> Any:
        raise AssertionError("validated one by one")

    monkeypatch.setattr(StoredModel, "_one", one_by_one)
    built = WATCHED.many_from_json(['{"n": 1}', '{"n": 2}', '{"n": 3}'])
    assert [m.n for m in built] == [1, 2, 3]
    _same(built[1], _Watched(n=2))


@pytest.mark.parametrize(
    "texts",
    [
        ['{"n": 1}, {"n": 2}', '{"n": 3}'],  # one more element than texts
        ['{"n": 1}, {"n": 2}', ""],  # as many elements as texts, but not JSON joined
        ['{"n": 1}', '{"n": 2}]'],
    ],
)
def test_a_text_that_is_not_one_document_is_refused(texts: list[str]) -> None:
    with pytest.raises(ValueError):
        WATCHED.many_from_json(texts)


def test_without_a_separate_validator_every_document_is_validated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def old_core(*_a: Any, **_k: Any) -> Any:  # a pydantic-core before _use_prebuilt
        raise TypeError("unexpected keyword argument '_use_prebuilt'")

    monkeypatch.setattr(trusted_models, "SchemaValidator", old_core)
    stored = StoredModel(Event, {})
    assert stored.validator is None
    event = _events()[2]
    _same(
        stored.from_json(_stored(event)),
        Event.model_validate(json.loads(_stored(event))),
    )


async def test_events_read_back_through_the_service_equal_the_appended_ones(
    db: Database,
) -> None:
    service = AbathurSessionService(db)
    session = await service.create_session(app_name="app", user_id="u")
    appended = []
    for event in _events():
        appended.append(await service.append_event(session, event))
    got = await service.get_session(app_name="app", user_id="u", session_id=session.id)
    assert got is not None
    assert [e.id for e in got.events] == [e.id for e in appended]
    for built, original in zip(got.events, appended, strict=True):
        document = original.model_dump(mode="json", exclude_none=True)
        _same(built, Event.model_validate(document))


class _Camel(BaseModel):
    model_config = pydantic.ConfigDict(alias_generator=to_camel, populate_by_name=True)
    first_name: str
    tags: list[str] = []


class _Open(BaseModel):  # keeps other keys: left as it is
    model_config = pydantic.ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="allow"
    )
    first_name: str = ""


class _Crossed(BaseModel):  # an alias that names another field: left as it is
    model_config = pydantic.ConfigDict(populate_by_name=True)
    a: int = pydantic.Field(0, alias="b")
    b: int = 0


class _ByAliasOnly(BaseModel):  # names are not accepted: left as it is
    model_config = pydantic.ConfigDict(alias_generator=to_camel)
    first_name: str = ""


class _Holder(BaseModel):
    camel: _Camel
    open: _Open | None = None
    crossed: _Crossed | None = None
    only: _ByAliasOnly | None = None


HELD = StoredModel(_Holder, {})


@pytest.mark.parametrize(
    "document",
    [
        {"camel": {"first_name": "x", "tags": ["t"]}},
        {"camel": {"firstName": "by alias"}},  # an alias: validated in full
        {"camel": {"first_name": "x", "firstName": "both"}},
        {"camel": {"first_name": "x", "other": 1}},  # a key the model ignores
        {"camel": {"first_name": "x"}, "open": {"first_name": "y", "more": [1]}},
        {"camel": {"first_name": "x"}, "open": {"firstName": "y"}},
        {"camel": {"first_name": "x"}, "crossed": {"b": 5}},
        {"camel": {"first_name": "x"}, "crossed": {"a": 1, "b": 2}},
        {"camel": {"first_name": "x"}, "only": {"first_name": "ignored"}},
        {"camel": {"first_name": "x"}, "only": {"firstName": "kept"}},
        {"camel": {"first_name": 5}},  # invalid
    ],
)
def test_fields_read_by_name_alone_give_what_validation_gives(document: dict[str, Any]) -> None:
    try:
        validated = _Holder.model_validate(document)
    except pydantic.ValidationError as exc:
        with pytest.raises(pydantic.ValidationError) as raised:
            HELD.from_json(dumps(document))
        assert _errors(raised.value) == _errors(exc)
    else:
        _same(HELD.from_json(dumps(document)), validated)


def test_a_document_keyed_by_names_is_read_without_alias_lookups() -> None:
    assert HELD.validator is not None
    with _python_calls() as called:
        HELD.from_json('{"camel": {"first_name": "x"}}')
    assert "BaseModel.model_validate" not in called
    with _python_calls() as called:  # the fast validator refuses an alias
        HELD.from_json('{"camel": {"firstName": "x"}}')
    assert "BaseModel.model_validate" in called
