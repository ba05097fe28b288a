"""Documents between stages: datatrove Parquet shards with the columns id, text, metadata.

``metadata`` is stored as a JSON object string (keys sorted). Signals differ by domain and stage, and a
Parquet struct column needs one schema per file: datatrove's writer infers it from the first document
and silently drops keys that later documents add. A JSON string keeps every signal, and datatrove's
``ParquetReader`` decodes it back into ``Document.metadata``. Query it with polars:
``pl.col("metadata").str.json_path_match("$.source")``.
"""

from __future__ import annotations

import json
import math

from datatrove.data import Document
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.writers import ParquetWriter

# metadata keys written by the stages
REMOVED_STAGE = "removed_stage"
REMOVED_REASON = "removed_reason"
QUARANTINE_REASON = "quarantine_reason"
INPUT_FIELDS = "input_fields"  # input fields whose names the pipeline reserves, kept here instead
DROPPED_FIELDS = "dropped_fields"  # {input field: why it was not kept} (too large, too deep, an unusable id)
TEXT_BYTES = "text_bytes"  # the full size of a text that removed/ keeps only a prefix of
# Metadata keys the stages write and later read to route, count or explain a document: an input field of the
# same name would reroute it (an input `removed_reason` removing a document) or falsify the accounting, so
# the reader moves such fields under INPUT_FIELDS. Signals (lid_score, quality_score, ...) are not here: the
# tagger overwrites them when it computes them, and a source may bring its own (sources[].metadata_fields).
RESERVED_KEYS = frozenset({
    "source", "domain", "language", "origin", "position",  # the reader's
    REMOVED_STAGE, REMOVED_REASON, QUARANTINE_REASON, "filter_reason", INPUT_FIELDS, DROPPED_FIELDS, TEXT_BYTES,
    "n_tokens", "signals",  # the filter's token count and stored signals
    "exact_duplicate_of", "minhash_cluster_id", "minhash_cluster_size", "duplicate_similarity", "duplicate_of",
    "substring_chars_removed",  # dedup's
    "decontam_matches", "decontam_matched_ngrams", "decontam_cut_tokens",  # decontam's
    "bucket", "heldout", "repeat", "file_path",  # tokenize's, and datatrove's reader stamp
})
# removed/ keeps this much of a removed document's text (its full size in TEXT_BYTES): datatrove's writer
# buffers a thousand documents, and a removed 2 GB record is evidence, not data
REMOVED_TEXT_CHARS = 1 << 16


def doc_schema():
    import pyarrow as pa

    # large_string: a single batch of long documents can exceed the 2 GiB offsets of pa.string()
    return pa.schema([("id", pa.string()), ("text", pa.large_string()), ("metadata", pa.string())])


def _finite(value):
    """``value`` with every NaN or infinite float replaced by its name as a string."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # 'nan', 'inf', '-inf'
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def metadata_json(metadata: dict) -> str:
    """Metadata as strict JSON. A NaN or an infinity (an input's ``1e999`` decodes to one) would be written as
    ``NaN``/``Infinity``, which polars' JSON reader refuses for the whole object: the accounting would lose the
    document's source. Such a value is written as the string 'nan', 'inf' or '-inf'."""
    try:
        return json.dumps(metadata, sort_keys=True, ensure_ascii=False, default=str, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(metadata), sort_keys=True, ensure_ascii=False, default=str, allow_nan=False)


def doc_to_row(document: Document) -> dict:
    return {"id": str(document.id), "text": document.text, "metadata": metadata_json(document.metadata)}


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
        if len(document.text) > REMOVED_TEXT_CHARS:
            md[TEXT_BYTES] = len(document.text.encode("utf-8", "surrogatepass"))
            document.text = document.text[:REMOVED_TEXT_CHARS]
        return doc_to_row(document)


def stage_reader(folder: str, **kwargs) -> ParquetReader:
    """Reads a previous stage's output; files are split across ranks the same way on every run.

    datatrove's readers stamp ``metadata["file_path"]`` with the absolute path of the shard read: that
    path names the run directory, so the same run in another folder would write different bytes. The
    document's provenance is already in ``source`` and ``origin``, so the stamp is switched off."""
    reader = ParquetReader(folder, glob_pattern="*.parquet", recursive=False, **kwargs)
    reader.add_file_path = False  # ParquetReader.__init__ does not forward this BaseDiskReader option
    return reader
