"""A set of strings held as memory-mapped arrays: datatrove's 4.56 million blocked domains for the URL rule.

datatrove's ``URLFilter`` keeps its domain list as a Python set: ~670 MiB and ~2 CPU seconds in every filter
worker, more than either quality classifier. Here the list is built once per machine into three arrays in the
user's cache (64-bit BLAKE2b hash of each string sorted, offsets, the strings' UTF-8 bytes) and every worker maps
them read-only: the kernel shares the pages between the workers of a node, and a worker touches only the few
pages its lookups read. A lookup finds the hash by binary search and compares the stored bytes, so membership
is exact (a hash collision costs one more comparison, never a wrong answer). No library offers a compact
exact string set that memory-maps from a file and builds without a compiler (marisa-trie needs one on some
platforms), which is why this is written here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from typing import Iterable

import numpy as np
from datatrove.pipeline.filters.url_filter import parse_list

from pipeline.core.cache import cache_root, private_cache

FORMAT = 1


def _hash(value: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(value, digest_size=8).digest(), "little")


class DomainSet:
    """``x in domains`` for the strings of a list file (read as datatrove reads it: lines starting with ``#``
    skipped, the others stripped) plus ``extra``."""

    def __init__(self, list_file: str, extra: Iterable[str] = ()):
        root = private_cache("domain_sets")
        folder = self._build(root, list_file, sorted(set(extra)))
        self.hashes = np.load(os.path.join(folder, "hashes.npy"), mmap_mode="r")
        self.offsets = np.load(os.path.join(folder, "offsets.npy"), mmap_mode="r")
        self.blob = np.load(os.path.join(folder, "blob.npy"), mmap_mode="r")
        cache = cache_root()
        if cache is None or root != os.path.join(cache, "domain_sets"):
            # caching is off: a temporary folder of this process's, removed now (the mapped pages stay valid)
            shutil.rmtree(root, ignore_errors=True)

    def __len__(self) -> int:
        return len(self.hashes)

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, str):
            return False
        data = value.encode("utf-8", "surrogatepass")
        h = np.uint64(_hash(data))
        i = int(np.searchsorted(self.hashes, h))
        while i < len(self.hashes) and self.hashes[i] == h:
            if self.blob[int(self.offsets[i]):int(self.offsets[i + 1])].tobytes() == data:
                return True
            i += 1
        return False

    @staticmethod
    def _build(root: str, list_file: str, extra: list[str]) -> str:
        """The arrays' folder for this list file (by path, size and modification time) and these extras, built
        first if the cache does not hold it yet (atomically: a folder renamed into place)."""
        st = os.stat(list_file)
        key = hashlib.sha256(json.dumps([FORMAT, os.path.abspath(list_file), st.st_size, st.st_mtime_ns, extra]).encode()).hexdigest()
        folder = os.path.join(root, key[:32])
        if os.path.exists(os.path.join(folder, "blob.npy")):
            return folder
        with open(list_file, encoding="utf-8") as f:
            values = parse_list(f, do_normalize=False) | set(extra)  # datatrove's own reading of its lists
        encoded = [v.encode("utf-8", "surrogatepass") for v in values]
        hashes = np.fromiter((_hash(b) for b in encoded), dtype=np.uint64, count=len(encoded))
        order = np.lexsort((np.arange(len(encoded)), hashes))  # by hash; the tie order does not matter
        encoded = [encoded[i] for i in order.tolist()]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        tmp = tempfile.mkdtemp(dir=root, prefix=".building-")
        np.save(os.path.join(tmp, "hashes.npy"), hashes[order])
        np.save(os.path.join(tmp, "offsets.npy"), offsets)
        np.save(os.path.join(tmp, "blob.npy"), np.frombuffer(b"".join(encoded), dtype=np.uint8))
        try:
            os.rename(tmp, folder)
        except OSError:  # another worker published the same arrays first
            shutil.rmtree(tmp)
        return folder
