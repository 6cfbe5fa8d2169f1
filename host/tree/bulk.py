"""gc_paused(): for code that builds a large tree in one go.

Reading a 100 MB tree allocates millions of nodes and strings, none of them
in a reference cycle; the cyclic collector would scan all of them again at
every generation-2 pass (a third of the reading time, measured in
bench/bench_scale.py). Reference counting still frees everything.
"""
from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["gc_paused"]


@contextmanager
def gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
