"""The one reader of JSON Lines, Parquet and text records, with bounded reads.

Every non-blank line of a JSONL file is a record or a ``BadRecord`` with its line number and reason
(oversized_record, undecodable_utf8, malformed_json, too_deeply_nested, number_too_large,
not_a_json_object): nothing is skipped without a trace, whatever the decoder raises. Files are decompressed
by their suffix (``.gz``, ``.bz2``, ``.xz``, ``.zst``). A line is read at most ``max_record_bytes`` (+1) at a time, so a 10 GB line, or a small ``.gz`` that inflates to one, costs
that bound in memory, not its size. A UTF-8 byte-order mark at the start of a file (Windows exports write
one) is dropped, as ``utf-8-sig`` does, and reported through ``notes``. Parquet is read in bounded batches
with buffered column reads, and a row group larger than ``max_row_group_bytes`` (uncompressed, from the
file's own metadata) is refused before it is read.

The source reader quarantines bad records; ``records`` is the strict form that raises naming ``path:line``.
datatrove's readers log and skip such lines, and skip empty texts, which is why they are not used for
inputs.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

# Defaults of the read bounds (the recipe's filter.read section can change them for the sources)
MAX_RECORD_BYTES = 64 << 20  # a JSONL line, a text file, a Parquet row's text
MAX_ROW_GROUP_BYTES = 1 << 30  # a Parquet row group, uncompressed
PARQUET_BATCH_ROWS = 512
PARQUET_BUFFER_BYTES = 1 << 20  # column chunks are read through a buffer of this size, not whole
BOM = b"\xef\xbb\xbf"
_SKIP_CHUNK = 1 << 20  # the rest of an oversized line is skipped this much at a time
BAD_PREVIEW_BYTES = 1 << 20  # what a BadRecord keeps of its raw line

Notes = Callable[[str], None]  # told of something read that is not a record (e.g. "bom_stripped")


@dataclass(frozen=True)
class BadRecord:
    line: int
    reason: str  # oversized_record | undecodable_utf8 | malformed_json | too_deeply_nested | number_too_large | not_a_json_object
    raw: str
    detail: str = ""
    raw_bytes: int | None = None  # the record's full size when ``raw`` is a prefix of it


def _zstd_reader(raw):
    """Every frame of a zstd stream (The Pile's and SlimPajama's files hold several), buffered so that
    ``readline(limit)`` reads blocks, not bytes."""
    import io

    import zstandard

    return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False),
                             buffer_size=1 << 20)


@contextmanager
def open_binary(path: str, storage: dict | None = None):
    """A local file or an object (``pipeline/core/storage.py``), decompressed by the name's suffix."""
    from pipeline.core.storage import open_input

    with open_input(path, storage) as raw:
        ext = os.path.splitext(path)[1]
        if ext in (".zst", ".zstd"):
            stream = _zstd_reader(raw)
        elif ext == ".gz":
            stream = gzip.GzipFile(fileobj=raw, mode="rb")
        elif ext in (".bz2", ".xz"):
            stream = (bz2.BZ2File if ext == ".bz2" else lzma.LZMAFile)(raw)
        else:
            stream = raw
        try:
            yield stream
        finally:
            if stream is not raw:
                stream.close()


def _skip_rest_of_line(f, read: bytes) -> int:
    """Reads and drops the rest of a line whose start ``read`` holds; returns the line's full length."""
    total = len(read)
    while not read.endswith(b"\n"):
        read = f.readline(_SKIP_CHUNK)
        if not read:
            break
        total += len(read)
    return total


# Records nested deeper are refused before decoding, whatever the interpreter's recursion limit (importing
# torch._dynamo raises it, and the C decoder would then recurse as deep as the text goes)
MAX_JSON_DEPTH = 500
_BRACKET_OR_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def too_deeply_nested(line: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text nests arrays and objects more than ``limit`` levels (strings skipped). Costs two
    counts of the text, and a scan only when it holds more than ``limit`` brackets."""
    if line.count("[") + line.count("{") <= limit:
        return False
    depth = 0
    for m in _BRACKET_OR_STRING.finditer(line):
        c = m.group()
        if c in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif c in ("]", "}"):
            depth -= 1
    return False


# a JSON escape of a UTF-16 surrogate; only a line holding one can decode to a string with a lone surrogate
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _replace_lone_surrogates(value):
    """``value`` with every lone surrogate in its strings replaced by U+FFFD: ``"\\ud800"`` is valid JSON, but
    such a string cannot be encoded as UTF-8 (pyarrow refuses it and the stage's writer would fail)."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {_replace_lone_surrogates(k): _replace_lone_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_lone_surrogates(v) for v in value]
    return value


def decode_json(line: str, notes: Notes | None = None) -> tuple[object | None, tuple[str, str] | None]:
    """(value, None), or (None, (reason, detail)) for any failure of the decoder: deep nesting raises
    RecursionError and an integer over Python's digit limit ValueError, which a stage must not die of."""
    if too_deeply_nested(line):
        return None, ("too_deeply_nested", f"nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        value = json.loads(line)
    except json.JSONDecodeError as e:
        return None, ("malformed_json", e.msg)
    except RecursionError:
        return None, ("too_deeply_nested", "nested deeper than the JSON decoder's recursion limit")
    except ValueError as e:  # int('9' * 5000): "Exceeds the limit (4300 digits) for integer string conversion"
        return None, ("number_too_large" if "digits" in str(e) else "malformed_json", str(e)[:200])
    if _SURROGATE_ESCAPE.search(line):
        fixed = _replace_lone_surrogates(value)
        if fixed != value:
            value = fixed
            if notes:
                notes("lone_surrogates_replaced")
    return value, None


def jsonl_records(path: str, max_record_bytes: int = MAX_RECORD_BYTES, notes: Notes | None = None,
                  storage: dict | None = None) -> Iterator[tuple[int, dict | BadRecord]]:
    """(line number, record) for every non-blank line; a line that is not a JSON object is a BadRecord.
    ``storage``: the source's object-storage options, when ``path`` is a URL."""
    with open_binary(path, storage) as f:
        n = 0
        while True:
            raw = f.readline(max_record_bytes + 1)
            if not raw:
                return
            n += 1
            if n == 1 and raw.startswith(BOM):
                raw = raw[len(BOM):]
                if notes:
                    notes("bom_stripped")
            if len(raw) > max_record_bytes:
                size = _skip_rest_of_line(f, raw)
                yield n, BadRecord(n, "oversized_record", raw[:BAD_PREVIEW_BYTES].decode("utf-8", "replace"),
                                   f"{size:,} bytes > the bound of {max_record_bytes:,}", size)
                continue
            if not raw.strip():
                continue  # a blank line holds no record
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield n, BadRecord(n, "undecodable_utf8", raw[:BAD_PREVIEW_BYTES].decode("utf-8", "replace"), str(e), len(raw))
                continue
            rec, bad = decode_json(line, notes)
            if bad:
                yield n, BadRecord(n, bad[0], line[:BAD_PREVIEW_BYTES], bad[1], len(raw))
            elif not isinstance(rec, dict):
                yield n, BadRecord(n, "not_a_json_object", line[:BAD_PREVIEW_BYTES], type(rec).__name__, len(raw))
            else:
                yield n, rec


_SAYS = {"undecodable_utf8": "not valid UTF-8", "malformed_json": "not valid JSON", "not_a_json_object": "not a JSON object",
         "oversized_record": "a record over the size bound", "too_deeply_nested": "JSON nested too deeply",
         "number_too_large": "a number too large to decode"}


def records(path: str, error: type[Exception] = ValueError, max_record_bytes: int = MAX_RECORD_BYTES
            ) -> Iterator[tuple[str, dict]]:
    """Strict: (``path:line``, record) for every line; ``error`` is raised, naming the line, for a bad one."""
    for n, rec in jsonl_records(path, max_record_bytes):
        if isinstance(rec, BadRecord):
            raise error(f"{path}:{n}: {_SAYS[rec.reason]} ({rec.detail})")
        yield f"{path}:{n}", rec


def read_text_file(path: str, max_record_bytes: int = MAX_RECORD_BYTES, notes: Notes | None = None,
                   storage: dict | None = None) -> tuple[bytes, int | None]:
    """(content, None), or (its first ``max_record_bytes`` bytes, the file's size) for a larger file; at most
    the bound (+1) is read. A leading byte-order mark is dropped."""
    from pipeline.core.storage import open_input

    with open_input(path, storage) as f:
        raw = f.read(max_record_bytes + 1)
        if len(raw) > max_record_bytes:
            f.seek(0, 2)
            return raw[:max_record_bytes], f.tell()
    if raw.startswith(BOM):
        raw = raw[len(BOM):]
        if notes:
            notes("bom_stripped")
    return raw, None


def read_json_file(path: str, error: type[Exception] = ValueError, max_bytes: int = MAX_RECORD_BYTES):
    """A whole JSON file (a benchmark's release file), read up to ``max_bytes``; any failure is ``error``
    naming the file (a byte-order mark is dropped, deep nesting and huge numbers are named, not raised)."""
    raw, size = read_text_file(path, max_bytes)
    if size is not None:
        raise error(f"{path}: {size:,} bytes, over the bound of {max_bytes:,}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: not valid UTF-8 ({e})") from None
    value, bad = decode_json(text)
    if bad:
        raise error(f"{path}: {_SAYS[bad[0]]} ({bad[1]})")
    return value


class OversizedRowGroup(Exception):
    """A Parquet row group over the bound, refused before it is read; names the file and the sizes."""

    def __init__(self, path: str, index: int, rows: int, size: int, bound: int):
        super().__init__(f"{path}: row group {index} holds {rows:,} rows in {size:,} bytes (uncompressed), over the bound "
                         f"of {bound:,}; rewrite the file with smaller row groups (pyarrow: row_group_size)")
        self.index, self.rows, self.size = index, rows, size


def parquet_rows(path: str, columns: list[str] | None = None, batch_size: int = PARQUET_BATCH_ROWS,
                 max_row_group_bytes: int = MAX_ROW_GROUP_BYTES, error: type[Exception] | None = ValueError,
                 storage: dict | None = None) -> Iterator[tuple[int, dict | OversizedRowGroup]]:
    """(row number from 1, row) streamed by batches: memory follows the batch and the read buffer, not the file.
    A row group over ``max_row_group_bytes`` is not read: ``error`` is raised naming it, or with ``error=None``
    its rows are skipped as one ``OversizedRowGroup`` item (numbered by its first row) for the caller to
    quarantine."""
    import pyarrow.parquet as pq

    from pipeline.core.storage import open_input

    row = 0
    with open_input(path, storage) as source, pq.ParquetFile(source, buffer_size=PARQUET_BUFFER_BYTES, pre_buffer=False) as pf:
        absent = [c for c in columns or () if c not in pf.schema_arrow.names]
        if absent:  # pyarrow would yield rows without them
            raise KeyError(f"{path}: no column {absent[0]!r} (columns: {pf.schema_arrow.names})")
        for g in range(pf.num_row_groups):
            meta = pf.metadata.row_group(g)
            if meta.total_byte_size > max_row_group_bytes:
                refused = OversizedRowGroup(path, g, meta.num_rows, meta.total_byte_size, max_row_group_bytes)
                if error is not None:
                    raise error(str(refused))
                yield row + 1, refused
                row += meta.num_rows
                continue
            for batch in pf.iter_batches(batch_size=batch_size, row_groups=[g], columns=columns):
                for rec in batch.to_pylist():
                    row += 1
                    yield row, rec
