"""Files written whole or not at all: a temporary file in the same folder, flushed and fsynced, then renamed
over the final name (``os.replace`` is atomic on POSIX filesystems), then the folder fsynced.

Every JSON, YAML or text file that marks completion (``stats.json``) or that a later stage or command reads
(contamination.json, clusters.json, plan.json, blend files, report.json, the manifest, the recipe copy, result
files) goes through here: a kill or a full disk mid-write leaves the previous file or none, never a truncated
one that a resumed run would take as finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from typing import IO, Any, Iterator


def _fsync_folder(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a folder that cannot be opened for reading (some network filesystems): the rename stands
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """``with atomic_open(path) as f: f.write(...)``: ``path`` holds the new content only once the block ends
    without an exception; on an exception the temporary file is removed and ``path`` is untouched."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    # O_EXCL: never write through a file (or link) that is already there; mode 0o666 so the umask applies as
    # for a plain open()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)


def write_json(path: str | os.PathLike, obj: Any, **dump_options: Any) -> None:
    """``json.dump(obj, f, **dump_options)`` into ``path``, atomically."""
    with atomic_open(path) as f:
        json.dump(obj, f, **dump_options)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def write_yaml(path: str | os.PathLike, data: Any, **dump_options: Any) -> None:
    import yaml

    with atomic_open(path) as f:
        yaml.safe_dump(data, f, **dump_options)
