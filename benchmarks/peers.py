"""The framework peers' workloads of ``make bench``, one for both backends
(``Bench.adk`` / ``Bench.langgraph`` on SQLite files, ``pg_peers`` on
PostgreSQL schemas), each implementation on the same calls, interleaved call
by call (``Bench.interleave``):

- ADK: create, append_event (an event with a 240-character message and a
  state delta) and get_session of a session of 100 such events;
- LangGraph: put (updates of 50 keys), get of one of ``seed`` items, and a
  search of a namespace of ``seed / 10`` (newest 10) without and with a filter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.run import Bench

SPREAD = 10  # sessions appended to, round robin
Make = Callable[[str], Callable[[int], Awaitable[Any]]]


def classes() -> tuple[Callable[[int], Any], Any, Any]:
    """``event(i)``, ADK's ``DatabaseSessionService`` and abathur's
    ``AbathurSessionService``; ImportError without google-adk (the ``bench``
    and ``dev`` extras install it)."""
    from google.adk.events.event import Event
    from google.adk.events.event_actions import EventActions
    from google.adk.sessions.database_session_service import DatabaseSessionService
    from google.genai import types

    from abathur.integrations.adk import AbathurSessionService

    def event(i: int) -> Any:
        return Event(
            author="agent",
            invocation_id=f"inv{i}",
            content=types.Content(role="model", parts=[types.Part(text="x" * 240)]),
            actions=EventActions(state_delta={"last": i}),
        )

    return event, DatabaseSessionService, AbathurSessionService


async def interleaved(
    bench: Bench, impls: dict[str, Any], ops: list[tuple[str, Make]]
) -> list[Any]:
    """``ops`` timed on ``bench.n`` calls, interleaved across ``impls``; their
    figures, taken out of ``bench.figures`` (they go to the peers' table)."""
    start = len(bench.figures)
    await bench.interleave(
        [(op, [(impl, make(impl)) for impl in impls], {}) for op, make in ops],
        [(i,) for i in range(bench.n)],
    )
    figures = bench.figures[start:]
    del bench.figures[start:]
    return figures


async def measure(bench: Bench, services: dict[str, Any], event: Callable[[int], Any]) -> list[Any]:
    """The workload on ``services`` (implementation -> session service); the figures."""
    targets: dict[str, list[Any]] = {}
    for impl, svc in services.items():
        got = await svc.create_session(app_name="bench", user_id="u", session_id="g")
        for i in range(100):
            await svc.append_event(got, event(i))
        targets[impl] = [
            await svc.create_session(app_name="bench", user_id="u", session_id=f"a{j}")
            for j in range(SPREAD)
        ]
    events = {impl: [event(i) for i in range(bench.n)] for impl in services}

    def create(impl: str) -> Callable[[int], Awaitable[Any]]:
        svc = services[impl]
        return lambda i: svc.create_session(app_name="bench", user_id="u", session_id=f"c{i}")

    def append(impl: str) -> Callable[[int], Awaitable[Any]]:
        svc, sessions, evs = services[impl], targets[impl], events[impl]
        return lambda i: svc.append_event(sessions[i % SPREAD], evs[i])

    def get(impl: str) -> Callable[[int], Awaitable[Any]]:
        svc = services[impl]
        return lambda i: svc.get_session(app_name="bench", user_id="u", session_id="g")

    figures = await interleaved(
        bench,
        services,
        [
            ("ADK create_session", create),
            ("ADK append_event", append),
            ("ADK get_session (100 events)", get),
        ],
    )
    for impl, svc in services.items():  # the reads returned every event
        got = await svc.get_session(app_name="bench", user_id="u", session_id="g")
        assert got is not None and len(got.events) == 100, impl
    return figures


def langgraph_value(j: int) -> dict[str, Any]:
    """The value of seeded item ``j`` (key ``k{j}`` in namespace ``("bench", "g{j % 10}")``)."""
    return {"i": j, "tag": "even" if j // 10 % 2 == 0 else "odd", "text": "x" * 100}


def langgraph_ops(stores: dict[str, Any], seed: int) -> list[tuple[str, Make]]:
    """The LangGraph operations both peers time, over ``stores`` seeded with
    ``seed`` items (``langgraph_value``) and 50 keys ``("bench", "put")/p{j}``."""

    def put(impl: str) -> Callable[[int], Awaitable[Any]]:
        store = stores[impl]
        return lambda i: store.aput(("bench", "put"), f"p{i % 50}", {"i": i, "text": "x" * 100})

    def get(impl: str) -> Callable[[int], Awaitable[Any]]:
        store = stores[impl]
        return lambda i: store.aget(("bench", f"g{(i * 7) % seed % 10}"), f"k{(i * 7) % seed}")

    def search(impl: str) -> Callable[[int], Awaitable[Any]]:
        store = stores[impl]
        return lambda i: store.asearch(("bench", f"g{i % 10}"), limit=10)

    def filtered(impl: str) -> Callable[[int], Awaitable[Any]]:
        store = stores[impl]
        return lambda i: store.asearch(("bench", f"g{i % 10}"), filter={"tag": "even"}, limit=10)

    return [
        ("LangGraph put (update)", put),
        ("LangGraph get", get),
        ("LangGraph search (10 of 100)", search),
        ("LangGraph search (filter, 10 of 100)", filtered),
    ]
