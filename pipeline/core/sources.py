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
"""

from __future__ import annotations

import json
import os
import time
import zlib
from typing import Iterator

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from loguru import logger

from pipeline.core.config import SourceConfig
from pipeline.core.documents import QUARANTINE_REASON, DocWriter
from pipeline.core.records import BadRecord, jsonl_records, parquet_rows

# A quarantined record keeps at most this much of its raw content (its full size is recorded).
MAX_QUARANTINE_BYTES = 1 << 20
READ_STAT = "read/"
QUARANTINE_STAT = "quarantined/"
POSITION = "position"
# set by the reader; an input field of the same name is overwritten
RESERVED = ("source", "domain", "language", "origin", POSITION)


class _Bad(Exception):
    def __init__(self, reason: str, raw: str):
        self.reason, self.raw = reason, raw


def source_root(files: list[str]) -> str:
    """The folder a source's document ids are relative to: its files' common folder."""
    return os.path.commonpath(files) if len(files) > 1 else os.path.dirname(files[0]) if files else ""


def input_files(sources: list[SourceConfig], roots: dict[str, str] | None = None) -> list[tuple[SourceConfig, str, str]]:
    """(source, file, name relative to the source's root) of every input file, in input order. ``roots``
    overrides a source's root (an increment's files named as a run over all of the source's files would)."""
    out = []
    for s in sources:
        files = s.files()
        root = (roots or {}).get(s.name) or source_root(files)
        out.extend((s, f, os.path.relpath(f, root) if root else os.path.basename(f)) for f in files)
    return out


class SourceReader(PipelineStep):
    """Streams every source's files, dealt round-robin to ranks by input order; yields Documents with
    source/domain/language/origin/position."""

    name = "📥 Source reader"
    type = "📖 - READER"

    def __init__(self, sources: list[SourceConfig], quarantine_folder: str, progress_every_s: float = 10.0,
                 file_offset: int = 0, roots: dict[str, str] | None = None):
        super().__init__()
        self.sources = [s.model_dump() for s in sources]
        self.quarantine_folder = quarantine_folder
        self.progress_every_s = progress_every_s
        # an increment's files come after the earlier layers' in the input order
        self.file_offset, self.roots = file_offset, dict(roots or {})

    def shard_files(self, rank: int, world_size: int) -> list[tuple[int, dict, str, str]]:
        files = input_files([SourceConfig.model_validate(s) for s in self.sources], self.roots)
        return [(self.file_offset + i, s.model_dump(), f, rel) for i, (s, f, rel) in enumerate(files)][rank::world_size]

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        files = self.shard_files(rank, world_size)
        last_log, n_docs = time.monotonic(), 0
        with DocWriter(self.quarantine_folder) as quarantine:
            for i, (file_index, src, path, rel) in enumerate(files):
                for item in self._read_file(src, path, rel, file_index):
                    self.stat_update(READ_STAT + src["name"])
                    if QUARANTINE_REASON not in item.metadata:
                        n_docs += 1
                        yield item
                    else:
                        self.stat_update(QUARANTINE_STAT + src["name"])
                        self.stat_update(f"{QUARANTINE_STAT}{src['name']}/{item.metadata[QUARANTINE_REASON]}")
                        quarantine.write(item, rank)
                    if time.monotonic() - last_log > self.progress_every_s:
                        last_log = time.monotonic()
                        logger.info(f"rank {rank}: file {i + 1}/{len(files)} ({rel}), {n_docs} documents read")

    # ------------------------------------------------------------------------------------------ formats
    def _read_file(self, src: dict, path: str, rel: str, file_index: int) -> Iterator[Document]:
        fmt = src["format"]
        try:
            if fmt in ("jsonl", "jsonl.gz"):
                rows = jsonl_records(path)
            elif fmt == "parquet":
                rows = parquet_rows(path)
            else:
                yield self._read_text_file(src, path, rel, file_index)
                return
            for n, record in rows:
                try:
                    if isinstance(record, BadRecord):
                        raise _Bad(record.reason, record.raw)
                    yield self._document(src, record, rel, n, file_index)
                except _Bad as bad:
                    yield self._quarantined(src, f"{rel}:{n}", path, n, bad.reason, bad.raw)
        except (OSError, EOFError, zlib.error, ValueError) as e:
            # an unreadable or truncated file: what was read so far stays; the rest is recorded here
            yield self._quarantined(src, f"{rel}:unreadable", path, None, "unreadable_file", f"{type(e).__name__}: {e}")

    def _read_text_file(self, src: dict, path: str, rel: str, file_index: int) -> Document:
        with open(path, "rb") as f:
            raw = f.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return self._quarantined(src, rel, path, None, "undecodable_utf8", raw.decode("utf-8", "replace"))
        try:
            return self._document(src, {src["text_field"]: text}, rel, None, file_index, doc_id=f"{src['name']}/{rel}")
        except _Bad as bad:
            return self._quarantined(src, rel, path, None, bad.reason, bad.raw)

    # ------------------------------------------------------------------------------------------ records
    def _document(self, src: dict, record: dict, rel: str, line: int | None, file_index: int,
                  doc_id: str | None = None) -> Document:
        text_field, id_field = src["text_field"], src["id_field"]
        if text_field not in record:
            raise _Bad(f"missing_text_field:{text_field}", json.dumps(record, ensure_ascii=False, default=str))
        text = record.pop(text_field)
        if not isinstance(text, str):
            raise _Bad("text_not_a_string", json.dumps({text_field: text}, ensure_ascii=False, default=str))
        if not text:
            raise _Bad("empty_text", text)
        if not text.strip():
            raise _Bad("whitespace_only_text", text)
        if doc_id is None:
            rid = record.pop(id_field, None) if id_field else None
            doc_id = f"{src['name']}/{rid}" if rid not in (None, "") else f"{src['name']}/{rel}:{line}"
        nested = record.pop("metadata", None)
        metadata = (nested if isinstance(nested, dict) else {} if nested is None else {"metadata": nested}) | record
        metadata.update(
            source=src["name"],
            domain=src["domain"],
            language=src["language"],
            origin=f"{rel}:{line}" if line is not None else rel,
        )
        metadata[POSITION] = [file_index, line or 0]
        return Document(text=text, id=doc_id, metadata=metadata)

    def _quarantined(self, src: dict, doc_id: str, path: str, line: int | None, reason: str, raw: str) -> Document:
        size = len(raw.encode("utf-8", "replace"))
        return Document(
            text=raw[:MAX_QUARANTINE_BYTES],
            id=f"{src['name']}/{doc_id}",
            metadata={
                "source": src["name"],
                "domain": src["domain"],
                "language": src["language"],
                "file": path,
                "line": line,
                "raw_bytes": size,
                QUARANTINE_REASON: reason,
            },
        )
