"""Tokenizing documents into Megatron indexed datasets (``.bin``/``.idx``, MMIDIDX), one prefix per unit
(a source, or a quality bucket of a source) plus one held-out prefix per source.

Each rank writes its own part per unit with megatron-core's ``IndexedDatasetBuilder`` (one sequence per
document, EOS appended); ``merge_parts`` then joins the parts of a source, in rank order, into a single
prefix with ``IndexedDatasetBuilder.add_index``, so the number of files does not grow with the number of
workers. Next to every prefix a ``.docids`` sidecar holds, line by line, the document id of each sequence.
datatrove's ``MegatronDocumentTokenizer`` writes one file pair per rank for all sources together and has no
merge, so it cannot give per-source prefixes.
"""

from __future__ import annotations

import gc
import glob
import os
import shutil

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.batching import batched

from mixtures.buckets import BUCKET, unit_name
from mixtures.heldout import HELDOUT
from mixtures.upsample import REPEAT
from pipeline.core.tokens import load_tokenizer, token_id, vocab_size

DOCIDS_SUFFIX = ".docids"


def token_dtype(tokenizer_path: str):
    from megatron.core.datasets.indexed_dataset import DType

    # int32 for vocabularies over 65535 (Qwen3: 151,669 tokens), as megatron-core's GPTDataset expects
    return DType.optimal_dtype(vocab_size(tokenizer_path))


class _PartWriter:
    def __init__(self, prefix: str, dtype):
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

        os.makedirs(os.path.dirname(prefix), exist_ok=True)
        self.prefix = prefix
        self.builder = IndexedDatasetBuilder(prefix + ".bin", dtype=dtype)
        self.docids = open(prefix + DOCIDS_SUFFIX, "w", encoding="utf-8")

    def add(self, ids: np.ndarray, doc_id: str) -> None:
        import torch

        self.builder.add_item(torch.from_numpy(ids))
        self.builder.end_document()
        self.docids.write(doc_id.replace("\n", " ") + "\n")

    def close(self) -> None:
        self.builder.finalize(self.prefix + ".idx")
        self.docids.close()


class MegatronPartWriter(PipelineStep):
    """Writes ``<parts>/<unit>/<rank>.{bin,idx,docids}``: one sequence per document, EOS appended.

    The unit is ``<source>.heldout`` for documents tagged held-out (mixtures/heldout.py), else the
    source or its quality bucket (mixtures/buckets.py). Stats per unit: ``docs/``, ``tokens/`` (EOS
    included) and ``unique_docs/``, ``unique_tokens/`` (first copies only, see upsample.py)."""

    name = "🧱 Megatron tokenizer"
    type = "🔢 - TOKENIZER"

    def __init__(self, tokenizer_path: str, parts_folder: str, eos_token: str, batch_size: int = 256):
        super().__init__()
        self.tokenizer_path, self.parts_folder = tokenizer_path, parts_folder
        self.eos_token, self.batch_size = eos_token, batch_size

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        tok = load_tokenizer(self.tokenizer_path)
        eos = token_id(self.tokenizer_path, self.eos_token)
        dtype = token_dtype(self.tokenizer_path)
        writers: dict[str, _PartWriter] = {}
        try:
            for batch in batched(data, self.batch_size):
                with self.track_time(unit="batch"):
                    encodings = tok.encode_batch_fast([d.text for d in batch], add_special_tokens=False)
                for doc, enc in zip(batch, encodings):
                    src = doc.metadata["source"]
                    unit = f"{src}.{HELDOUT}" if doc.metadata.get(HELDOUT) else unit_name(src, doc.metadata.get(BUCKET))
                    if unit not in writers:
                        writers[unit] = _PartWriter(os.path.join(self.parts_folder, unit, f"{rank:05d}"), dtype)
                    ids = np.asarray(enc.ids + [eos], dtype=dtype)
                    writers[unit].add(ids, str(doc.id))
                    self.stat_update(f"docs/{unit}")
                    self.stat_update(f"tokens/{unit}", value=len(ids))
                    if not doc.metadata.get(REPEAT):
                        self.stat_update(f"unique_docs/{unit}")
                        self.stat_update(f"unique_tokens/{unit}", value=len(ids))
        finally:
            for w in writers.values():
                w.close()
        return
        yield


def merge_parts(parts_folder: str, unit: str, prefix: str, dtype) -> int:
    """Join a unit's per-rank parts into ``prefix``, in rank order; returns their count."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    parts = sorted(p[: -len(".idx")] for p in glob.glob(os.path.join(parts_folder, unit, "*.idx")))
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=dtype)
    # add_index runs a full gc.collect() per part, which walks every object of a process that has
    # torch and megatron-core loaded (~0.2 s each here); frozen objects are skipped, the part's index
    # arrays it means to free are new and still collected
    gc.freeze()
    try:
        with open(prefix + DOCIDS_SUFFIX, "w", encoding="utf-8") as ids_out:
            for part in parts:
                builder.add_index(part)
                with open(part + DOCIDS_SUFFIX, encoding="utf-8") as ids_in:
                    shutil.copyfileobj(ids_in, ids_out)
    finally:
        gc.unfreeze()
    builder.finalize(prefix + ".idx")
    return len(parts)


def read_docids(prefix: str) -> list[str]:
    with open(prefix + DOCIDS_SUFFIX, encoding="utf-8") as f:
        return f.read().splitlines()
