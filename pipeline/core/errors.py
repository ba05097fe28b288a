"""The error every stage raises for a run that cannot go on: the command line prints its message (which
says why and what to do) and exits with status 1."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil


class StageError(RuntimeError):
    """A stage could not run or finish; the message says why and what to do."""

    stack: str | None = None  # the traceback of a worker process the error happened in, when there was one


# errors of the storage under a run: reported with the path and, when space ran out, what is left
_STORAGE = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exceeded",
            errno.EACCES: "permission denied", errno.EPERM: "operation not permitted", errno.EROFS: "the filesystem is read-only"}


class StorageError(StageError):
    """The run's storage refused a write (full, over quota, read-only, not permitted); names the path."""


def storage_error(exc: BaseException, where: str, root: str) -> StorageError | None:
    """A ``StorageError`` for an ``OSError`` of the storage kinds raised while ``where`` wrote under ``root``
    (the error's own file name when it has one: ``write()`` on a full disk gives none); None otherwise."""
    if not isinstance(exc, OSError) or exc.errno not in _STORAGE:
        return None
    path = exc.filename or root
    message = f"{where}: {_STORAGE[exc.errno]} writing {path}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        probe = os.path.abspath(root)
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        free = shutil.disk_usage(probe).free
        message += (f" (the filesystem holding {root} has {free / 2**20:,.1f} MiB free); free space there or set run_dir "
                    "elsewhere, then rerun with --resume")
    else:
        message += f"; make {root} writable or set run_dir elsewhere"
    return StorageError(message)


@contextlib.contextmanager
def storage_named(where: str, root: str):
    """Inside: a full disk or an unwritable path, from this process or a stage's workers, is re-raised as a
    ``StorageError`` naming the path, not left as a traceback."""
    try:
        yield
    except OSError as e:
        if (named := storage_error(e, where, root)) is None:
            raise
        raise named from e
