"""One run per run directory at a time: two runs writing the same stage folders would corrupt each other's
outputs and completion markers. An advisory lock (fasteners' InterProcessLock, released by the OS when the
holder dies, so a killed run never leaves a stale lock) is held for as long as a run works."""

from __future__ import annotations

import contextlib
import os
import socket

from pipeline.core.errors import StageError

LOCK = ".ruyi2.lock"
HOLDER = ".ruyi2.lock.holder"


class RunDirLocked(StageError):
    pass


@contextlib.contextmanager
def run_lock(root: str):
    import fasteners

    os.makedirs(root, exist_ok=True)
    lock = fasteners.InterProcessLock(os.path.join(root, LOCK))
    if not lock.acquire(blocking=False):
        holder = os.path.join(root, HOLDER)
        who = open(holder).read().strip() if os.path.exists(holder) else "unknown"
        raise RunDirLocked(f"{root}: another ruyi2 run is working in this run directory ({who}); wait for it to end or "
                           "give this run another run_dir")
    try:
        with open(os.path.join(root, HOLDER), "w") as f:
            f.write(f"pid {os.getpid()} on {socket.gethostname()}")
        yield
    finally:
        lock.release()
