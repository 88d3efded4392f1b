"""Counting client-server round trips on asyncpg connections.

What is counted: every call of an asyncpg connection's protocol that sends a
request and waits for the server's answer (``prepare``, ``bind_execute``,
``bind_execute_many``, ``bind``, ``execute``, ``query``, ``close_statement``,
``copy_in``, ``copy_out``). Each of them ends with a Sync (or is a simple
query) and waits for ReadyForQuery: one round trip. ``query`` is the simple
query protocol, which asyncpg uses for ``BEGIN``/``COMMIT``/``ROLLBACK`` and
for ``Connection.execute`` without arguments; ``prepare`` is a statement that
was not in the driver's or SQLAlchemy's statement cache yet (Parse/Describe).
Pool checkouts that send nothing cost nothing here, and so does anything
else that happens in the client alone.

Every asyncpg connection reaches the server through its ``_protocol``
attribute only (``Connection``, ``PreparedStatement``, ``Transaction`` and
cursors all call ``connection._protocol.<method>``), so the counter replaces
that attribute with a proxy. It works on a plain ``asyncpg.Connection`` and
on the connections of an SQLAlchemy ``postgresql+asyncpg`` engine (``watch``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ROUND_TRIP_METHODS = frozenset(
    {
        "prepare",
        "bind_execute",
        "bind_execute_many",
        "bind",
        "execute",
        "query",
        "close_statement",
        "copy_in",
        "copy_out",
    }
)


@dataclass
class RoundTrips:
    """A running count of round trips; ``log`` keeps what each one sent when
    ``logging`` is on (the statement text, or the protocol call's name)."""

    count: int = 0
    logging: bool = False
    log: list[str] = field(default_factory=list)

    def sent(self, method: str, args: tuple[Any, ...]) -> None:
        self.count += 1
        if self.logging:
            self.log.append(f"{method}: {_statement(method, args)}")


def _statement(method: str, args: tuple[Any, ...]) -> str:
    if method == "query" and args:
        text = str(args[0])
    elif method == "prepare" and len(args) > 1:
        text = str(args[1])
    elif args and hasattr(args[0], "query"):  # a PreparedStatementState
        text = str(args[0].query)
    else:
        text = ""
    return " ".join(text.split())


class _CountingProtocol:
    """Stands in for an asyncpg protocol: every attribute is the protocol's
    own, the round-trip methods are counted first."""

    def __init__(self, protocol: Any, counter: RoundTrips):
        object.__setattr__(self, "_abathur_real", protocol)
        object.__setattr__(self, "_abathur_counter", counter)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._abathur_real, name)
        if name not in ROUND_TRIP_METHODS:
            return attr
        counter = self._abathur_counter

        def counted(*args: Any, **kwargs: Any) -> Any:
            counter.sent(name, args)
            return attr(*args, **kwargs)

        return counted

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._abathur_real, name, value)


def count_on(connection: Any, counter: RoundTrips) -> None:
    """Count the round trips of one ``asyncpg.Connection`` into ``counter`` (idempotent)."""
    protocol = connection._protocol
    if isinstance(protocol, _CountingProtocol):
        object.__setattr__(protocol, "_abathur_counter", counter)
        return
    connection._protocol = _CountingProtocol(protocol, counter)


def watch(engine: Any, counter: RoundTrips) -> None:
    """Count the round trips of every connection of an SQLAlchemy asyncpg
    ``AsyncEngine``: those it opens from now on, and (at their next checkout)
    those already in its pool."""
    from sqlalchemy import event

    def install(dbapi_connection: Any, *_: Any) -> None:
        count_on(dbapi_connection.driver_connection, counter)

    event.listen(engine.sync_engine, "connect", install)
    event.listen(engine.sync_engine, "checkout", install)
