"""Items of ``put_memories`` for the bulk tests."""

from __future__ import annotations

from typing import Any


def bulk_items(
    task_id: str, count: int, *, start: int = 0, prefix: str = "u", users: int = 7, **extra: Any
) -> list[dict[str, Any]]:
    """``count`` new keys ``k{start}``... spread over ``users`` namespaces
    ``user:{prefix}{n}``; ``extra`` added to every item."""
    return [
        {
            "namespace": f"user:{prefix}{i % users}",
            "key": f"k{i}",
            "value": {"n": i},
            "memory_type": "semantic",
            "by": "loader",
            "task_id": task_id,
            **extra,
        }
        for i in range(start, start + count)
    ]
