"""The ``ablation`` section of a recipe: which curriculum stage's weights are ablated over which
categories, the candidates, the proxy runs (the recipe's own ``train`` section with overrides), the target,
the fits, the proposer and the validation."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from pipeline.core.config import Format, SourceConfig, Strict

BASELINES = ("token_proportional", "uniform", "unimax", "recipe")


class Candidates(Strict):
    count: int = Field(16, ge=2, description="mixtures sampled around the prior (Dirichlet), besides the baselines")
    concentration: float = Field(
        4.0, gt=0, description="Dirichlet concentration per category around the prior: low spreads the samples wide "
                               "(RegMix samples broadly), high keeps them near the recipe's weights")
    floor: float = Field(0.05, ge=0, lt=1, description="share of a uniform mixture blended into the prior before sampling, "
                                                      "so a category the recipe leaves out is still explored")
    seed: int = 0
    baselines: list[Literal["token_proportional", "uniform", "unimax", "recipe"]] = Field(
        default_factory=lambda: list(BASELINES),
        description="reference mixtures trained beside the samples and validated against the proposal")


class BenchmarkTarget(Strict):
    task: str = Field(description="a `ruyi2 eval` task: arc_challenge, hellaswag, mmlu or gsm8k; the target is its error "
                                  "(1 - its primary metric) at the target exit")
    limit: int | None = Field(200, ge=1, description="items scored per proxy (a fixed spread-out subset); null = all")
    mmlu_shots: int = Field(5, ge=0, le=5)
    max_new_tokens: int = Field(64, ge=1, description="GSM8K generation length")


class Target(Strict):
    exit: int | None = Field(None, description="0-based exit layer whose outcome is minimised (default: the last)")
    weights: dict[str, float] = Field(
        default_factory=dict,
        description="evaluation set (a source or a domain) -> weight in the target loss; default: every source equally")
    benchmark: BenchmarkTarget | None = Field(
        None, description="score each proxy on a benchmark instead of the held-out loss (once proxies are large enough "
                          "for accuracy to move)")

    @model_validator(mode="after")
    def _positive(self) -> "Target":
        if any(w < 0 for w in self.weights.values()) or (self.weights and sum(self.weights.values()) <= 0):
            raise ValueError(f"weights must be >= 0 with a positive sum, got {self.weights}")
        return self


class Fit(Strict):
    model: Literal["auto", "log_linear", "dml_per_set", "linear", "gp"] = Field(
        "auto", description="the joint regression the proposer maximises: auto picks the best cross-validated Spearman")
    folds: int = Field(5, ge=2, description="k of the k-fold cross-validation")


class Proposer(Strict):
    prior_penalty: float = Field(
        0.0, ge=0, description="added to the predicted loss: this times the squared distance of the weights from the prior")


class Validation(Strict):
    seeds: int = Field(3, ge=2, description="seeds per mixture when the proposal is compared with the baselines")


VARIANT_SECTIONS = ("filter", "dedup", "decontam")


class Variant(Strict):
    """One arm of a pipeline ablation: a recipe patch (filter, dedup, decontam settings; families on or off;
    thresholds; the extractor), merged into the recipe as ``--patch`` merges one."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    patch: dict[str, Any] = Field(description="recipe sections, merged key by key (nested mappings), null unsets")

    @model_validator(mode="after")
    def _data_sections_only(self) -> "Variant":
        # an arm differs from the others in how the data is made, never in what is read, counted or trained
        other = sorted(set(self.patch) - set(VARIANT_SECTIONS))
        if other:
            raise ValueError(f"variant {self.name!r}: a patch may set {', '.join(VARIANT_SECTIONS)}, not {other} (every "
                             "arm reads the same sources and trains the same proxy)")
        return self


class EvalSet(Strict):
    """Clean text every arm is scored on, kept apart from every arm's training data (curated documents, a
    benchmark's passages): read like a source, tokenized once into ``RUN_DIR/ablate/eval_sets/``."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    paths: list[str] = Field(min_length=1, description="files, folders or globs (relative to the recipe file)")
    format: Format = "jsonl"
    text_field: str = "text"
    id_field: str | None = "id"

    def as_source(self) -> SourceConfig:
        # the domain is only stamped into the documents' metadata; nothing filters or routes them
        return SourceConfig(name=self.name, paths=self.paths, format=self.format, text_field=self.text_field,
                            id_field=self.id_field, domain="web")


RESERVED_ARMS = ("raw", "recipe")
LEAVE_ONE_OUT_PREFIX = "no-"  # the arm name of a leave-one-family-out arm: no-c4, no-classifier, ...


class AblationConfig(Strict):
    kind: Literal["mixture", "pipeline"] = Field(
        "mixture", description="mixture: choose a curriculum stage's weights; pipeline: compare recipe variants "
                               "(filter, dedup, decontam settings) by the proxies their corpora train")
    variants: list[Variant] = Field(default_factory=list, description="pipeline: named recipe patches, the arms besides "
                                                                      "the built-in raw and recipe ones")
    leave_one_out: list[str] = Field(default_factory=list, description="pipeline: filter families, each giving an arm "
                                                                       "with that family off for every source (no-<family>)")
    eval_sets: list[EvalSet] = Field(default_factory=list, description="pipeline: the text every arm is scored on (default: "
                                                                       "the recipe's held-out prefixes); target.weights "
                                                                       "then weighs these by name")
    stage: str | None = Field(None, description="the curriculum stage whose weights are ablated (default: the first)")
    categories: Literal["domains", "sources", "units"] = Field(
        "domains", description="what a mixture weighs: the sources' domains, the sources, or every token prefix (buckets)")
    candidates: Candidates = Candidates()
    proxy: dict[str, Any] = Field(
        default_factory=dict,
        description="overrides of the recipe's train section for the proxy runs (steps, model, init_from, ...); the "
                    "merged section is validated as a train section")
    target: Target = Target()
    fit: Fit = Fit()
    proposer: Proposer = Proposer()
    validation: Validation = Validation()
    workers: int = Field(1, ge=1, description="proxy runs at the same time on the local executor (Ray: the cluster decides)")
    keep_checkpoints: bool = Field(False, description="keep each proxy's final checkpoint (default: only its results)")

    @model_validator(mode="after")
    def _arms(self) -> "AblationConfig":
        if self.kind == "mixture" and (self.variants or self.leave_one_out or self.eval_sets):
            raise ValueError("variants, leave_one_out and eval_sets belong to a pipeline ablation: set kind: pipeline")
        sets = [e.name for e in self.eval_sets]
        if len(set(sets)) != len(sets):
            raise ValueError(f"eval_sets: names {sets} repeat")
        names = [v.name for v in self.variants] + [LEAVE_ONE_OUT_PREFIX + f for f in self.leave_one_out]
        taken = sorted({n for n in names if names.count(n) > 1 or n in RESERVED_ARMS})
        if taken:
            raise ValueError(f"variants: arm name(s) {taken} used twice or reserved (raw, recipe, no-<family> of "
                             "leave_one_out)")
        return self

    @property
    def arm_names(self) -> list[str]:
        return [*RESERVED_ARMS, *(LEAVE_ONE_OUT_PREFIX + f for f in self.leave_one_out), *(v.name for v in self.variants)]

    def proxy_train_data(self, train: dict) -> dict:
        """The recipe's train section (as data) with ``proxy`` merged in: nested mappings key by key, ``null``
        unsets. The recipe validates the result as a train section."""
        return merge(train, self.proxy)


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out
