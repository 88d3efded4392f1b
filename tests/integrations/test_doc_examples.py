"""The examples of docs/integrations.md run as written (taken from the file, so
they cannot drift), on SQLite in a fresh directory.

The ADK example builds an ``Agent`` on a Gemini model name but never runs it
(its ``runner.run_async`` line is a comment): what runs is the persistence part,
no model is called. The LangGraph example runs whole: its graph has no model.
"""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"


def _example(section: str) -> str:
    """The first ```python block after the heading ``section``."""
    text = DOC.read_text()
    start = text.index(f"\n## {section}")
    found = re.search(r"```python\n(.*?)```", text[start:], re.DOTALL)
    assert found is not None, f"no python example under {section!r}"
    return found.group(1)


async def test_the_adk_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = _example("Google ADK")
    assert len(code.strip().splitlines()) <= 12
    namespace: dict[str, Any] = {}
    wrapped = "async def example():\n" + textwrap.indent(code, "    ") + "    return locals()\n"
    exec(compile(ast.parse(wrapped), str(DOC), "exec"), namespace)
    names = await namespace["example"]()
    session = names["session"]
    assert session.app_name == "support" and session.user_id == "alice"
    assert session.state == {"user:tone": "brief"}
    assert names["runner"].session_service is names["sessions"]
    assert (tmp_path / "agent.db").exists()


def test_the_langgraph_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code = _example("LangGraph")
    assert len(code.strip().splitlines()) <= 12
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    printed = capsys.readouterr().out
    assert "'text': 'call me Al'" in printed and "key='last'" in printed
    assert namespace["store"]._thread is not None and not namespace["store"]._thread.is_alive()
    assert (tmp_path / "agent.db").exists()
