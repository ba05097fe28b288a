"""Deduplication stage: global MinHash/LSH fuzzy dedup across every source."""
