"""Global MinHash/LSH fuzzy deduplication with datatrove's four stages, across all sources at once.

1. signatures (one task per input shard), 2. LSH buckets (one task per bucket), 3. clusters (one task:
datatrove's union-find), 4. filter (same shards as 1, so document indices line up). The removed
duplicates keep their cluster id and size in metadata.
"""

from __future__ import annotations

from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)

from pipeline.documents import DocWriter, RemovedDocWriter, stage_reader
from pipeline.recipe import MinhashSettings

DUPLICATE_REASON = "minhash_duplicate"


def minhash_config(settings: MinhashSettings) -> MinhashConfig:
    return MinhashConfig(
        n_grams=settings.n_grams,
        num_buckets=settings.num_buckets,
        hashes_per_bucket=settings.hashes_per_bucket,
        seed=settings.seed,
    )


def signature_steps(input_folder: str, signatures: str, settings: MinhashSettings) -> list:
    return [stage_reader(input_folder), MinhashDedupSignature(output_folder=signatures, config=minhash_config(settings))]


def bucket_steps(signatures: str, buckets: str, settings: MinhashSettings) -> list:
    return [MinhashDedupBuckets(input_folder=signatures, output_folder=buckets, config=minhash_config(settings))]


def cluster_steps(buckets: str, clusters: str, settings: MinhashSettings) -> list:
    return [
        MinhashDedupCluster(
            input_folder=buckets,
            output_folder=clusters,
            config=minhash_config(settings),
            save_cluster_id=True,
            save_cluster_size=True,
        )
    ]


def filter_steps(input_folder: str, clusters: str, output: str, removed: str) -> list:
    return [
        stage_reader(input_folder),
        MinhashDedupFilter(
            input_folder=clusters,
            exclusion_writer=RemovedDocWriter(removed, stage="dedup", default_reason=DUPLICATE_REASON),
            load_cluster_ids=True,
            load_cluster_sizes=True,
        ),
        DocWriter(output),
    ]
