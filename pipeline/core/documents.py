"""Documents between stages: datatrove Parquet shards with the columns id, text, metadata.

``metadata`` is stored as a JSON object string (keys sorted). Signals differ by domain and stage, and a
Parquet struct column needs one schema per file: datatrove's writer infers it from the first document
and silently drops keys that later documents add. A JSON string keeps every signal, and datatrove's
``ParquetReader`` decodes it back into ``Document.metadata``. Query it with polars:
``pl.col("metadata").str.json_path_match("$.source")``.
"""

from __future__ import annotations

import json

from datatrove.data import Document
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.writers import ParquetWriter

# metadata keys written by the stages
REMOVED_STAGE = "removed_stage"
REMOVED_REASON = "removed_reason"
QUARANTINE_REASON = "quarantine_reason"


def doc_schema():
    import pyarrow as pa

    # large_string: a single batch of long documents can exceed the 2 GiB offsets of pa.string()
    return pa.schema([("id", pa.string()), ("text", pa.large_string()), ("metadata", pa.string())])


def doc_to_row(document: Document) -> dict:
    return {
        "id": str(document.id),
        "text": document.text,
        "metadata": json.dumps(document.metadata, sort_keys=True, ensure_ascii=False, default=str),
    }


class DocWriter(ParquetWriter):
    """Kept documents of a stage: ``<folder>/<rank>.parquet``."""

    name = "📒 Stage output"

    def __init__(self, output_folder: str, prefix: str = "", **kwargs):
        super().__init__(output_folder, output_filename=prefix + "${rank}.parquet", compression="zstd", schema=doc_schema(), **kwargs)

    def _default_adapter(self, document: Document) -> dict:
        return doc_to_row(document)


class RemovedDocWriter(DocWriter):
    """Removed documents, each stamped with the stage and the reason it was removed."""

    name = "🗑️ Removed"

    def __init__(self, output_folder: str, stage: str, default_reason: str = "unspecified", prefix: str = "", **kwargs):
        super().__init__(output_folder, prefix, **kwargs)
        self.stage = stage
        self.default_reason = default_reason

    def _default_adapter(self, document: Document) -> dict:
        md = document.metadata
        # datatrove's filters and dedup steps record their reason as `filter_reason` (or not at all)
        md[REMOVED_REASON] = md.pop("filter_reason", None) or md.get(REMOVED_REASON) or self.default_reason
        md[REMOVED_STAGE] = self.stage
        return doc_to_row(document)


def stage_reader(folder: str, **kwargs) -> ParquetReader:
    """Reads a previous stage's output; files are split across ranks the same way on every run.

    datatrove's readers stamp ``metadata["file_path"]`` with the absolute path of the shard read: that
    path names the run directory, so the same run in another folder would write different bytes. The
    document's provenance is already in ``source`` and ``origin``, so the stamp is switched off."""
    reader = ParquetReader(folder, glob_pattern="*.parquet", recursive=False, **kwargs)
    reader.add_file_path = False  # ParquetReader.__init__ does not forward this BaseDiskReader option
    return reader
