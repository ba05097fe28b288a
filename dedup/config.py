"""The ``dedup`` section of a recipe: the exact pass, MinHash/LSH and suffix-array substring settings, and
how the copy kept in a duplicate cluster is chosen."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from pipeline.core.config import Domain, Strict

KeeperCriterion = Literal["quality", "source_priority", "earliest", "length", "id"]


class MinhashSettings(Strict):
    n_grams: int = Field(5, ge=1, description="word shingle length")
    char_n_grams: int = Field(3, ge=1, description="character shingle length for documents that are mostly CJK")
    num_buckets: int = Field(20, ge=1, description="LSH bands")
    hashes_per_bucket: int = Field(5, ge=1, description="rows (hash functions) per band")
    seed: int = 1
    min_similarity: float | None = Field(
        0.6, ge=0, le=1,
        description="a cluster member is removed only if its Jaccard similarity with the kept document, estimated from the "
        "full signatures, is at least this (members below it form clusters of their own); null: every member of an LSH "
        "component is removed (transitive)")
    flush_docs: int = Field(100_000, ge=1, description="documents per written chunk of band keys (bounds worker memory)")
    partitions: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="tasks that find the clusters (rounds of connected components over the bands' edges), choose their "
        "keepers; each holds about 2/partitions of the duplicate documents' edges. "
        "auto: one per partition_documents of the documents entering dedup")
    # the worst case planned for: a third of the documents in LSH components with ~6 star edges each, 16 bytes
    # per edge in both directions: ~4M documents keep a components round near 0.75 GB
    partition_documents: int = Field(4_000_000, ge=1, description="documents per partition when partitions is auto")

    def partitions_for(self, documents: int) -> int:
        """The partitions a run over ``documents`` documents uses: every partition costs a task and P files
        per round whatever its size, so small corpora get few (1 up to 4M documents by default)."""
        return self.partitions if self.partitions != "auto" else max(1, -(-documents // self.partition_documents))

    @property
    def threshold(self) -> float:
        """Jaccard similarity at which a pair has a 50% chance of sharing a bucket: (1/b)^(1/r)."""
        return (1 / self.num_buckets) ** (1 / self.hashes_per_bucket)


class ExactDedupSettings(Strict):
    enabled: bool = True
    num_buckets: int = Field(8, ge=1, description="hash ranges, one parallel task each (memory per task: 1/num_buckets of the hashes)")


class SubstringDedupSettings(Strict):
    enabled: bool = True
    domains: list[Domain] = Field(default_factory=lambda: ["code", "paper"], description="domains whose repeated spans are removed")
    unit: Literal["bytes", "tokens"] = Field("bytes", description="suffix array over UTF-8 bytes or int32 token ids (tokenizer.path)")
    min_length: int = Field(100, ge=8, description="shortest repeated span removed, in units")
    # the suffix array, its LCP and the match arrays take 15x to 40x the text (measured); repeats across shards
    # are found by the fingerprints, so a shard can stay small
    shard_bytes: int = Field(16 * 2**20, ge=1024, description="text per suffix array (memory 15-40x this): exact repeats within a shard")
    across_shards: bool = Field(True, description="also cut spans repeated in other shards (winnowed window fingerprints)")
    winnow: int = Field(
        16, ge=1,
        description="across shards, one fingerprint per this many windows: spans of min_length + winnow - 1 units are found, "
        "and up to winnow - 1 units at either end of one may stay")
    # sorting them takes ~61 bytes per fingerprint (measured at 1 GB: 12.2M in one task, 749 MiB), so 4M keep a
    # grouping task near 250 MiB whatever the corpus
    partition_fingerprints: int = Field(4_000_000, ge=1, description="across shards, fingerprints per grouping task (a "
                                        "range of hash values); the tasks are counted once the fingerprints are written")
    min_doc_fraction: float = Field(0.2, ge=0, le=1, description="a document keeping less than this fraction of its characters is removed")


class DedupConfig(Strict):
    enabled: bool = True
    exact: ExactDedupSettings = ExactDedupSettings()
    substring: SubstringDedupSettings = SubstringDedupSettings()
    minhash: MinhashSettings = MinhashSettings()
    source_priority: list[str] = Field(
        default_factory=list, description="sources in the order their copy of a duplicate is kept (default: recipe order)"
    )
    # a data engineer keeps the best-scored copy, then the preferred source's, then the original (earliest in
    # the input); the longest copy is often the original plus appended boilerplate, so length is opt-in
    keeper: list[KeeperCriterion] = Field(
        default_factory=lambda: ["quality", "source_priority", "earliest"],
        min_length=1,
        description="how the document kept in a MinHash cluster is chosen: criteria in order",
    )
    quality_key: str | None = Field(None, description="metadata key of the quality score used by keeper 'quality'")

    def priority(self, sources: list[str]) -> dict[str, int]:
        """Source -> rank in the keeper order (``source_priority`` first, then the recipe's order)."""
        order = self.source_priority + [n for n in sources if n not in self.source_priority]
        return {n: i for i, n in enumerate(order)}
