"""Python's cyclic garbage collector paused while a batch of objects is built.

Building many objects that all stay alive until the batch ends (a bulk
write's rows, a session's events read back) crosses the collector's
allocation threshold again and again: each crossing runs a collection that
finds no garbage, every tenth of those a collection of the older generation,
and the survivors make the full collections walk the whole heap. Reference
counting still frees everything; with the collector paused, what the batch
allocated is examined once, by the first collection after it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic collector off inside the block, and back on after, unless
    something else had turned it off (then it stays off)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
