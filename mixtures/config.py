"""The ``mixture`` section of a recipe: quality buckets, physical upsampling, and the curriculum stages
with their weights and token targets under a repeat cap."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.core.config import NAME_PATTERN, ObjectStorage, SourceConfig, Strict


class MixtureStage(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    tokens: int = Field(gt=0, description="tokens this curriculum stage trains on")
    weights: dict[str, float] = Field(min_length=1, description="source, domain or bucket (<source>.<bucket>) -> relative weight")

    @field_validator("weights")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: w for k, w in v.items() if w < 0}
        if bad:
            raise ValueError(f"weights must be >= 0, got {bad}")
        if sum(v.values()) <= 0:
            raise ValueError("at least one weight must be > 0")
        return v


class QualityBuckets(Strict):
    """Split a source (or every source of a domain) by a score stored in document metadata by an earlier
    stage; each bucket is tokenized into its own prefix, weighted on its own (quality-aware upsampling)."""

    score: str = Field(description="numeric metadata key: a filter family's score (quality_score, lid_score) or a declared input field")
    edges: list[float] = Field(min_length=1, description="ascending cut points: n edges give n + 1 buckets")
    names: list[str] | None = Field(None, description="bucket names, lowest first (default q0, q1, ...)")
    missing: str | None = Field(None, description="bucket for documents without the score (default: the lowest)")

    @model_validator(mode="after")
    def _check(self) -> "QualityBuckets":
        if self.edges != sorted(set(self.edges)):
            raise ValueError(f"edges must be strictly ascending, got {self.edges}")
        names = self.bucket_names
        if len(names) != len(self.edges) + 1:
            raise ValueError(f"{len(self.edges)} edges need {len(self.edges) + 1} names, got {names}")
        bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", n)]
        if bad or len(set(names)) != len(names) or "heldout" in names:
            raise ValueError(f"bucket names must be distinct words (letters, digits, _ or -), not 'heldout'; got {names}")
        if self.missing is not None and self.missing not in names:
            raise ValueError(f"missing: {self.missing!r} is not one of the bucket names {names}")
        return self

    @property
    def bucket_names(self) -> list[str]:
        return self.names or [f"q{i}" for i in range(len(self.edges) + 1)]


class PublishTarget(Strict):
    """Where the mix stage publishes the token files its blends name, for a training cluster that does not see
    the run directory (``mixtures/publish.py``)."""

    url: str = Field(description="an object-storage prefix (s3://bucket/prefix) that no other run published to")
    storage: ObjectStorage = Field(default_factory=ObjectStorage, description="endpoint, region, profile; credentials "
                                                                            "from the environment, never here")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?", v):
            raise ValueError(f"{v!r}: an s3:// URL with a valid bucket name (megatron-core reads training data from "
                             "s3:// prefixes)")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _signed(self) -> "PublishTarget":
        if self.storage.anon:
            raise ValueError("storage.anon: publishing writes objects, which needs credentials")
        return self


class MixtureConfig(Strict):
    stages: list[MixtureStage] = Field(min_length=1)
    max_epochs: float = Field(4.0, gt=0, description="largest number of passes over the unique tokens of any prefix in any stage")
    over_cap: Literal["fail", "redistribute"] = Field(
        "fail",
        description="a unit over max_epochs: fail, or cap it and share its excess among the other units by weight",
    )
    buckets: dict[str, QualityBuckets] = Field(default_factory=dict, description="source or domain -> quality buckets")
    upsample: dict[str, float] = Field(
        default_factory=dict,
        description="source -> physical repeat factor (>= 1, fractional allowed) applied to the documents before tokenizing",
    )
    publish: PublishTarget | None = Field(None, description="also publish the blends' token files to object storage, "
                                                            "with blends that name them there")

    @field_validator("upsample")
    @classmethod
    def _factors(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: f for k, f in v.items() if not 1 <= f <= 100}
        if bad:
            raise ValueError(f"upsample factors must be between 1 and 100, got {bad}")
        return v

    @model_validator(mode="after")
    def _stage_names(self) -> "MixtureConfig":
        names = [st.name for st in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stages: duplicate stage names {names}")
        return self

    def buckets_for(self, source: SourceConfig) -> QualityBuckets | None:
        return self.buckets.get(source.name) or self.buckets.get(source.domain)

    def units_of(self, source: SourceConfig) -> list[tuple[str, str | None]]:
        """(token-prefix unit, bucket) of a source: the source itself, or one per quality bucket."""
        spec = self.buckets_for(source)
        if spec is None:
            return [(source.name, None)]
        return [(f"{source.name}.{b}", b) for b in spec.bucket_names]

    def source_problems(self, sources: list[SourceConfig]) -> list[str]:
        """Keys that name no source, domain or bucket of ``sources``."""
        names = [s.name for s in sources]
        problems = []
        for kind, table in (("buckets", self.buckets), ("upsample", self.upsample)):
            allowed = set(names) | ({s.domain for s in sources} if kind == "buckets" else set())
            bad = sorted(set(table) - allowed)
            if bad:
                problems.append(f"mixture.{kind}: {bad} is not a source{' or a domain of a source' if kind == 'buckets' else ''}")
        units = {u for s in sources if self.buckets_for(s) for u, _ in self.units_of(s)}
        keys = set(names) | {s.domain for s in sources} | units
        for i, st in enumerate(self.stages):
            bad = sorted(set(st.weights) - keys)
            if bad:
                problems.append(f"mixture.stages[{i}].weights: {bad} is neither a source, a domain of a source, nor a bucket "
                                f"(<source>.<bucket>; buckets here: {sorted(units) or 'none'})")
        return problems
