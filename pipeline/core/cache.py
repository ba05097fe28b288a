"""The user's ruyi2 cache: ``$RUYI2_CACHE`` (``off`` turns caching off), else ``$XDG_CACHE_HOME/ruyi2`` or
``~/.cache/ruyi2``. Holds the decontamination index cache and jieba's dictionary cache.

Whatever a cache holds may be loaded as code or trusted data (jieba loads its cache with ``marshal``), so a
cache folder must be the user's own: created with mode 0700, and refused when another user owns it or others
may write to it. jieba's default is a predictable name in the shared ``/tmp``, which any local user can
pre-create.
"""

from __future__ import annotations

import os
import stat
import tempfile

CACHE_ENV = "RUYI2_CACHE"


def cache_root() -> str | None:
    """The cache's root folder, or None when ``RUYI2_CACHE=off``."""
    value = os.environ.get(CACHE_ENV, "")
    if value == "off":
        return None
    return value or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "ruyi2")


def private_folder(path: str) -> bool:
    """Create ``path`` (mode 0700) if needed; True when it is a folder of this user that no one else may write."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def private_cache(part: str) -> str:
    """A private folder for ``part`` under the cache root; a fresh private temporary folder (this process's
    only) when caching is off or the cache folder is not private."""
    root = cache_root()
    if root is not None:
        path = os.path.join(root, part)
        if private_folder(root) and private_folder(path):
            return path
    return tempfile.mkdtemp(prefix=f"ruyi2-{part}-")  # mode 0700, a name nobody could guess
