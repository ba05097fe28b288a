"""Tokenizing documents into Megatron indexed datasets (``.bin``/``.idx``, MMIDIDX), one prefix per source.

Each rank writes its own part per source with megatron-core's ``IndexedDatasetBuilder`` (one sequence per
document, EOS appended); ``merge_parts`` then joins the parts of a source, in rank order, into a single
prefix with ``IndexedDatasetBuilder.add_index``, so the number of files does not grow with the number of
workers. Next to every prefix a ``.docids`` sidecar holds, line by line, the document id of each sequence.
datatrove's ``MegatronDocumentTokenizer`` writes one file pair per rank for all sources together and has no
merge, so it cannot give per-source prefixes.
"""

from __future__ import annotations

import glob
import os
import shutil

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.batching import batched

from mixtures.tokenizer import load_tokenizer, token_id, vocab_size

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


HELDOUT = "heldout"


def is_heldout(doc_id: str, fraction: float) -> bool:
    """A fixed, order-independent choice of held-out documents: a hash of the id below ``fraction``."""
    import xxhash

    return fraction > 0 and xxhash.xxh64_intdigest(doc_id) % 1_000_000 < fraction * 1_000_000


class MegatronPartWriter(PipelineStep):
    """Writes ``<parts>/<source>[.heldout]/<rank>.{bin,idx,docids}``: one sequence per document, EOS appended.

    Documents chosen by ``is_heldout`` go to the source's held-out part (evaluation, never trained on)."""

    name = "🧱 Megatron tokenizer"
    type = "🔢 - TOKENIZER"

    def __init__(self, tokenizer_path: str, parts_folder: str, eos_token: str, batch_size: int = 256, heldout_fraction: float = 0.0):
        super().__init__()
        self.tokenizer_path, self.parts_folder = tokenizer_path, parts_folder
        self.eos_token, self.batch_size = eos_token, batch_size
        self.heldout_fraction = heldout_fraction

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
                    if is_heldout(str(doc.id), self.heldout_fraction):
                        src = f"{src}.{HELDOUT}"
                    if src not in writers:
                        writers[src] = _PartWriter(os.path.join(self.parts_folder, src, f"{rank:05d}"), dtype)
                    ids = np.asarray(enc.ids + [eos], dtype=dtype)
                    writers[src].add(ids, str(doc.id))
                    self.stat_update(f"docs/{src}")
                    self.stat_update(f"tokens/{src}", value=len(ids))
        finally:
            for w in writers.values():
                w.close()
        return
        yield


def merge_parts(parts_folder: str, source: str, prefix: str, dtype) -> int:
    """Join a source's per-rank parts (``source`` or ``source.heldout``) into ``prefix``; returns the count."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    parts = sorted(p[: -len(".idx")] for p in glob.glob(os.path.join(parts_folder, source, "*.idx")))
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=dtype)
    with open(prefix + DOCIDS_SUFFIX, "w", encoding="utf-8") as ids_out:
        for part in parts:
            builder.add_index(part)
            with open(part + DOCIDS_SUFFIX, encoding="utf-8") as ids_in:
                shutil.copyfileobj(ids_in, ids_out)
    builder.finalize(prefix + ".idx")
    return len(parts)


def read_docids(prefix: str) -> list[str]:
    with open(prefix + DOCIDS_SUFFIX, encoding="utf-8") as f:
        return f.read().splitlines()
