"""Scoped views enforce their read rules on query searches (issue 12): for any
context and any prefix, a query search through ``memory.scoped(ctx)`` either is
refused (AccessDeniedError) or returns only memories the context may read, and
then exactly what the unscoped search of that prefix returns."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abathur.domain.memory import AccessContext
from abathur.domain.namespaces import is_in_subtree
from abathur.embeddings import HashingEmbedder
from abathur.errors import AccessDeniedError
from abathur.infrastructure.memory_service import MemoryService
from tests.properties.test_recall_ranking import Harness

NAMESPACES = [
    "session:s1", "session:s1:notes", "session:s2", "user:alice", "user:alice:prefs",
    "user:alice2", "user:bob", "app:a1", "app:a1:x", "app:a2", "project:p1", "project:p2",
]  # fmt: skip
PREFIXES = [*NAMESPACES, "user", "session", "app", "project", "user:al", "user:alice:prefs:deep"]
QUERIES = ["review style", "notes", "alice", "project plan", "tea"]


def test_query_search_never_returns_what_the_scope_may_not_read(backend: str) -> None:
    harness = Harness(backend)
    memory = MemoryService(harness.db, embedder=HashingEmbedder(dims=64))
    try:
        for number, ns in enumerate(NAMESPACES):
            for key in ("review", "plan"):
                value = {"text": f"{key} notes about {ns} {QUERIES[number % len(QUERIES)]}"}
                harness.run(memory.add_memory(ns, key, value, "semantic", "me", harness.task_id))

        @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(
            session_id=st.sampled_from(["s1", "s2", "s3"]),
            user_id=st.sampled_from(["alice", "alice2", "bob", "al"]),
            app_name=st.sampled_from(["a1", "a2"]),
            project_id=st.none() | st.sampled_from(["p1", "p2"]),
            prefix=st.sampled_from(PREFIXES),
            query=st.sampled_from(QUERIES),
            limit=st.integers(1, 30),
        )
        def check(
            session_id: str,
            user_id: str,
            app_name: str,
            project_id: str | None,
            prefix: str,
            query: str,
            limit: int,
        ) -> None:
            context = AccessContext(
                session_id=session_id, user_id=user_id, app_name=app_name, project_id=project_id
            )
            scoped = memory.scoped(context)
            readable = context.readable_roots()
            try:
                found = harness.run(scoped.search_memories(prefix, None, limit, query=query))
            except AccessDeniedError:
                assert not any(is_in_subtree(prefix, root) for root in readable)
                return
            assert all(any(is_in_subtree(r["namespace"], root) for root in readable) for r in found)
            assert found == harness.run(memory.search_memories(prefix, None, limit, query=query))

        check()
    finally:
        harness.close()
