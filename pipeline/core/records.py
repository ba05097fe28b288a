"""The one reader of JSON Lines and Parquet records.

Every non-blank line of a JSONL file is a record or a ``BadRecord`` with its line number and reason
(undecodable UTF-8, malformed JSON, not a JSON object): nothing is skipped without a trace. The source
reader quarantines bad records; ``records`` is the strict form that raises naming ``path:line``.
datatrove's readers log and skip such lines, and skip empty texts, which is why they are not used for
inputs.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from typing import Iterator


@dataclass(frozen=True)
class BadRecord:
    line: int
    reason: str  # undecodable_utf8 | malformed_json | not_a_json_object
    raw: str
    detail: str = ""


def open_text(path: str):
    """UTF-8 text, gunzipped when the name ends in ``.gz``."""
    return gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")


def jsonl_records(path: str) -> Iterator[tuple[int, dict | BadRecord]]:
    """(line number, record) for every non-blank line; a line that is not a JSON object is a BadRecord."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue  # a blank line holds no record
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield n, BadRecord(n, "undecodable_utf8", raw.decode("utf-8", "replace"), str(e))
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                yield n, BadRecord(n, "malformed_json", line, e.msg)
                continue
            yield n, rec if isinstance(rec, dict) else BadRecord(n, "not_a_json_object", line, type(rec).__name__)


_SAYS = {"undecodable_utf8": "not valid UTF-8", "malformed_json": "not valid JSON", "not_a_json_object": "not a JSON object"}


def records(path: str, error: type[Exception] = ValueError) -> Iterator[tuple[str, dict]]:
    """Strict: (``path:line``, record) for every line; ``error`` is raised, naming the line, for a bad one."""
    for n, rec in jsonl_records(path):
        if isinstance(rec, BadRecord):
            raise error(f"{path}:{n}: {_SAYS[rec.reason]} ({rec.detail})")
        yield f"{path}:{n}", rec


def parquet_rows(path: str, columns: list[str] | None = None, batch_size: int = 512) -> Iterator[tuple[int, dict]]:
    """(row number from 1, row) streamed by batches: memory follows the batch, not the file."""
    import pyarrow.parquet as pq

    row = 0
    with pq.ParquetFile(path) as pf:
        absent = [c for c in columns or () if c not in pf.schema_arrow.names]
        if absent:  # pyarrow would yield rows without them
            raise KeyError(f"{path}: no column {absent[0]!r} (columns: {pf.schema_arrow.names})")
        for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
            for rec in batch.to_pylist():
                row += 1
                yield row, rec
