"""The recipe: one YAML file that describes a whole run, composed from the stage packages' own schemas and
validated before any work starts.

Every section is a typed pydantic model that rejects unknown keys, overrides included. This module adds
what no single section can check alone (names that must refer to sources, languages, domains or metadata
keys that exist), resolves relative paths against the recipe's folder and checks that inputs exist; every
error names the file and the key.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import yaml
from pydantic import Field, PrivateAttr, ValidationError, model_validator

from decontam.config import DecontamConfig
from dedup.config import DedupConfig
from filters.config import FilterConfig, RuleSet
from filters.language import lid_labels
from filters.tagger import produced_metadata
from mixtures.ablation.config import AblationConfig
from mixtures.config import MixtureConfig
from pipeline.core.assets import is_location, resolve_asset
from pipeline.core.atomic import write_yaml
from pipeline.core.config import ExecutorConfig, SourceConfig, Strict, TokenizerConfig
from pipeline.core.storage import StorageInputError, is_url
from train_entry.config import TrainConfig
from train_entry.eval_tasks import TASKS as EVAL_TASKS


class RecipeError(ValueError):
    """A recipe that cannot be run; the message names the file and the offending key. (Exit status 2.)"""


class Recipe(Strict):
    run_dir: str
    sources: list[SourceConfig] = Field(min_length=1)
    executor: ExecutorConfig = ExecutorConfig()
    filter: FilterConfig = FilterConfig()
    dedup: DedupConfig = DedupConfig()
    decontam: DecontamConfig = DecontamConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    mixture: MixtureConfig | None = Field(None, description="needed by the mix and train stages")
    train: TrainConfig = TrainConfig()
    ablation: AblationConfig | None = Field(None, description="`ruyi2 ablate`: choose a stage's mixture with proxy runs")
    # the file the recipe was loaded from, and whether a patch or --run-dir changed it (the run's copy of the
    # recipe is never written over that file)
    _source: str | None = PrivateAttr(None)
    _overridden: bool = PrivateAttr(False)

    @model_validator(mode="after")
    def _cross_checks(self) -> "Recipe":
        problems = _name_problems(self)
        for i, s in enumerate(self.sources):  # every override is validated now, not mid-run
            try:
                rules = self.filter.rules_for(s)
            except ValidationError as e:
                raise ValueError(f"filter overrides for source {s.name!r} (domain {s.domain!r}): {e}") from None
            problems += _rule_problems(i, s, rules)
        problems += self.mixture.source_problems(self.sources) if self.mixture else []
        problems += _metadata_key_problems(self)
        problems += _ablation_problems(self)
        if problems:
            raise ValueError("\n  - ".join(problems))
        return self

    def source(self, name: str) -> SourceConfig:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(name)

    def fingerprint(self) -> str:
        """sha256 of the canonical recipe: the config hash recorded in every run manifest."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def _ablation_problems(recipe: Recipe) -> list[str]:
    ab = recipe.ablation
    if ab is None:
        return []
    problems = []
    stages = [st.name for st in recipe.mixture.stages] if recipe.mixture else []
    if not recipe.mixture:
        problems.append("ablation: needs the mixture section (the curriculum stage whose weights are ablated)")
    elif ab.stage is not None and ab.stage not in stages:
        problems.append(f"ablation.stage: no curriculum stage {ab.stage!r} (mixture.stages: {stages})")
    known = {s.name for s in recipe.sources} | {s.domain for s in recipe.sources}
    unknown = sorted(set(ab.target.weights) - known)
    if ab.eval_sets:
        unknown = sorted(set(ab.target.weights) - {e.name for e in ab.eval_sets})
        if unknown:
            problems.append(f"ablation.target.weights: {unknown} is not one of ablation.eval_sets")
    elif unknown:
        problems.append(f"ablation.target.weights: {unknown} is neither a source nor a domain of a source")
    if ab.target.benchmark and ab.fit.model == "dml_per_set":
        problems.append("ablation.fit.model: dml_per_set fits one law per held-out set; a benchmark target "
                        "(ablation.target.benchmark) has no sets")
    if ab.target.benchmark and ab.target.benchmark.task not in EVAL_TASKS:
        problems.append(f"ablation.target.benchmark.task: {ab.target.benchmark.task!r} is not a `ruyi2 eval` task "
                        f"({', '.join(EVAL_TASKS)})")
    try:
        proxy_train(recipe)
    except ValueError as e:
        problems.append(str(e))
    if ab.kind == "pipeline" and not problems:
        problems += _arm_problems(recipe)
    return problems


def _arm_problems(recipe: Recipe) -> list[str]:
    """Every arm of a pipeline ablation makes a valid recipe: a bad patch fails when the recipe loads."""
    from pipeline.ablation_arms import ablation_arms, arm_recipe, leave_one_out_problems

    problems = leave_one_out_problems(recipe.ablation.leave_one_out)
    if problems:
        return problems
    for arm in ablation_arms(recipe):
        try:
            arm_recipe(recipe, arm, recipe.run_dir)
        except RecipeError as e:
            problems.append(str(e))
    return problems


def proxy_train(recipe: Recipe) -> TrainConfig:
    """The train section of the ablation's proxy runs: the recipe's, with ``ablation.proxy`` merged in."""
    try:
        return TrainConfig.model_validate(recipe.ablation.proxy_train_data(recipe.train.model_dump(mode="json")))
    except ValidationError as e:
        raise ValueError("; ".join(f"ablation.proxy.{'.'.join(str(p) for p in err['loc'])}: "
                                   f"{'unknown key' if err['type'] == 'extra_forbidden' else err['msg']}"
                                   for err in e.errors())) from None


def _name_problems(recipe: Recipe) -> list[str]:
    names = [s.name for s in recipe.sources]
    problems = []
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        problems.append(f"sources: duplicate source name(s) {dup}")
    for key, given, known, what in (
        ("filter.per_source", recipe.filter.per_source, names, "no source named"),
        ("filter.per_language", recipe.filter.per_language, {s.language for s in recipe.sources}, "no source has language"),
        ("dedup.source_priority", recipe.dedup.source_priority, names, "no source named"),
    ):
        unknown = sorted(set(given) - set(known))
        if unknown:
            problems.append(f"{key}: {what} {unknown} (known: {sorted(set(known))})")
    return problems


def _rule_problems(i: int, source: SourceConfig, rules: RuleSet) -> list[str]:
    where = f"filter rules of source {source.name!r} (domain {source.domain}, language {source.language})"
    problems = []
    if rules.tex.enabled and rules.tex.prose_view and rules.c4.enabled:
        problems.append(f"{where}: c4 edits lines and tex.prose_view masks them; switch one of them off")
    if rules.classifier.enabled and not rules.classifier.model:
        problems.append(f"{where}: classifier.enabled needs classifier.model (train one with `ruyi2 classifier train`)")
    if rules.language.enabled:
        targets = rules.language.languages or [source.language]
        unknown = sorted(set(targets) - lid_labels())
        if unknown:
            problems.append(
                f"sources[{i}] ({source.name!r}): the language rule is on but {unknown} is not a language the language-ID "
                f"model (lid.176) predicts, so every document would be removed; use labels such as en or zh (set "
                f"filter.per_source.{source.name}.language.languages for a multilingual source) or turn the rule off"
            )
    return problems


def _metadata_key_problems(recipe: Recipe) -> list[str]:
    """Metadata keys read by name later (bucket scores, the dedup keeper's quality) must be written by an
    enabled filter family or declared as an input field of the source."""
    available = {s.name: produced_metadata(recipe.filter.rules_for(s)) | set(s.metadata_fields) for s in recipe.sources}
    problems = []
    for s in recipe.sources:
        spec = recipe.mixture.buckets_for(s) if recipe.mixture else None
        if spec and spec.score not in available[s.name]:
            key = s.name if s.name in recipe.mixture.buckets else s.domain
            problems.append(
                f"mixture.buckets.{key}.score: {spec.score!r} is not written for source {s.name!r} (it has "
                f"{sorted(available[s.name] - {'signals'})}); enable the family that writes it (e.g. the classifier for "
                f"quality_score) or declare it in sources[].metadata_fields"
            )
    q = recipe.dedup.quality_key
    if q and "quality" in recipe.dedup.keeper and not any(q in keys for keys in available.values()):
        problems.append(f"dedup.quality_key: {q!r} is written for no source; enable the family that writes it or declare it "
                        "in sources[].metadata_fields")
    return problems


def _format_validation_error(path: str, err: ValidationError) -> str:
    lines = [f"{path}: invalid recipe ({err.error_count()} problem(s)):"]
    for e in err.errors():
        loc = ""
        for part in e["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        got = "" if e["type"] in ("missing", "extra_forbidden", "value_error") else f" (got {e.get('input')!r:.80})"
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
        if is_url(p):  # object storage: as given
            return p
        p = os.path.expanduser(p)
        return p if os.path.isabs(p) else str(base / p)

    recipe.run_dir = absolute(recipe.run_dir)
    for s in recipe.sources:
        s.paths = [absolute(p) for p in s.paths]
        if s.paths_file:  # its lines are taken as written (absolute paths or URLs)
            s.paths_file = absolute(s.paths_file)
    for _, settings, key in recipe.filter.file_settings():
        setattr(settings, key, absolute(getattr(settings, key)))
    recipe.decontam.resolve_paths(absolute)
    recipe.train.resolve_paths(absolute)
    for eval_set in recipe.ablation.eval_sets if recipe.ablation else []:
        eval_set.paths = [absolute(p) for p in eval_set.paths]
    proxy_init = recipe.ablation.proxy.get("init_from") if recipe.ablation else None
    if isinstance(proxy_init, dict) and isinstance(proxy_init.get("path"), str):
        proxy_init["path"] = absolute(proxy_init["path"])
    if not is_location(recipe.tokenizer.path):
        recipe.tokenizer.path = absolute(recipe.tokenizer.path)
    if check_inputs:
        problems = _input_problems(recipe)
        if problems:
            raise RecipeError(f"{path}: " + f"\n{path}: ".join(problems))
    return recipe


def _input_problems(recipe: Recipe) -> list[str]:
    problems = []
    for i, s in enumerate(recipe.sources):
        try:
            paths = s.all_paths()
        except (OSError, StorageInputError) as e:
            problems.append(f"sources[{i}] ({s.name!r}).paths_file: {e}")
            continue
        for p in paths:
            try:
                if not s.model_copy(update={"paths": [p], "paths_file": None}).files():
                    problems.append(f"sources[{i}] ({s.name!r}).paths: no input file matches {p!r}")
            except StorageInputError as e:  # the URL, and what to do, named before any work
                problems.append(f"sources[{i}] ({s.name!r}).paths: {e}")
    problems += [f"{where}: no such file {getattr(settings, key)}" for where, settings, key in recipe.filter.file_settings()
                 if not os.path.isfile(getattr(settings, key))]
    problems += recipe.decontam.input_problems()
    for i, e in enumerate(recipe.ablation.eval_sets if recipe.ablation else []):
        problems += [f"ablation.eval_sets[{i}] ({e.name!r}).paths: no input file matches {p!r}" for p in e.paths
                     if not e.as_source().model_copy(update={"paths": [p]}).files()]
    try:
        resolve_asset(recipe.tokenizer.path)
    except FileNotFoundError as e:
        problems.append(f"tokenizer.path: {e}")
    return problems


def _read_yaml(path: str, what: str):
    if not os.path.isfile(path):
        raise RecipeError(f"{path}: {what} file not found")
    with open(path, encoding="utf-8") as f:
        try:
            return yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise RecipeError(f"{path}: not valid YAML: {e}") from None


def apply_patch(data: dict, patch, where: str) -> dict:
    """A recipe patch (such as ``ruyi2 ablate``'s proposal.patch.yaml) merged into recipe data: mappings key
    by key; ``mixture.stages`` items by stage name, each given key replacing the stage's (weights whole)."""
    if not isinstance(patch, dict):
        raise RecipeError(f"{where}: a patch must be a mapping of recipe sections")

    def merge(base, over, loc):
        if not isinstance(over, dict) or not isinstance(base, dict):
            return over
        return {**base, **{k: merge(base.get(k), v, f"{loc}.{k}") if k in base else v for k, v in over.items()}}

    out = dict(data)
    stages_patch = (patch.get("mixture") or {}).get("stages") if isinstance(patch.get("mixture"), dict) else None
    if stages_patch is not None:
        stages = [dict(st) for st in ((out.get("mixture") or {}).get("stages") or [])]
        names = [st.get("name") for st in stages]
        for i, item in enumerate(stages_patch if isinstance(stages_patch, list) else [None]):
            if not isinstance(item, dict) or item.get("name") not in names:
                raise RecipeError(f"{where}: mixture.stages[{i}]: names no curriculum stage of the recipe "
                                  f"(stages: {names}); a patch's stages are matched by name")
            stages[names.index(item["name"])].update(item)
        patch = {**patch, "mixture": {k: v for k, v in patch["mixture"].items() if k != "stages"}}
        out["mixture"] = {**(out.get("mixture") or {}), "stages": stages}
    return merge(out, patch, "")


def load_recipe(path: str | os.PathLike, run_dir: str | None = None, check_inputs: bool = True,
                patch: str | None = None) -> Recipe:
    path = str(path)
    data = _read_yaml(path, "recipe")
    if patch is not None and isinstance(data, dict):
        data = apply_patch(data, _read_yaml(patch, "patch"), patch)
    if run_dir is not None and isinstance(data, dict):
        data["run_dir"] = run_dir
    recipe = parse_recipe(data, path, base_dir=os.path.dirname(os.path.abspath(path)), check_inputs=check_inputs)
    recipe._source, recipe._overridden = os.path.abspath(path), patch is not None or run_dir is not None
    return recipe


def dump_recipe(recipe: Recipe, path: str | os.PathLike) -> None:
    """The run's copy of its recipe. Never written over the file the recipe was read from (``ruyi2 run
    RUN_DIR/recipe.yaml`` reruns a run from its own copy: that file already says what runs, unless a patch or
    --run-dir changed it, which is refused)."""
    source = recipe._source
    if source and os.path.exists(path) and os.path.samefile(source, path):
        if recipe._overridden:
            raise RecipeError(f"{path}: this is the run's own copy of its recipe, and --patch/--run-dir would make the run "
                              "differ from it: copy it out of the run directory and run the copy")
        return
    write_yaml(path, recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# recipe keys a resumed run may change: where and how it runs, not what it computes
# keys (and everything under them) that change no stage's output: where it runs, the ablation section, where the
# training data are published to and read from (the same bytes)
RESUME_MAY_CHANGE = ("run_dir", "executor", "ablation", "mixture.publish", "train.data_from")


def _may_change(key: str) -> bool:
    return any(key == k or key.startswith((k + ".", k + "[")) for k in RESUME_MAY_CHANGE)


def changed_keys(before, after, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two recipe dumps (lists item by item)."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for k in sorted(set(before) | set(after), key=str):
            out += changed_keys(before.get(k), after.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [k for i, (b, a) in enumerate(zip(before, after)) for k in changed_keys(b, a, f"{prefix}[{i}]")]
    return [] if before == after else [prefix]


def resume_problems(recipe: Recipe, stored_path: str) -> list[str]:
    """``--resume`` keeps the finished tasks of the recipe that ran before (``RUN_DIR/recipe.yaml``): a recipe that
    changed what is computed would mix outputs of both. The keys that changed are named."""
    if not os.path.exists(stored_path):
        return []
    with open(stored_path, encoding="utf-8") as f:
        before = yaml.safe_load(f)
    after = recipe.model_dump(mode="json")
    changed = [k for k in changed_keys(before, after) if not _may_change(k)]
    if not changed:
        return []
    shown = ", ".join(changed[:10]) + (f" and {len(changed) - 10} more" if len(changed) > 10 else "")
    return [f"--resume: the recipe differs from the one this run directory ran ({stored_path}) in {shown}; the finished "
            f"tasks of that recipe would be mixed with this one's. Run without --resume (stages start afresh), or restore "
            f"those keys ({', '.join(RESUME_MAY_CHANGE)} may change on resume)"]
