"""One run per run directory at a time: two runs writing the same stage folders would corrupt each other's
outputs and completion markers. An advisory lock (fasteners' InterProcessLock, released by the OS when the
holder dies, so a killed run never leaves a stale lock) is held for as long as a command writes there (every
command that writes into a run directory takes it: run and the stages, add, ablate, compress, eval, report).
A process holding the lock may take it again (``ruyi2 add`` plans the base run's mixture while holding it)."""

from __future__ import annotations

import contextlib
import os
import socket

from pipeline.core.atomic import write_text
from pipeline.core.errors import StageError
from pipeline.core.printable import printable

LOCK = ".ruyi2.lock"
HOLDER = ".ruyi2.lock.holder"


class RunDirLocked(StageError):
    pass


_HELD: dict[str, int] = {}  # run directories this process holds the lock of -> how many times taken


@contextlib.contextmanager
def run_lock(root: str):
    import fasteners

    key = os.path.realpath(root)
    if key in _HELD:  # POSIX record locks belong to the process: a second one on the same file would be
        _HELD[key] += 1  # granted, and releasing it would release the first
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    os.makedirs(root, exist_ok=True)
    lock = fasteners.InterProcessLock(os.path.join(root, LOCK))
    if not lock.acquire(blocking=False):
        holder = os.path.join(root, HOLDER)
        who = printable(open(holder).read().strip()) if os.path.exists(holder) else "unknown"
        raise RunDirLocked(f"{root}: another ruyi2 run is working in this run directory ({who}); wait for it to end or "
                           "give this run another run_dir")
    _HELD[key] = 1
    try:
        write_text(os.path.join(root, HOLDER), f"pid {os.getpid()} on {socket.gethostname()}")
        yield
    finally:
        del _HELD[key]
        lock.release()
