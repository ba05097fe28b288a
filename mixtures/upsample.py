"""Physical upsampling: a source that must be repeated is written several times before tokenizing.

Megatron's blend repeats a prefix by sampling it more often, which is the normal way; writing copies is
for a source whose repetition must be visible in the token files themselves (a consumer that reads the
files without the blend, or a cap on the sampler's epochs). A factor f gives floor(f) copies of every
document plus one more for a fraction f - floor(f) of them, chosen by a hash of the id (deterministic).
Held-out documents are never repeated. Copies keep the document id (the provenance sidecar maps every
sequence back to its document) and carry ``metadata["repeat"] = i``."""

from __future__ import annotations

import math

import xxhash
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from mixtures.heldout import HELDOUT
from pipeline.core.tokens import N_TOKENS

REPEAT = "repeat"


def copies(doc_id: str, factor: float) -> int:
    whole = math.floor(factor)
    extra = xxhash.xxh64_intdigest(f"upsample:{doc_id}") % 1_000_000 < (factor - whole) * 1_000_000
    return whole + int(extra)


class PhysicalUpsampler(PipelineStep):
    name = "🔁 Physical upsampling"
    type = "🔀 - MIXTURE"

    def __init__(self, factors: dict[str, float]):
        super().__init__()
        self.factors = factors

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            src = doc.metadata["source"]
            factor = self.factors.get(src, 1.0)
            n = 1 if doc.metadata.get(HELDOUT) or factor == 1.0 else copies(str(doc.id), factor)
            doc.metadata[REPEAT] = 0
            yield doc
            for i in range(1, n):
                self.stat_update(f"repeated_docs/{src}")
                self.stat_update(f"repeated_tokens/{src}", value=int(doc.metadata.get(N_TOKENS, 0)))
                yield Document(text=doc.text, id=doc.id, metadata={**doc.metadata, REPEAT: i})
