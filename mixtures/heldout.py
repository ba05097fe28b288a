"""Held-out documents: a fixed, order-independent choice by a hash of the document id.

Tagged before bucketing and upsampling so that a held-out document is never repeated and never trained
on, whichever bucket it would fall in; the writer sends it to its source's held-out prefix."""

from __future__ import annotations

import xxhash
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

HELDOUT = "heldout"  # metadata flag, and the suffix of a source's held-out part


def is_heldout(doc_id: str, fraction: float) -> bool:
    return fraction > 0 and xxhash.xxh64_intdigest(doc_id) % 1_000_000 < fraction * 1_000_000


class HeldoutTagger(PipelineStep):
    name = "🧪 Held-out split"
    type = "🏷️ - TAGGER"

    def __init__(self, fraction: float):
        super().__init__()
        self.fraction = fraction

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            held = is_heldout(str(doc.id), self.fraction)
            doc.metadata[HELDOUT] = held
            self.stat_update(f"{HELDOUT}/{doc.metadata['source']}" if held else f"train/{doc.metadata['source']}")
            yield doc
