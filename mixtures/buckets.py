"""Quality buckets: each source split by a score an earlier stage stored in the metadata ("tag once,
filter many": the score is read, never recomputed). Each bucket becomes its own token prefix, so the
mixture can weight high-quality data above its share (quality-aware upsampling)."""

from __future__ import annotations

import bisect
import math

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

BUCKET = "bucket"


def unit_name(source: str, bucket: str | None) -> str:
    """The name of a token prefix: the source, or ``<source>.<bucket>``."""
    return source if bucket is None else f"{source}.{bucket}"


class QualityBucketer(PipelineStep):
    """Sets ``metadata["bucket"]`` for documents of the sources that have buckets.

    ``specs``: source -> (score key, ascending edges, names, bucket for a missing score). A score equal
    to an edge goes to the upper bucket. A missing or non-numeric score is counted (stat
    ``missing_score/<source>``) and sent to the named bucket, never dropped."""

    name = "🪣 Quality buckets"
    type = "🏷️ - TAGGER"

    def __init__(self, specs: dict[str, tuple[str, list[float], list[str], str]]):
        super().__init__()
        self.specs = specs

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            src = doc.metadata["source"]
            spec = self.specs.get(src)
            if spec is not None:
                key, edges, names, missing = spec
                score = doc.metadata.get(key)
                if isinstance(score, bool) or not isinstance(score, (int, float)) or math.isnan(score):
                    bucket = missing
                    self.stat_update(f"missing_score/{src}")
                else:
                    bucket = names[bisect.bisect_right(edges, score)]
                doc.metadata[BUCKET] = bucket
                self.stat_update(f"{BUCKET}/{unit_name(src, bucket)}")
            yield doc
