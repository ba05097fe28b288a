"""The ``decontam`` section of a recipe: which benchmarks, n-gram sizes, what counts as a common phrase,
and what happens to a contaminated document per domain."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, field_validator, model_validator

from decontam.benchmarks import BENCHMARKS, benchmark_source
from decontam.reference import DEFAULT_REFERENCE, resolve_reference
from pipeline.core.assets import is_location
from pipeline.core.config import Domain, Strict

DecontamAction = Literal["drop", "cut"]


class DecontamConfig(Strict):
    enabled: bool = True
    n_gram: int = Field(13, ge=3, description="word n-gram length for space-delimited text")
    cjk_n_gram: int = Field(15, ge=3, description="character n-gram length for Chinese items (CMMLU)")
    min_n_gram: int = Field(8, ge=3, description="items shorter than n_gram but at least this many tokens are indexed whole")
    split_n_gram: int | None = Field(
        8, ge=3, description="items shorter than 2 x n_gram tokens are also indexed with n-grams of this length, so an item "
        "split in two (a host paragraph between its halves) still matches; null: off")
    benchmarks: list[str] = list(BENCHMARKS)
    benchmark_dir: str | None = Field(None, description="folder with <benchmark>/ in its public release format; wins over packages")
    missing: Literal["skip", "fail"] = Field(
        "skip", description="a listed benchmark with no data: skip it (named in the report) or fail before any work"
    )
    reference: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REFERENCE),
        description="clean text whose n-grams are ordinary phrases: paths/globs, package:<pkg>/<glob>, stdlib:<glob>",
    )
    reference_max_bytes: int = Field(64 * 2**20, ge=0)
    common_min_docs: int = Field(2, ge=1, description="exclude benchmark n-grams found in this many reference documents")
    max_items_per_ngram: int = Field(10, ge=0, description="exclude n-grams shared by more items (prompt templates); 0 = keep all")
    min_item_coverage: float = Field(
        0.0, ge=0, le=1, description="a document is contaminated by an item only if its matched n-grams cover at least this "
        "share of the item's tokens (0: any indexed n-gram, the GPT-3 rule)")
    corpus_common_fraction: float | None = Field(
        0.001, gt=0, le=1, description="exclude benchmark n-grams found in at least this share of the corpus's own documents "
        "(and in corpus_common_min_docs): the corpus's boilerplate, not a leak; counted in a pass before tagging; null: no pass")
    corpus_common_min_docs: int = Field(50, ge=1, description="never exclude an n-gram found in fewer corpus documents")
    action: DecontamAction = "drop"
    per_domain: dict[Domain, DecontamAction] = Field(default_factory=dict, description="domain -> drop|cut")
    cut_margin_tokens: int = Field(32, ge=0, description="tokens removed on each side of a contaminated span")
    cut_min_tokens: int = Field(64, ge=0, description="a cut document shorter than this is dropped")

    @field_validator("benchmarks")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - set(BENCHMARKS))
        if unknown:
            raise ValueError(f"unknown benchmark(s) {unknown}; known: {list(BENCHMARKS)}")
        return v

    @model_validator(mode="after")
    def _lengths(self) -> "DecontamConfig":
        if self.min_n_gram > min(self.n_gram, self.cjk_n_gram):
            raise ValueError(f"min_n_gram ({self.min_n_gram}) must be <= n_gram and cjk_n_gram")
        return self

    def resolve_paths(self, absolute) -> None:
        if self.benchmark_dir:
            self.benchmark_dir = absolute(self.benchmark_dir)
        self.reference = [p if is_location(p) else absolute(p) for p in self.reference]

    def input_problems(self) -> list[str]:
        """What is missing on disk, each naming its key (empty: every input is there)."""
        if not self.enabled:
            return []
        problems = []
        if self.benchmark_dir and not os.path.isdir(self.benchmark_dir):
            problems.append(f"decontam.benchmark_dir: {self.benchmark_dir!r} is not a folder")
        elif self.missing == "fail":
            absent = [b for b in self.benchmarks if benchmark_source(b, self.benchmark_dir) is None]
            if absent:
                problems.append(f"decontam.benchmarks: no data for {absent} (decontam.missing is 'fail'); put their public "
                                "release under decontam.benchmark_dir/<name>/ or remove them from the list")
        for i, p in enumerate(self.reference):
            try:
                resolve_reference(p)
            except (FileNotFoundError, ImportError) as e:
                problems.append(f"decontam.reference[{i}]: {e}")
        return problems
