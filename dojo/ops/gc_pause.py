"""Python's cyclic garbage collector held off while a large document is read or built.

A full collection scans every object of the process, and building the status document of a large
fleet allocates enough (about 150 objects per worker reply) to start one or more: 50 to 90 ms of a
1,000-worker read, measured. The document holds no reference cycles, so reference counting frees it
as before; only cycles made meanwhile wait, until the last holder in the process leaves.
"""

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_holders = 0
_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Collection off for the block; nested and concurrent blocks (threads) share one pause."""
    global _holders, _was_enabled
    with _lock:
        if _holders == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _was_enabled:
                gc.enable()
