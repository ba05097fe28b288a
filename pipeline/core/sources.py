"""Reading raw sources into datatrove Documents, with every bad record quarantined under a named reason.

datatrove's own readers log and skip a malformed JSON line, and skip empty documents: at scale that is
data lost without a trace. This reader is written on the project's one record reader (``records.py``) so
that every record that enters the pipeline is either yielded as a Document or written to the quarantine
with its file, line and reason, and the per-source counts are kept as datatrove stats (``read/<source>``)
for the stage accounting.

Every input field but the text and the id is kept in the metadata, nested values included; a nested
``metadata`` object is merged in (datatrove's convention), so ``{"metadata": {"url": ...}}`` reaches the
URL rule. Each document also gets ``position`` = [input file index, record number]: its place in the
recipe's input order (files in recipe then path order), which dedup uses to keep the earliest copy.

Input is hostile (``filter.read`` bounds it, ``pipeline/core/records.py`` reads it): a record over the size
bound is quarantined after reading at most the bound; an input field named like a key the pipeline writes
(``removed_reason``, ``source``, ...) is kept under ``input_fields`` instead, so it cannot reroute the
document; a field too large or nested too deeply for the metadata is not kept, and an id that is not a short
string or number is replaced by the record's ``file:line`` id: both are named in ``dropped_fields``. Each such
event is counted per source (``notes/<source>/<what>``) and reported in the filter's stats.
"""

from __future__ import annotations

import json
import os
import time
from typing import Iterator

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from loguru import logger

from pipeline.core.config import JSONL_FORMATS, ReadLimits, SourceConfig
from pipeline.core.documents import DROPPED_FIELDS, INPUT_FIELDS, QUARANTINE_REASON, RESERVED_KEYS, DocWriter
from pipeline.core.printable import printable
from pipeline.core.records import BadRecord, OversizedRowGroup, jsonl_records, parquet_rows, read_text_file
from pipeline.core.storage import common_root, explain, is_store_failure, is_url, relative, store_retries
from pipeline.core.warc import warc_records

# A quarantined record keeps at most this much of its raw content (its full size is recorded).
MAX_QUARANTINE_BYTES = 1 << 20
READ_STAT = "read/"
QUARANTINE_STAT = "quarantined/"
NOTE_STAT = "notes/"
POSITION = "position"
READ_SECONDS = "read_seconds"
STORE_RETRIES = "store_retries"  # requests to object storage that botocore tried again while this step read


class _Bad(Exception):
    def __init__(self, reason: str, raw: str, raw_bytes: int | None = None):
        self.reason, self.raw, self.raw_bytes = reason, raw, raw_bytes


def _deeper_than(value, limit: int) -> bool:
    """Whether ``value`` nests lists or objects more than ``limit`` levels (iterative: no recursion to blow)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list)):
            if depth > limit:
                return True
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))
    return False


def _field_problem(value, limits: ReadLimits) -> str | None:
    """Why an input field cannot be kept in the metadata, or None (the common case costs an isinstance)."""
    if isinstance(value, str):
        if len(value) * 4 > limits.max_field_bytes and (size := len(value.encode("utf-8"))) > limits.max_field_bytes:
            return f"{size:,} bytes > filter.read.max_field_bytes"
    elif isinstance(value, (dict, list)):
        if _deeper_than(value, limits.max_field_depth):
            return f"nested deeper than filter.read.max_field_depth ({limits.max_field_depth})"
        size = len(json.dumps(value, ensure_ascii=False, default=str).encode("utf-8", "replace"))
        if size > limits.max_field_bytes:
            return f"{size:,} bytes > filter.read.max_field_bytes"
    return None


def _id_problem(rid, limits: ReadLimits) -> str | None:
    if isinstance(rid, bool) or not isinstance(rid, (str, int, float)):
        return f"an id must be a string or a number, not {type(rid).__name__}"
    if isinstance(rid, str) and len(rid) > limits.max_id_chars:
        return f"{len(rid):,} characters > filter.read.max_id_chars"
    return None


def source_root(files: list[str]) -> str:
    """The folder a source's document ids are relative to: its files' common folder (or common prefix of its
    objects: the same names, so the same ids, whether a corpus is read from disk or from a bucket)."""
    if files and all(is_url(f) for f in files):
        return common_root(files)
    return os.path.commonpath(files) if len(files) > 1 else os.path.dirname(files[0]) if files else ""


def _relative(path: str, root: str) -> str:
    if is_url(path):
        return relative(path, root if is_url(root) else "")
    return os.path.relpath(path, root) if root else os.path.basename(path)


def input_files(sources: list[SourceConfig], roots: dict[str, str] | None = None,
                listed: dict[str, list[str]] | None = None) -> list[tuple[SourceConfig, str, str]]:
    """(source, file, name relative to the source's root) of every input file, in input order. ``roots``
    overrides a source's root (an increment's files named as a run over all of the source's files would);
    ``listed``: each source's files as the stage listed them once (no listing per task: on object storage a
    listing of thousands of objects is minutes of requests)."""
    out = []
    for s in sources:
        files = (listed or {}).get(s.name)
        files = s.files() if files is None else files
        root = (roots or {}).get(s.name) or source_root(files)
        out.extend((s, f, _relative(f, root)) for f in files)
    return out


class SourceReader(PipelineStep):
    """Streams every source's files, dealt round-robin to ranks by input order; yields Documents with
    source/domain/language/origin/position."""

    name = "📥 Source reader"
    type = "📖 - READER"

    def __init__(self, sources: list[SourceConfig], quarantine_folder: str, progress_every_s: float = 10.0,
                 file_offset: int = 0, roots: dict[str, str] | None = None, limits: ReadLimits | None = None,
                 listed: dict[str, list[str]] | None = None):
        super().__init__()
        self.sources = [s.model_dump() for s in sources]
        self.quarantine_folder = quarantine_folder
        self.limits = limits or ReadLimits()
        self._note = lambda what: None  # counts a read note of the source being read (set per file)
        self.progress_every_s = progress_every_s
        # an increment's files come after the earlier layers' in the input order
        self.file_offset, self.roots = file_offset, dict(roots or {})
        self.listed = {name: list(files) for name, files in (listed or {}).items()}  # the stage's one listing

    def shard_files(self, rank: int, world_size: int) -> list[tuple[int, dict, str, str]]:
        files = input_files([SourceConfig.model_validate(s) for s in self.sources], self.roots, self.listed)
        return [(self.file_offset + i, s.model_dump(), f, rel) for i, (s, f, rel) in enumerate(files)][rank::world_size]

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        files = self.shard_files(rank, world_size)
        last_log, n_docs = time.monotonic(), 0
        # this step's own time: what passes between being asked for a document and handing it over (the
        # steps after it run while it waits at the yield); datatrove's track_time cannot wrap a generator
        own, since = 0.0, time.perf_counter()
        with DocWriter(self.quarantine_folder) as quarantine:
            retries = store_retries()
            for i, (file_index, src, path, rel) in enumerate(files):
                self._note = lambda what, name=src["name"]: self.stat_update(f"{NOTE_STAT}{name}/{what}")
                for item in self._read_file(src, path, rel, file_index):
                    self.stat_update(READ_STAT + src["name"])
                    if QUARANTINE_REASON not in item.metadata:
                        n_docs += 1
                        own += time.perf_counter() - since
                        yield item
                        since = time.perf_counter()
                    else:
                        self.stat_update(QUARANTINE_STAT + src["name"])
                        self.stat_update(f"{QUARANTINE_STAT}{src['name']}/{item.metadata[QUARANTINE_REASON]}")
                        quarantine.write(item, rank)
                    if time.monotonic() - last_log > self.progress_every_s:
                        last_log = time.monotonic()
                        logger.info(f"rank {rank}: file {i + 1}/{len(files)} ({printable(rel)}), {n_docs} documents read")
        self.stat_update(READ_SECONDS, value=own + time.perf_counter() - since)
        if store_retries() > retries:
            self.stat_update(STORE_RETRIES, value=store_retries() - retries)

    # ------------------------------------------------------------------------------------------ formats
    def _read_file(self, src: dict, path: str, rel: str, file_index: int) -> Iterator[Document]:
        fmt, limits = src["format"], self.limits
        try:
            storage = src.get("storage")
            if fmt in JSONL_FORMATS:
                rows = jsonl_records(path, limits.max_record_bytes, self._note, storage)
            elif fmt in ("parquet", "hf_parquet"):
                rows = parquet_rows(path, max_row_group_bytes=limits.max_row_group_bytes, error=None, storage=storage)
            elif fmt in ("warc", "wet"):
                src = dict(src, text_field="text", id_field="id")  # the page and its WARC record id
                rows = warc_records(path, fmt, limits.max_record_bytes, self._note, storage)
            else:
                yield self._read_text_file(src, path, rel, file_index)
                return
            for n, record in rows:
                try:
                    if isinstance(record, BadRecord):
                        raise _Bad(record.reason, record.raw, record.raw_bytes)
                    if isinstance(record, OversizedRowGroup):
                        yield self._quarantined(src, f"{rel}:row_group{record.index}", path, n, "oversized_row_group",
                                                str(record), record.size, {"rows": record.rows})
                        continue
                    yield self._document(src, record, rel, n, file_index)
                except _Bad as bad:
                    yield self._quarantined(src, f"{rel}:{n}", path, n, bad.reason, bad.raw, bad.raw_bytes)
        except Exception as e:  # noqa: BLE001 - whatever a decoder raises, the file is named, never the stage lost
            if is_url(path) and is_store_failure(e):  # the store failed, not the input: the task fails (and is retried)
                raise explain(path, e) from e
            # an unreadable or truncated file: what was read so far stays; the rest is recorded here
            yield self._quarantined(src, f"{rel}:unreadable", path, None, "unreadable_file", f"{type(e).__name__}: {e}")

    def _read_text_file(self, src: dict, path: str, rel: str, file_index: int) -> Document:
        raw, size = read_text_file(path, self.limits.max_record_bytes, self._note, src.get("storage"))
        if size is not None:
            return self._quarantined(src, rel, path, None, "oversized_record", raw[:MAX_QUARANTINE_BYTES].decode("utf-8", "replace"), size)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return self._quarantined(src, rel, path, None, "undecodable_utf8", raw.decode("utf-8", "replace"), len(raw))
        try:
            return self._document(src, {src["text_field"]: text}, rel, None, file_index, doc_id=f"{src['name']}/{rel}")
        except _Bad as bad:
            return self._quarantined(src, rel, path, None, bad.reason, bad.raw, bad.raw_bytes)

    # ------------------------------------------------------------------------------------------ records
    def _document(self, src: dict, record: dict, rel: str, line: int | None, file_index: int,
                  doc_id: str | None = None) -> Document:
        text_field, id_field = src["text_field"], src["id_field"]
        if text_field not in record:
            raise _Bad(f"missing_text_field:{text_field}", _preview(record))
        text = record.pop(text_field)
        if not isinstance(text, str):
            raise _Bad("text_not_a_string", _preview({text_field: text}))
        if not text:
            raise _Bad("empty_text", text)
        if not text.strip():
            raise _Bad("whitespace_only_text", text)
        limits = self.limits
        if len(text) * 4 > limits.max_record_bytes and (size := len(text.encode("utf-8"))) > limits.max_record_bytes:
            raise _Bad("oversized_record", text[:MAX_QUARANTINE_BYTES], size)  # a Parquet text: JSONL lines are bounded as read
        dropped: dict[str, str] = {}
        if doc_id is None:
            rid = record.pop(id_field, None) if id_field else None
            if rid not in (None, "") and (why := _id_problem(rid, limits)):
                dropped[id_field], rid = why, None
            doc_id = f"{src['name']}/{rid}" if rid not in (None, "") else f"{src['name']}/{rel}:{line}"
        nested = record.pop("metadata", None)
        fields = (nested if isinstance(nested, dict) else {} if nested is None else {"metadata": nested}) | record
        metadata, moved = {}, {}
        for key, value in fields.items():
            if (why := _field_problem(value, limits)) is not None:
                dropped[key] = why
            elif key in RESERVED_KEYS:
                moved[key] = value
            else:
                metadata[key] = value
        if moved:
            metadata[INPUT_FIELDS] = moved
            self._note("reserved_fields_moved")
        if dropped:
            metadata[DROPPED_FIELDS] = dropped
            self._note("fields_dropped")
        metadata.update(
            source=src["name"],
            domain=src["domain"],
            language=src["language"],
            origin=f"{rel}:{line}" if line is not None else rel,
        )
        metadata[POSITION] = [file_index, line or 0]
        return Document(text=text, id=doc_id, metadata=metadata)

    def _quarantined(self, src: dict, doc_id: str, path: str, line: int | None, reason: str, raw: str,
                     raw_bytes: int | None = None, extra: dict | None = None) -> Document:
        return Document(
            text=raw[:MAX_QUARANTINE_BYTES],
            id=f"{src['name']}/{doc_id}",
            metadata={
                "source": src["name"],
                "domain": src["domain"],
                "language": src["language"],
                "file": path,
                "line": line,
                "raw_bytes": raw_bytes if raw_bytes is not None else len(raw.encode("utf-8", "replace")),
                QUARANTINE_REASON: reason,
                **(extra or {}),
            },
        )


def _preview(value) -> str:
    """A bounded JSON preview of a value for the quarantine (the value may be huge or deeply nested)."""
    try:
        return json.dumps(value, ensure_ascii=False, default=str)[:MAX_QUARANTINE_BYTES]
    except (ValueError, RecursionError):
        return repr(type(value))
