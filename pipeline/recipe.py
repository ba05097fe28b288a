"""The recipe: one YAML file that describes a whole run, validated before any work starts.

Every section is a typed pydantic model with ``extra="forbid"``, so an unknown key, a wrong type or a
missing input path fails at load time with a message naming the file and the key.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from decontam.benchmarks import BENCHMARKS, benchmark_source
from decontam.reference import DEFAULT_REFERENCE, STDLIB_PREFIX, resolve_reference
from pipeline.assets import PACKAGE_PREFIX, QWEN3_TOKENIZER, resolve_asset

DOMAINS = ("web", "code", "math", "paper", "book", "docs", "synthetic", "encyclopedia", "forum", "other")
Domain = Literal["web", "code", "math", "paper", "book", "docs", "synthetic", "encyclopedia", "forum", "other"]


class RecipeError(ValueError):
    """A recipe that cannot be run; the message names the file and the offending key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------- sources
class SourceConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="unique name; becomes the token prefix")
    paths: list[str] = Field(min_length=1, description="files, folders or globs (relative to the recipe file)")
    format: Literal["jsonl", "jsonl.gz", "parquet", "text"]
    text_field: str = "text"
    id_field: str | None = "id"
    domain: Domain
    language: str = Field("en", description="expected language (ISO 639-1), or a programming language for code")
    # glob used inside folders; for the `text` format every matching file is one document
    file_glob: str | None = None

    def default_glob(self) -> str:
        return self.file_glob or {"jsonl": "*.jsonl", "jsonl.gz": "*.jsonl.gz", "parquet": "*.parquet", "text": "*"}[
            self.format
        ]


# -------------------------------------------------------------------------------------------- executor
class RayConfig(Strict):
    address: str | None = Field(None, description="cluster address (e.g. 'auto' or 'ray://host:10001'); none starts a local one")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a locally started cluster")
    cpus_per_task: int = Field(1, ge=1)
    mem_per_cpu_gb: float = Field(1.0, gt=0)


class ExecutorConfig(Strict):
    kind: Literal["local", "ray"] = "local"
    tasks: int = Field(2, ge=1, description="shards per stage; fixed per run so outputs are reproducible")
    workers: int = Field(2, ge=1, description="tasks run at the same time")
    ray: RayConfig = RayConfig()


# ---------------------------------------------------------------------------------------------- filter
# the rule families live with the filters (filters/config.py); the recipe holds them as its `filter` section
from filters.config import FilterConfig, RuleSet  # noqa: E402


# ----------------------------------------------------------------------------------------------- dedup
class MinhashSettings(Strict):
    n_grams: int = Field(5, ge=1, description="word shingle length")
    char_n_grams: int = Field(5, ge=1, description="character shingle length for documents that are mostly CJK")
    num_buckets: int = Field(14, ge=1, description="LSH bands")
    hashes_per_bucket: int = Field(8, ge=1, description="rows (hash functions) per band")
    seed: int = 1
    flush_docs: int = Field(100_000, ge=1, description="documents per written chunk of band keys (bounds worker memory)")

    @property
    def threshold(self) -> float:
        """Jaccard similarity at which a pair has a 50% chance of sharing a bucket: (1/b)^(1/r)."""
        return (1 / self.num_buckets) ** (1 / self.hashes_per_bucket)


class ExactDedupSettings(Strict):
    enabled: bool = True
    num_buckets: int = Field(8, ge=1, description="hash ranges, one parallel task each (memory per task: 1/num_buckets of the hashes)")


class SubstringDedupSettings(Strict):
    enabled: bool = True
    domains: list[str] = Field(default_factory=lambda: ["code", "paper"], description="domains whose repeated spans are removed")
    unit: Literal["bytes", "tokens"] = Field("bytes", description="suffix array over UTF-8 bytes or int32 token ids (tokenizer.path)")
    min_length: int = Field(100, ge=8, description="shortest repeated span removed, in units")
    shard_bytes: int = Field(64 * 2**20, ge=1024, description="text per suffix array (memory ~9x this); repeats are found within a shard")
    min_doc_fraction: float = Field(0.2, ge=0, le=1, description="a document keeping less than this fraction of its characters is removed")


class DedupConfig(Strict):
    enabled: bool = True
    exact: ExactDedupSettings = ExactDedupSettings()
    substring: SubstringDedupSettings = SubstringDedupSettings()
    minhash: MinhashSettings = MinhashSettings()
    source_priority: list[str] = Field(
        default_factory=list, description="sources in the order their copy of a duplicate is kept (default: recipe order)"
    )
    keeper: list[Literal["quality", "length", "source_priority", "id"]] = Field(
        default_factory=lambda: ["quality", "length", "source_priority", "id"],
        description="how the document kept in a MinHash cluster is chosen: criteria in order",
    )
    quality_key: str | None = Field(None, description="metadata key of the quality score used by keeper 'quality'")


# -------------------------------------------------------------------------------------------- decontam
DecontamAction = Literal["drop", "cut"]


class DecontamConfig(Strict):
    enabled: bool = True
    n_gram: int = Field(13, ge=3, description="word n-gram length for space-delimited text")
    cjk_n_gram: int = Field(15, ge=3, description="character n-gram length for Chinese items (CMMLU)")
    min_n_gram: int = Field(8, ge=3, description="items shorter than n_gram but at least this many tokens are indexed whole")
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
    action: DecontamAction = "drop"
    per_domain: dict[str, DecontamAction] = Field(default_factory=dict, description="domain -> drop|cut")
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


# ------------------------------------------------------------------------------------------- tokenizer
class TokenizerConfig(Strict):
    path: str = Field(
        QWEN3_TOKENIZER,
        description="a Hugging Face tokenizer.json, or package:<pkg>/<file> for one shipped inside a package",
    )
    eos_token: str = "<|endoftext|>"
    batch_size: int = Field(256, ge=1)
    heldout_fraction: float = Field(
        0.01, ge=0, lt=1, description="documents (chosen by a hash of their id) written to a held-out prefix per source"
    )


# --------------------------------------------------------------------------------------------- mixture
class MixtureStage(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    tokens: int = Field(gt=0, description="tokens this curriculum stage trains on")
    weights: dict[str, float] = Field(min_length=1, description="source or domain name -> relative weight")

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

    score: str = Field(description="numeric metadata key, e.g. a quality classifier's score or lid_score")
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

    @field_validator("upsample")
    @classmethod
    def _factors(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: f for k, f in v.items() if not 1 <= f <= 100}
        if bad:
            raise ValueError(f"upsample factors must be between 1 and 100, got {bad}")
        return v

    def buckets_for(self, source: "SourceConfig") -> QualityBuckets | None:
        return self.buckets.get(source.name) or self.buckets.get(source.domain)

    def units_of(self, source: "SourceConfig") -> list[tuple[str, str | None]]:
        """(token-prefix unit, bucket) of a source: the source itself, or one per quality bucket."""
        spec = self.buckets_for(source)
        if spec is None:
            return [(source.name, None)]
        return [(f"{source.name}.{b}", b) for b in spec.bucket_names]


# ----------------------------------------------------------------------------------------------- train
class ExitWeightSchedule(Strict):
    """lambda_k(t) for one exit: `start` at step 0 (after warm-up), moving to `end` at the last step."""

    start: float = Field(1.0, ge=0)
    end: float = Field(1.0, ge=0)
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)


class ModelSettings(Strict):
    preset: Literal["tiny", "proxy-0.5b", "ruyi2-14b"] = "tiny"
    num_layers: int | None = Field(None, ge=1)
    hidden_size: int | None = Field(None, ge=8)
    ffn_hidden_size: int | None = Field(None, ge=8)
    num_attention_heads: int | None = Field(None, ge=1)
    num_query_groups: int | None = Field(None, ge=1)
    kv_channels: int | None = Field(None, ge=1)
    exits: list[int] | None = Field(None, description="0-based exit layer indices; the last one is the full model")


class DaeSettings(Strict):
    """DaE stage 1: deepen one branch with new identity-initialised blocks, everything else frozen."""

    enabled: bool = False
    exit: int | None = Field(None, description="0-based exit layer to deepen; default the smallest branch")
    blocks: int = Field(3, ge=1)


class TrainConfig(Strict):
    enabled: bool = True
    model: ModelSettings = ModelSettings()
    steps: int = Field(8, ge=1, description="optimizer steps over all curriculum stages")
    micro_batch_size: int = Field(2, ge=1)
    seq_length: int = Field(64, ge=8)
    lr: float = Field(1e-3, gt=0)
    min_lr: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(0, ge=0, description="linear learning-rate warm-up before the cosine decay")
    weight_decay: float = Field(0.01, ge=0)
    seed: int = 1234
    exit_weights: list[ExitWeightSchedule] | None = Field(
        None, description="one schedule per exit (same order as model exits); default: all 1.0"
    )
    eval_samples: int = Field(8, ge=0, description="held-out samples per curriculum stage, evaluated per exit")
    threads: int | None = Field(None, ge=1, description="torch CPU threads")
    tensor_parallel: int = Field(1, ge=1, description="under torchrun: tensor-parallel size")
    pipeline_parallel: int = Field(1, ge=1, description="under torchrun: pipeline-parallel size (data parallel is the rest)")
    pipeline_balance: Literal["exits", "even"] | list[int] = Field(
        "exits", description="pipeline stages: balanced for the exit branches' cost, an even split, or layers per stage"
    )
    dae: DaeSettings = DaeSettings()
    save_interval: int = Field(0, ge=0, description="sharded checkpoint every N steps (0: only at the end); --resume continues from the latest")


# ---------------------------------------------------------------------------------------------- recipe
class Recipe(Strict):
    run_dir: str
    sources: list[SourceConfig] = Field(min_length=1)
    executor: ExecutorConfig = ExecutorConfig()
    filter: FilterConfig = FilterConfig()
    dedup: DedupConfig = DedupConfig()
    decontam: DecontamConfig = DecontamConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    mixture: MixtureConfig
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _cross_checks(self) -> "Recipe":
        names = [s.name for s in self.sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"sources: duplicate source name(s) {dup}")
        unknown = sorted(set(self.filter.per_source) - set(names))
        if unknown:
            raise ValueError(f"filter.per_source: no source named {unknown}")
        unknown = sorted(set(self.dedup.source_priority) - set(names))
        if unknown:
            raise ValueError(f"dedup.source_priority: no source named {unknown}")
        unknown = sorted(set(self.dedup.substring.domains) - set(DOMAINS))
        if unknown:
            raise ValueError(f"dedup.substring.domains: unknown domain(s) {unknown}; known: {list(DOMAINS)}")
        unknown = sorted(set(self.filter.per_domain) - set(DOMAINS))
        if unknown:
            raise ValueError(f"filter.per_domain: unknown domain(s) {unknown}; known: {list(DOMAINS)}")
        for s in self.sources:  # validates every override now, not mid-run
            try:
                rules = self.filter.rules_for(s)
            except ValidationError as e:
                raise ValueError(f"filter overrides for source {s.name!r} (domain {s.domain!r}): {e}") from None
            _check_rules(s, rules)
        for kind, table in (("buckets", self.mixture.buckets), ("upsample", self.mixture.upsample)):
            allowed = set(names) | ({s.domain for s in self.sources} if kind == "buckets" else set())
            bad = sorted(set(table) - allowed)
            if bad:
                raise ValueError(f"mixture.{kind}: {bad} is not a source{' or a domain of a source' if kind == 'buckets' else ''}")
        units = {u for s in self.sources if self.mixture.buckets_for(s) for u, _ in self.mixture.units_of(s)}
        keys = set(names) | {s.domain for s in self.sources} | units
        stage_names = [st.name for st in self.mixture.stages]
        if len(set(stage_names)) != len(stage_names):
            raise ValueError(f"mixture.stages: duplicate stage names {stage_names}")
        for i, st in enumerate(self.mixture.stages):
            bad = sorted(set(st.weights) - keys)
            if bad:
                raise ValueError(
                    f"mixture.stages[{i}].weights: {bad} is neither a source, a domain of a source, nor a bucket "
                    f"(<source>.<bucket>; buckets here: {sorted(units) or 'none'})"
                )
        return self

    # --- derived -----------------------------------------------------------------------------------
    def source(self, name: str) -> SourceConfig:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(name)

    def fingerprint(self) -> str:
        """sha256 of the canonical recipe: the config hash recorded in every run manifest."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def _check_rules(source: SourceConfig, rules: RuleSet) -> None:
    where = f"filter rules of source {source.name!r} (domain {source.domain}, language {source.language})"
    if rules.tex.enabled and rules.tex.prose_view and rules.c4.enabled:
        raise ValueError(f"{where}: c4 edits lines and tex.prose_view masks them; switch one of them off")
    if rules.classifier.enabled and not rules.classifier.model:
        raise ValueError(f"{where}: classifier.enabled needs classifier.model (train one with `ruyi2 classifier train`)")


# files named inside the filter rules: (family, key)
_FILTER_FILES = (("classifier", "model"), ("bad_words", "words_file"))


def _filter_files(recipe: Recipe, absolute, path: str, check_inputs: bool) -> None:
    """Make the filter rules' file paths absolute wherever they are set, and check they exist."""
    f = recipe.filter
    layers = [("filter.rules", f.rules.model_dump())] + [
        (f"filter.{kind}.{key}", rules) for kind in ("per_domain", "per_language", "per_source")
        for key, rules in getattr(f, kind).items()
    ]
    for where, rules in layers:
        for family, key in _FILTER_FILES:
            value = (rules.get(family) or {}).get(key)
            if value:
                rules[family][key] = value = absolute(value)
                if check_inputs and not os.path.isfile(value):
                    raise RecipeError(f"{path}: {where}.{family}.{key}: no such file {value}")
    f.rules = RuleSet.model_validate(layers[0][1])


def expand_source_files(source: SourceConfig) -> list[str]:
    """Every input file of a source, sorted, so shards are assigned the same way on every run."""
    files: set[str] = set()
    for p in source.paths:
        if os.path.isdir(p):
            files.update(f for f in glob.glob(os.path.join(p, "**", source.default_glob()), recursive=True) if os.path.isfile(f))
        elif any(ch in p for ch in "*?["):
            files.update(f for f in glob.glob(p, recursive=True) if os.path.isfile(f))
        elif os.path.isfile(p):
            files.add(p)
    return sorted(files)


def _format_validation_error(path: str, err: ValidationError) -> str:
    lines = [f"{path}: invalid recipe ({err.error_count()} problem(s)):"]
    for e in err.errors():
        loc = ""
        for part in e["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        got = "" if e["type"] in ("missing", "extra_forbidden") else f" (got {e.get('input')!r:.80})"
        lines.append(f"  - {loc or '<top level>'}: {msg}{got}")
    return "\n".join(lines)


def parse_recipe(data: dict, path: str = "<recipe>", base_dir: str | None = None, check_inputs: bool = True) -> Recipe:
    """Validate a recipe dict; relative paths are resolved against ``base_dir`` (the recipe's folder)."""
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError(_format_validation_error(path, e)) from None
    base = Path(base_dir or ".").resolve()

    def absolute(p: str) -> str:
        p = os.path.expanduser(p)
        return p if os.path.isabs(p) else str(base / p)

    recipe.run_dir = absolute(recipe.run_dir)
    for i, s in enumerate(recipe.sources):
        s.paths = [absolute(p) for p in s.paths]
        if check_inputs:
            for p in s.paths:
                if not expand_source_files(s.model_copy(update={"paths": [p]})):
                    raise RecipeError(f"{path}: sources[{i}] ({s.name!r}).paths: no input file matches {p!r}")
    _filter_files(recipe, absolute, path, check_inputs)
    dc = recipe.decontam
    if dc.benchmark_dir:
        dc.benchmark_dir = absolute(dc.benchmark_dir)
    dc.reference = [p if p.startswith((PACKAGE_PREFIX, STDLIB_PREFIX)) else absolute(p) for p in dc.reference]
    if check_inputs and dc.enabled:
        _check_decontam_inputs(dc, path)
    if not recipe.tokenizer.path.startswith("package:"):
        recipe.tokenizer.path = absolute(recipe.tokenizer.path)
    if check_inputs:
        try:
            resolve_asset(recipe.tokenizer.path)
        except FileNotFoundError as e:
            raise RecipeError(f"{path}: tokenizer.path: {e}") from None
    return recipe


def _check_decontam_inputs(dc: DecontamConfig, path: str) -> None:
    if dc.benchmark_dir and not os.path.isdir(dc.benchmark_dir):
        raise RecipeError(f"{path}: decontam.benchmark_dir: {dc.benchmark_dir!r} is not a folder")
    if dc.missing == "fail":
        absent = [b for b in dc.benchmarks if benchmark_source(b, dc.benchmark_dir) is None]
        if absent:
            raise RecipeError(f"{path}: decontam.benchmarks: no data for {absent} (decontam.missing is 'fail'); put their "
                              f"public release under decontam.benchmark_dir/<name>/ or remove them from the list")
    for i, p in enumerate(dc.reference):
        try:
            resolve_reference(p)
        except (FileNotFoundError, ImportError) as e:
            raise RecipeError(f"{path}: decontam.reference[{i}]: {e}") from None


def load_recipe(path: str | os.PathLike, run_dir: str | None = None, check_inputs: bool = True) -> Recipe:
    path = str(path)
    if not os.path.isfile(path):
        raise RecipeError(f"{path}: recipe file not found")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise RecipeError(f"{path}: not valid YAML: {e}") from None
    if run_dir is not None and isinstance(data, dict):
        data["run_dir"] = run_dir
    return parse_recipe(data, path, base_dir=os.path.dirname(os.path.abspath(path)), check_inputs=check_inputs)


def dump_recipe(recipe: Recipe, path: str | os.PathLike) -> None:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(recipe.model_dump(mode="json"), f, sort_keys=False, allow_unicode=True)
