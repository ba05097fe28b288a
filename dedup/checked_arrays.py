"""Intermediate numpy arrays written with a header that lets the reader prove they are whole.

A dedup intermediate that is truncated (disk full, a killed worker) or corrupt must fail where it is read,
naming the file, not later as a wrong result (datatrove's MinHash reports such files as a "hash order
error" stages later). Header: magic, header length, JSON {dtype, count, xxh64 of the payload}.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import xxhash

from pipeline.core.atomic import atomic_open

MAGIC = b"RUYI2ARR"


class CorruptIntermediate(RuntimeError):
    """An intermediate file is truncated, corrupt or of the wrong type; the message names it."""


def write_checked(path: str, arr: np.ndarray) -> None:
    payload = np.ascontiguousarray(arr).tobytes()
    header = json.dumps({"dtype": np.lib.format.dtype_to_descr(arr.dtype), "count": int(len(arr)),
                         "xxh64": xxhash.xxh64_hexdigest(payload)}).encode()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with atomic_open(path, "wb") as f:  # a reader never sees a half-written file under the final name
        f.write(MAGIC + struct.pack("<I", len(header)) + header + payload)


def _header(path: str, f, dtype: np.dtype, payload_bytes: int) -> dict:
    """Check the magic, the record type and the payload length of an open checked array file, named."""
    head = f.read(12)
    if head[:8] != MAGIC or len(head) < 12:
        raise CorruptIntermediate(f"{path}: not a checked array file (bad magic); delete the stage's work folder and rerun it")
    (hlen,) = struct.unpack("<I", head[8:12])
    try:
        header = json.loads(f.read(hlen))
    except ValueError:
        raise CorruptIntermediate(f"{path}: unreadable header") from None
    if np.lib.format.descr_to_dtype(header["dtype"]) != dtype:
        raise CorruptIntermediate(f"{path}: holds {header['dtype']}, expected {dtype}")
    payload = payload_bytes - 12 - hlen
    if payload != header["count"] * dtype.itemsize:
        raise CorruptIntermediate(f"{path}: truncated: {payload} bytes, header says {header['count']} records "
                                  f"of {dtype.itemsize} bytes")
    header["offset"] = 12 + hlen
    return header


def read_checked(path: str, dtype: np.dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    with open(path, "rb") as f:
        header = _header(path, f, dtype, os.fstat(f.fileno()).st_size)
        payload = f.read()
    if xxhash.xxh64_hexdigest(payload) != header["xxh64"]:
        raise CorruptIntermediate(f"{path}: checksum mismatch (corrupt file)")
    return np.frombuffer(payload, dtype=dtype)


def map_checked(path: str, dtype: np.dtype) -> np.ndarray:
    """The records of a checked array file, memory-mapped for reading rows at random: magic, type and length
    are verified (a truncated file still fails here, named); the checksum is not, since that would read the
    whole file to fetch a few rows."""
    dtype = np.dtype(dtype)
    with open(path, "rb") as f:
        header = _header(path, f, dtype, os.fstat(f.fileno()).st_size)
    if header["count"] == 0:
        return np.empty(0, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=header["offset"], shape=(header["count"],))


def checked_count(path: str, dtype: np.dtype) -> int:
    """The number of records a checked array file holds, from its header (the file is verified whole-length,
    its payload not read)."""
    dtype = np.dtype(dtype)
    with open(path, "rb") as f:
        return int(_header(path, f, dtype, os.fstat(f.fileno()).st_size)["count"])


def hash_range(part: int, ranges: int) -> tuple[np.uint64, np.uint64]:
    """The ``part``-th of ``ranges`` equal ranges of uint64 values, as inclusive bounds."""
    return np.uint64((part << 64) // ranges), np.uint64(((part + 1) << 64) // ranges - 1)


def records_in_range(files: list[str], dtype: np.dtype, field: str, lo: int, hi: int, whole: bool = False) -> np.ndarray:
    """The records of checked array files, each sorted by ``field``, whose ``field`` lies in [lo, hi]: one slice
    of each file. Files are memory-mapped and only the slice is read (a truncated file still fails on its
    header), so a task reading one range of many files holds that range, not the files; with ``whole`` (the
    range covers everything) the files are read whole and their checksums verified."""
    dtype = np.dtype(dtype)
    if whole:
        parts = [read_checked(f, dtype) for f in files]
    else:
        parts = []
        for f in files:
            rows = map_checked(f, dtype)
            a = np.searchsorted(rows[field], np.asarray(lo, rows.dtype[field]), side="left")
            b = np.searchsorted(rows[field], np.asarray(hi, rows.dtype[field]), side="right")
            parts.append(np.array(rows[a:b]))
    return np.concatenate(parts) if parts else np.empty(0, dtype)
