"""Reading raw sources into datatrove Documents, with every bad record quarantined under a named reason.

datatrove's own readers log and skip a malformed JSON line, and skip empty documents: at scale that is
data lost without a trace. This reader is written by hand so that every record that enters the pipeline
is either yielded as a Document or written to the quarantine with its file, line and reason, and the
per-source counts are kept as datatrove stats (``read/<source>``) for the stage accounting.
"""

from __future__ import annotations

import gzip
import json
import os
import time
import zlib
from typing import Iterator

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from loguru import logger

from pipeline.documents import QUARANTINE_REASON, DocWriter
from pipeline.recipe import SourceConfig, expand_source_files

# A quarantined record keeps at most this much of its raw content (its full size is recorded).
MAX_QUARANTINE_BYTES = 1 << 20
READ_STAT = "read/"
QUARANTINE_STAT = "quarantined/"


class _Bad(Exception):
    def __init__(self, reason: str, raw: str):
        self.reason, self.raw = reason, raw


class SourceReader(PipelineStep):
    """Streams every source's files, split across ranks; yields Documents with source/domain/language."""

    name = "📥 Source reader"
    type = "📖 - READER"

    def __init__(self, sources: list[SourceConfig], quarantine_folder: str, progress_every_s: float = 10.0):
        super().__init__()
        self.sources = [s.model_dump() for s in sources]
        self.quarantine_folder = quarantine_folder
        self.progress_every_s = progress_every_s

    # files are listed in recipe order then path order, and dealt round-robin to ranks: deterministic
    def shard_files(self, rank: int, world_size: int) -> list[tuple[dict, str, str]]:
        all_files = []
        for s in self.sources:
            files = expand_source_files(SourceConfig.model_validate(s))
            root = os.path.commonpath(files) if len(files) > 1 else os.path.dirname(files[0]) if files else ""
            all_files.extend((s, f, os.path.relpath(f, root) if root else os.path.basename(f)) for f in files)
        return all_files[rank::world_size]

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        files = self.shard_files(rank, world_size)
        last_log, n_docs = time.monotonic(), 0
        with DocWriter(self.quarantine_folder) as quarantine:
            for i, (src, path, rel) in enumerate(files):
                for item in self._read_file(src, path, rel):
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
    def _read_file(self, src: dict, path: str, rel: str) -> Iterator[Document]:
        fmt = src["format"]
        try:
            if fmt in ("jsonl", "jsonl.gz"):
                yield from self._read_jsonl(src, path, rel)
            elif fmt == "parquet":
                yield from self._read_parquet(src, path, rel)
            else:
                yield self._read_text_file(src, path, rel)
        except (OSError, EOFError, zlib.error, ValueError) as e:
            # an unreadable or truncated file: what was read so far stays; the rest is recorded here
            yield self._quarantined(src, f"{rel}:unreadable", path, None, "unreadable_file", f"{type(e).__name__}: {e}")

    def _read_jsonl(self, src: dict, path: str, rel: str) -> Iterator[Document]:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            for line_no, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue  # a blank line holds no record
                try:
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError as e:
                        raise _Bad("undecodable_utf8", raw.decode("utf-8", "replace")) from e
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise _Bad("malformed_json", line) from e
                    if not isinstance(record, dict):
                        raise _Bad("not_a_json_object", line)
                    yield self._document(src, record, rel, line_no)
                except _Bad as bad:
                    yield self._quarantined(src, f"{rel}:{line_no}", path, line_no, bad.reason, bad.raw)

    def _read_parquet(self, src: dict, path: str, rel: str) -> Iterator[Document]:
        import pyarrow.parquet as pq

        with pq.ParquetFile(path) as pf:
            row = 0
            for batch in pf.iter_batches(batch_size=512):
                for record in batch.to_pylist():
                    row += 1
                    try:
                        yield self._document(src, record, rel, row)
                    except _Bad as bad:
                        yield self._quarantined(src, f"{rel}:{row}", path, row, bad.reason, bad.raw)

    def _read_text_file(self, src: dict, path: str, rel: str) -> Document:
        with open(path, "rb") as f:
            raw = f.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return self._quarantined(src, rel, path, None, "undecodable_utf8", raw.decode("utf-8", "replace"))
        try:
            return self._document(src, {src["text_field"]: text}, rel, None, doc_id=f"{src['name']}/{rel}")
        except _Bad as bad:
            return self._quarantined(src, rel, path, None, bad.reason, bad.raw)

    # ------------------------------------------------------------------------------------------ records
    def _document(self, src: dict, record: dict, rel: str, line: int | None, doc_id: str | None = None) -> Document:
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
        metadata = {k: v for k, v in record.items() if isinstance(v, (str, int, float, bool))}
        metadata.update(
            source=src["name"],
            domain=src["domain"],
            language=src["language"],
            origin=f"{rel}:{line}" if line is not None else rel,
        )
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
