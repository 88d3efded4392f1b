"""AbathurStore at the edges LangGraph's own suite does not reach: the TTL
sweeper when a sweep fails or its task or future is cancelled, calls after
the store's loop is gone, TTLs that are no duration, and a negative
``max_depth``; on both backends where a database is involved."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from langgraph.store.base import PutOp

from abathur.embeddings.hashing import HashingEmbedder
from abathur.errors import DatabaseBusyError, DatabaseClosedError, ValidationError
from abathur.infrastructure.database import Database
from abathur.integrations.langgraph import AbathurStore, index_fields

TENTH_OF_A_SECOND = 1 / 600  # minutes


async def test_a_failing_sweep_leaves_the_sweeper_running(
    db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = AbathurStore(db, ttl={"default_ttl": 1, "sweep_interval_minutes": TENTH_OF_A_SECOND})
    await store.asetup()
    sweep = db.memory.sweep_expired
    calls: list[int] = []

    async def flaky(**options: Any) -> int:
        calls.append(1)
        if len(calls) == 1:
            raise DatabaseBusyError("a transient failure")
        return await sweep(**options)

    monkeypatch.setattr(db.memory, "sweep_expired", flaky)
    with caplog.at_level(logging.ERROR, logger="abathur"):
        task = await store.astart_ttl_sweeper()
        for _ in range(200):  # a bound, not a timing assertion
            if len(calls) >= 2:
                break
            await asyncio.sleep(0.05)
    assert len(calls) >= 2 and not task.done()  # it swept again after the failure
    assert "TTL sweep failed" in caplog.text
    assert await store.astop_ttl_sweeper() is True
    await store.aclose()  # nothing of the failure left to raise


async def test_a_cancelled_sweeper_task_stops_and_closes_cleanly(db: Database) -> None:
    store = AbathurStore(db, ttl={"default_ttl": 1})
    task = await store.astart_ttl_sweeper(60)
    task.cancel()
    await asyncio.wait({task})
    assert await store.astop_ttl_sweeper() is True
    again = await store.astart_ttl_sweeper(60)  # a new sweeper, not the cancelled one
    assert again is not task and not again.done()
    again.cancel()
    await store.aclose()
    assert again.cancelled()


def test_cancelling_the_sync_sweeper_future_stops_the_sweeper(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with AbathurStore(tmp_path / "lg.db", ttl={"default_ttl": 1}) as store:
        store.setup()
        future = store.start_ttl_sweeper(60)
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            assert future.cancel()
            task = store._sweeper
            assert task is not None
            for _ in range(100):  # a bound, not a timing assertion
                if task.done():
                    break
                time.sleep(0.05)
            assert task.done()  # LangGraph's stores stop when the future is cancelled
            assert store.stop_ttl_sweeper(timeout=5) is True
        assert "Exception in callback" not in caplog.text
        second = store.start_ttl_sweeper(60)
        assert store.stop_ttl_sweeper(timeout=5) is True
        assert second.result(timeout=5) is None


def test_sync_and_async_calls_after_close_raise_database_closed(tmp_path: Path) -> None:
    store = AbathurStore(tmp_path / "lg.db")
    store.put(("a",), "k", {"v": 1})
    store.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine ... was never awaited"
        with pytest.raises(DatabaseClosedError, match="closed"):
            store.get(("a",), "k")
        with pytest.raises(DatabaseClosedError, match="closed"):
            store.put(("a",), "k", {"v": 2})
        with pytest.raises(DatabaseClosedError, match="closed"):
            asyncio.run(store.aget(("a",), "k"))
    store.close()  # closing twice is fine


def test_a_store_whose_loop_has_ended_raises_database_closed(tmp_path: Path) -> None:
    async def make() -> AbathurStore:
        store = AbathurStore(tmp_path / "lg.db")
        await store.aput(("a",), "k", {"v": 1})
        return store

    store = asyncio.run(make())  # bound to asyncio.run's loop, closed on return
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DatabaseClosedError, match="event loop"):
            store.get(("a",), "k")
        with pytest.raises(DatabaseClosedError, match="event loop"):
            asyncio.run(store.aget(("a",), "k"))


@pytest.mark.parametrize("ttl", [1e13, float("inf"), float("nan"), "5", 10**30])
async def test_a_ttl_that_is_no_duration_is_a_validation_error(db: Database, ttl: Any) -> None:
    store = AbathurStore(db)
    with pytest.raises(ValidationError, match="ttl"):
        await store.aput(("t",), "k", {"v": 1}, ttl=ttl)
    with pytest.raises(ValidationError, match="ttl"):  # checked before any op runs
        await store.abatch([PutOp(("t",), "a", {"v": 1}), PutOp(("t",), "b", {"v": 1}, ttl=ttl)])
    assert await store.aget(("t",), "a") is None
    await store.aput(("t",), "k", {"v": 1}, ttl=1e6)  # long, but a duration
    assert await store.aget(("t",), "k") is not None


async def test_a_negative_max_depth_is_a_validation_error(db: Database) -> None:
    store = AbathurStore(db)
    await store.aput(("a", "b"), "k", {"v": 1})
    assert await store.alist_namespaces(max_depth=0) == [()]
    assert await store.alist_namespaces(max_depth=1) == [("a",)]
    for depth in (-1, -2, -5):
        with pytest.raises(ValidationError, match="max_depth"):
            await store.alist_namespaces(max_depth=depth)


@pytest.mark.parametrize("minutes", [float("nan"), float("inf"), 0, -1])
async def test_a_sweep_interval_that_is_no_duration_is_a_validation_error(
    db: Database, minutes: float
) -> None:
    store = AbathurStore(db, ttl={"default_ttl": 1})
    with pytest.raises(ValidationError, match="sweep interval"):
        await store.astart_ttl_sweeper(minutes)
    with pytest.raises(ValidationError, match="sweep interval"):
        await asyncio.to_thread(
            AbathurStore(db, ttl={"sweep_interval_minutes": minutes}).start_ttl_sweeper
        )
    assert await store.astop_ttl_sweeper() is True  # none was started


async def test_the_sweeper_stops_when_its_database_is_closed(
    make_db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    db = await make_db(migrated=True)
    await db.initialize()
    store = AbathurStore(db, ttl={"default_ttl": 1, "sweep_interval_minutes": TENTH_OF_A_SECOND})
    await store.asetup()
    with caplog.at_level(logging.WARNING, logger="abathur"):
        task = await store.astart_ttl_sweeper()
        await db.close()  # under the store, which does not own it
        await asyncio.wait({task}, timeout=10)  # a bound, not a timing assertion
    assert task.done() and task.exception() is None
    assert "the database is closed" in caplog.text
    assert "TTL sweep failed" not in caplog.text
    assert await store.astop_ttl_sweeper() is True


async def test_a_sweeper_started_from_another_loop_is_a_task_of_the_callers_loop(
    tmp_path: Path,
) -> None:
    # Made without a running loop (as at a module's top level), the store runs
    # a loop of its own; the sweeper's task must still be the caller's to
    # await and cancel, as LangGraph's astart_ttl_sweeper's is.
    store = await asyncio.to_thread(AbathurStore, tmp_path / "lg.db", ttl={"default_ttl": 1})
    try:
        first = await store.astart_ttl_sweeper(60)
        assert first.get_loop() is asyncio.get_running_loop()
        assert await store.astop_ttl_sweeper(timeout=5) is True
        assert await asyncio.wait_for(first, 5) is None  # ends when the sweeper stops
        second = await store.astart_ttl_sweeper(60)
        sweeper = store._sweeper
        assert sweeper is not None and not sweeper.done()
        second.cancel()
        await asyncio.wait({second})
        for _ in range(100):  # a bound, not a timing assertion
            if sweeper.done():
                break
            await asyncio.sleep(0.05)
        assert sweeper.done()  # cancelling the caller's task stopped the sweeper
        assert await store.astop_ttl_sweeper(timeout=5) is True
    finally:
        await asyncio.to_thread(store.close)


async def test_an_empty_index_list_embeds_nothing_and_a_string_is_one_path(db: Database) -> None:
    hashing = HashingEmbedder(dims=64)

    def embed(texts: list[str]) -> list[list[float]]:
        return [hashing.vector(t) for t in texts]

    store = AbathurStore(db, index={"dims": 64, "embed": embed, "fields": ["text"]})
    await store.aput(("d",), "none", {"text": "cats purr"}, index=[])  # as index=False
    await store.aput(("d",), "one", {"note": "cats purr"}, index="note")  # type: ignore[arg-type]
    await store.aput(("d",), "all", {"text": "cats purr"})
    found = {i.key for i in await store.asearch(("d",), query="cats purr", limit=10)}
    assert found == {"one", "all"}
    item = await store.aget(("d",), "none")
    assert item is not None and item.value == {"text": "cats purr"}
    assert index_fields("a.b") == ["a.b"]


def test_calls_while_the_stores_loop_is_stopped_raise_instead_of_hanging(tmp_path: Path) -> None:
    async def make() -> AbathurStore:
        store = AbathurStore(tmp_path / "lg.db")
        await store.aput(("a",), "k", {"v": 1})
        return store

    loop = asyncio.new_event_loop()
    try:
        store = loop.run_until_complete(make())  # bound to ``loop``, which then stops
        outcomes: list[BaseException | None] = []

        def calls() -> None:
            for call in (
                lambda: store.get(("a",), "k"),
                lambda: asyncio.run(store.aget(("a",), "k")),
            ):
                try:
                    call()
                    outcomes.append(None)
                except BaseException as exc:
                    outcomes.append(exc)

        caller = threading.Thread(target=calls, daemon=True)  # a hang must not hang the run
        caller.start()
        caller.join(timeout=20)  # a bound, not a timing assertion
        assert not caller.is_alive(), "a call on a stopped loop hangs"
        assert all(isinstance(o, asyncio.InvalidStateError) for o in outcomes), outcomes
        assert "not running" in str(outcomes[0])
        loop.run_until_complete(store.aclose())  # on its own loop it still works
    finally:
        loop.close()
