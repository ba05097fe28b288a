"""The shipped recipe for the real run, run on real text laid out like its sources.

Only where the data lives, where the classifier models are and how many local workers run are changed; every
rule, bucket and weight is the recipe's own. The data stages run through tokenize; the plan is then made from
what tokenize wrote, with each source's total scaled to the corpus the report implies (~2.7T unique tokens
after filtering) while the shares inside a source (its quality buckets) stay as measured.
"""

from __future__ import annotations

import os

import pytest
import yaml

from mixtures.plan import MixtureError, Unit, plan_mixture, units_from_tokenize
from pipeline.core.accounting import read_stats
from pipeline.core.layout import RunLayout
from pipeline.recipe import parse_recipe
from pipeline.runner import run_stages
from tests.conftest import read_docs
from tests.realdata import need
from tests.recipe_corpus import build_corpus, train_classifiers

pytestmark = pytest.mark.slow  # four stages over ~2,000 real documents

RECIPE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pipeline", "recipes", "ruyi2-800b.yaml")
B = 1_000_000_000
INVENTORY = {"web_en": 1600 * B, "web_zh": 600 * B, "code": 300 * B, "math_web": 60 * B, "arxiv": 40 * B, "books": 50 * B,
             "wiki_en": 20 * B, "wiki_zh": 10 * B, "synth_reasoning": 25 * B}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ruyi2_800b")
    paths, train_zh = need(build_corpus, str(root / "corpora"))
    models = train_classifiers(str(root / "models"), train_zh)
    with open(RECIPE) as f:
        data = yaml.safe_load(f)
    data["run_dir"] = str(root / "run")
    for s in data["sources"]:
        s["paths"] = [paths[s["name"]]]
    for language, model in models.items():
        data["filter"]["per_language"][language]["classifier"]["model"] = model
    data["executor"] = {"kind": "local", "tasks": 2, "workers": 2}
    recipe = parse_recipe(data, RECIPE)
    run_stages(recipe, ["filter", "dedup", "decontam", "tokenize"], quiet=True)
    return recipe, RunLayout(recipe.run_dir)


def test_the_shipped_recipe_validates():
    with open(RECIPE) as f:
        recipe = parse_recipe(yaml.safe_load(f), RECIPE, check_inputs=False)
    assert [s.name for s in recipe.sources][-3:] == ["wiki_en", "wiki_zh", "synth_reasoning"]


def test_every_source_and_every_quality_bucket_has_data(run):
    recipe, layout = run
    tok = read_stats(layout.stats("tokenize"))["sources"]
    for s in recipe.sources:
        for unit, _ in recipe.mixture.units_of(s):
            assert tok[s.name]["units"][unit]["documents"] > 0, unit
        assert tok[s.name]["missing_score"] == 0  # every web document got its classifier score
    # the buckets follow the score: spam sinks, the READMEs rise
    kept = read_docs(layout.output("filter"))
    score = {d["id"]: d["metadata"]["quality_score"] for d in kept if d["metadata"]["source"] == "web_en"}
    spam = [v for i, v in score.items() if "/spam-2/" in i]
    readmes = [v for i, v in score.items() if "/pypi/" in i]
    assert spam and readmes and sum(readmes) / len(readmes) > sum(spam) / len(spam) + 0.3
    removed = read_docs(layout.removed("filter"))
    assert any(d["metadata"]["removed_reason"] == "classifier:low_quality_score" for d in removed)


def test_the_plan_reaches_every_weighted_unit_within_the_repeat_cap(run):
    recipe, layout = run
    tok = read_stats(layout.stats("tokenize"))["sources"]
    measured = units_from_tokenize(recipe.mixture, recipe.sources, tok)
    scale = {src: INVENTORY[src] / sum(u.unique_tokens for u in measured if u.source == src) for src in INVENTORY}

    def scaled(u: Unit, factor: float = 1.0) -> Unit:
        t = int(u.unique_tokens * scale[u.source] * factor)
        return Unit(u.name, u.source, u.domain, t, t, u.prefix, u.bucket)

    units = [scaled(u) for u in measured]
    plan = plan_mixture(recipe.mixture, units)
    assert [st["name"] for st in plan["stages"]] == ["general", "mid", "anneal"] and not plan["notes"]
    assert sum(st["tokens"] for st in plan["stages"]) == 800 * B
    for st, cfg in zip(plan["stages"], recipe.mixture.stages):
        rows = {r["unit"]: r for r in st["prefixes"]}
        assert sum(r["tokens_planned"] for r in rows.values()) == pytest.approx(st["tokens"], rel=1e-6)
        assert max(r["epochs"] for r in rows.values()) <= recipe.mixture.max_epochs
        assert all(r["tokens_planned"] > 0 for r in rows.values())
        named_units = [k for k in cfg.weights if "." in k]
        assert all(k in rows for k in named_units), (st["name"], named_units)
    # the same recipe on a corpus with a tenth of the synthetic data fails before training, naming the unit
    short = [scaled(u, 0.1 if u.source == "synth_reasoning" else 1.0) for u in measured]
    with pytest.raises(MixtureError, match=r"'synth_reasoning' would be repeated"):
        plan_mixture(recipe.mixture, short)
