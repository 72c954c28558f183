"""Pausing Python's cyclic garbage collector around a bulk run."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """Run the block with the collector off; its previous state comes back, even on error.

    Building or folding ~10⁵ acyclic objects (records, final decisions) sets off repeated full
    collections that find nothing: they cost simulate 2-3x its time and replay about 15%. The
    engine makes no reference cycles per record, so nothing piles up while paused."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
