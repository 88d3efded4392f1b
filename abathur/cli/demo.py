"""The demo: the spec's session -> task -> memory workflow, printed step by step.

``abathur demo`` and ``python -m abathur.cli demo`` (``make demo``) run it on a
fresh SQLite file in a temporary directory, deleted afterwards; pass a
database URL or path to keep the result. Ids are fixed, so the output differs
between runs only in its timestamps.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from click import echo

from abathur.cli.context import compact
from abathur.cli.data_commands import print_audit, print_memories, print_session
from abathur.domain.sessions import SessionWithEvents
from abathur.embeddings import HashingEmbedder
from abathur.errors import AlreadyExistsError, NotFoundError
from abathur.infrastructure.database import Database

SESSION_ID = "demo-session"
TASK_ID = "demo-task"
USER = "alice"
NAMESPACE = f"user:{USER}:preferences"
KEY = "coding_style"
AGENT = "demo-agent"
RECALL_QUERY = "what does alice prefer about code review"
RECALL_FACTS = (
    ("review_style", {"text": "Alice prefers small pull requests and code review within a day"}),
    ("meetings", {"text": "no meetings before 10am; async updates in the team channel"}),
    ("lunch", {"text": "sushi on Fridays, vegetarian otherwise"}),
)


async def demo_workflow(db: Database) -> None:
    """Run the workflow on an initialised ``db``, printing what happens."""
    if await db.sessions.get_session(SESSION_ID, recent_events=0) is not None:
        raise AlreadyExistsError(
            f"the demo needs a fresh database; {db!r} already holds {SESSION_ID!r}"
        )
    echo("== 1. Create a session")
    await db.sessions.create_session(
        SESSION_ID,
        app_name="abathur-demo",
        user_id=USER,
        project_id="demo-project",
        initial_state={"session:goal": "learn the user's coding style"},
    )
    await db.sessions.update_status(SESSION_ID, "active")
    echo(f"created {SESSION_ID} for user {USER}, now active")

    echo("== 2. Create a task linked to the session")
    task = await db.tasks.create_task(
        "Remember how the user likes their code", id=TASK_ID, session_id=SESSION_ID
    )
    echo(f"task {task.id} ({task.status}) in session {task.session_id}")

    echo("== 3. Append events with state deltas")
    events: list[tuple[dict[str, Any], dict[str, Any]]] = [
        (
            {"author": "user", "type": "message", "content": "I prefer 4-space indents."},
            {"temp:draft_reply": "Noted: 4 spaces.", "session:turns": 1},
        ),
        (
            {"author": AGENT, "type": "tool_call", "content": "store preference"},
            {"temp:tool_running": True, "session:turns": 2},
        ),
        (
            {"author": AGENT, "type": "message", "content": "Saved. Anything else?"},
            {"session:last_topic": "indentation", "temp:tool_running": False},
        ),
    ]
    for event, delta in events:
        await db.sessions.append_event(SESSION_ID, event, state_delta=delta)
        echo(f"{event['author']}: {event['type']}  state += {compact(delta)}")
    state = (await _session(db))["state"]
    echo(f"state now: {compact(state)}")

    echo("== 4. Store memory under the task (version 1, then version 2)")
    await db.memory.add_memory(
        NAMESPACE, KEY, {"indent": 4}, "semantic", created_by=AGENT, task_id=TASK_ID
    )
    echo(f"added {NAMESPACE}/{KEY} = {compact({'indent': 4})}")
    await db.memory.update_memory(
        NAMESPACE, KEY, {"indent": 4, "quotes": "double"}, updated_by=AGENT, task_id=TASK_ID
    )
    echo(f"updated {NAMESPACE}/{KEY} = {compact({'indent': 4, 'quotes': 'double'})}")

    echo("== 5. Terminate the session (temp: keys are cleared)")
    await db.sessions.terminate_session(SESSION_ID)
    after = (await _session(db))["state"]
    dropped = sorted(set(state) - set(after))
    echo(f"status terminated; dropped {', '.join(dropped) or 'nothing'}")

    await recall_by_meaning()

    echo("")
    echo("== Session and its events")
    print_session(await _session(db))
    echo("")
    echo("== Memory versions")
    print_memories(await db.memory.get_memory_history(NAMESPACE, KEY))
    echo("")
    echo("== Audit trail (newest first)")
    print_audit(await db.tasks.audit_for_task(TASK_ID))


async def recall_by_meaning() -> None:
    """Step 6, on a private in-memory database with an embedder (the demo's
    own database keeps exactly what steps 1-5 wrote)."""
    echo("== 6. Recall by meaning (HashingEmbedder: offline, lexical)")
    async with Database(Path(":memory:"), embedder=HashingEmbedder()) as scratch:
        task = await scratch.tasks.create_task("recall demo")
        echo("on a private in-memory database, with Database(..., embedder=HashingEmbedder())")
        for key, value in RECALL_FACTS:
            await scratch.memory.add_memory(NAMESPACE, key, value, "semantic", AGENT, task.id)
            echo(f"added {NAMESPACE}/{key} = {compact(value)}, with its embedding")
        echo(f"query: {RECALL_QUERY!r}")
        for found in await scratch.memory.search_memories(
            f"user:{USER}", query=RECALL_QUERY, limit=3
        ):
            echo(f"  {found.get('score', 0.0):.3f}  {found['namespace']}/{found['key']}")


async def _session(db: Database) -> SessionWithEvents:
    found = await db.sessions.get_session(SESSION_ID)
    if found is None:  # pragma: no cover - created above
        raise NotFoundError(f"session {SESSION_ID!r} vanished")
    return found


async def _run(url: str | None) -> None:
    if url is not None:
        async with Database(url) as db:
            await demo_workflow(db)
        return
    with tempfile.TemporaryDirectory(prefix="abathur-demo-") as tmp:
        async with Database(Path(tmp) / "demo.db") as db:
            echo(f"(fresh database: {db.url.database}, removed afterwards)")
            await demo_workflow(db)


def run_demo(url: str | None = None) -> None:
    """Run the demo on ``url`` (migrated first), or on a temporary SQLite file."""
    asyncio.run(_run(url))
