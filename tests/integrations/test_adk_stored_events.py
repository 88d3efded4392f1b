"""The ADK adapter rebuilds stored events without validating them again
(``abathur.integrations.trusted_models``): whatever the event, the result is
what ``Event.model_validate`` of the stored document gives, and a document of
another shape is validated."""

from __future__ import annotations

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

from abathur.infrastructure.database import Database
from abathur.integrations.adk import STORED_EVENTS, AbathurSessionService, _to_event
from abathur.integrations.trusted_models import TrustedModels


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


@pytest.mark.parametrize("index", range(len(_events())))
def test_a_stored_event_is_rebuilt_as_validation_would(index: int) -> None:
    event = _events()[index]
    document = event.model_dump(mode="json", exclude_none=True)
    validated = Event.model_validate(document)
    built = _to_event({"event_id": event.id, **document})
    _same(built, validated)
    assert built.model_dump(mode="json") == validated.model_dump(mode="json")


def test_a_plain_event_is_not_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    document = _events()[0].model_dump(mode="json", exclude_none=True)
    _to_event(dict(document))  # plans made (their first call checks model_construct)

    def refuse(*_a: Any, **_k: Any) -> None:
        raise AssertionError("validated")

    for cls in (Event, EventActions, types.Content, types.Part):
        monkeypatch.setattr(cls, "model_validate", refuse)
    assert _to_event(document).content.parts[0].text == "hello"  # type: ignore[union-attr,index]


def _errors(exc: pydantic.ValidationError) -> list[tuple[Any, ...]]:
    return [(e["type"], e["loc"], e["msg"]) for e in exc.errors()]


@pytest.mark.parametrize(
    "change",
    [
        {"timestamp": "1.5"},  # a string where a float goes: validation converts it
        {"surprise": 1},  # a key Event ignores
        {"actions": {"stateDelta": {"a": 1}}},  # a field by its alias
        {"content": {"parts": [{"text": 5}]}},  # invalid
        {"long_running_tool_ids": "x"},  # invalid
        {"message": "hi"},  # Event's convenience argument
    ],
)
def test_a_document_of_another_shape_is_validated(change: dict[str, Any]) -> None:
    document = {**_events()[0].model_dump(mode="json", exclude_none=True), **change}
    try:
        validated = Event.model_validate(document)
    except pydantic.ValidationError as exc:
        with pytest.raises(pydantic.ValidationError) as raised:
            STORED_EVENTS.build(Event, document)
        assert _errors(raised.value) == _errors(exc)
    else:
        _same(STORED_EVENTS.build(Event, document), validated)


def test_models_with_unknown_validators_are_validated() -> None:
    class Checked(BaseModel):
        n: int

        @pydantic.field_validator("n")
        @classmethod
        def double(cls, v: int) -> int:
            return v * 2

    class Outer(BaseModel):
        inner: Checked
        tags: set[str] = set()

    document = {"inner": {"n": 2}, "tags": ["a"]}
    built = TrustedModels({}).build(Outer, document)
    assert built.inner.n == 4
    _same(built, Outer.model_validate(document))


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
