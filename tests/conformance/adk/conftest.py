"""Settings for the vendored ADK suite (tests/conformance/adk/LICENSE, Apache-2.0).

Upstream's root conftest (tests/unittests/conftest.py) sets fake GOOGLE_*
variables and runs every test twice, once per GOOGLE_AI / VERTEX setting. No
test of this file talks to a model or reads those variables, so they are set
once here, for the GOOGLE_AI setting, and nothing is doubled.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.adk.abathur_services import TEMPLATES

ENV = {
    "GOOGLE_API_KEY": "fake_google_api_key",
    "GOOGLE_CLOUD_PROJECT": "fake_google_cloud_project",
    "GOOGLE_CLOUD_LOCATION": "fake_google_cloud_location",
    "ADK_ALLOW_WIP_FEATURES": "true",
    "GOOGLE_GENAI_USE_VERTEXAI": "0",
}

# Tests of ADK classes that abathur neither replaces nor installs (listed in
# docs/integrations.md): constructing VertexAiSessionService needs the
# google-adk[gcp] extra (google-cloud-agentplatform).
NOT_OURS = {
    "test_vertex_ai_session_service_raises_not_implemented_for_get_user_state": (
        "tests ADK's VertexAiSessionService, which needs google-adk[gcp]; "
        "abathur's ADK extra does not install it"
    ),
}


@pytest.fixture(scope="session", autouse=True)
def abathur_templates() -> Iterator[None]:
    """Drop the run's migrated template databases at the end."""
    yield
    TEMPLATES.cleanup()


@pytest.fixture(autouse=True)
def env_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        reason = NOT_OURS.get(getattr(item, "originalname", item.name))
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))
