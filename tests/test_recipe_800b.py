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


# Qwen3-14B-Base's published config.json (the shape fields the launch recipe reads)
QWEN3_14B = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 5120, "intermediate_size": 17408,
             "num_hidden_layers": 40, "num_attention_heads": 40, "num_key_value_heads": 8, "head_dim": 128,
             "vocab_size": 151936, "rope_theta": 1000000, "rms_norm_eps": 1e-06, "tie_word_embeddings": False,
             "max_position_embeddings": 32768, "torch_dtype": "bfloat16"}


def test_the_launch_recipe_passes_every_check_before_training(run, tmp_path):
    """The train section of the shipped recipe, on the real corpus's plan and a folder with Qwen3-14B's
    config: the pre-work checks pass, the model is Ruyi2's (40 layers, exits 2/21/39), the steps carry 800B
    tokens, and the learning rate anneals over the anneal stage only."""
    import json

    from pipeline.runner import check_runnable
    from train_entry.loop_settings import stage_steps
    from train_entry.lr_schedule import LRSchedule, decay_span
    from train_entry.pipeline_balance import plan_pipeline
    from train_entry.stage import model_config

    recipe, _ = run
    base = tmp_path / "Qwen3-14B-Base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps(QWEN3_14B))
    recipe.train.init_from.path = str(base)
    check_runnable(recipe, ["train"])
    train = recipe.train
    fcfg = model_config(train)
    assert (fcfg.num_layers, fcfg.hidden_size, fcfg.exits) == (40, 5120, (2, 21, 39))
    assert train.precision == "bf16" and train.global_batch_size % (train.micro_batch_size * 32) == 0  # DP 32
    assert train.steps * train.global_batch_size * train.seq_length == pytest.approx(800e9, rel=1e-4)
    # interleaved 1F1B over 32 micro-batches per replica: 8 virtual stages of the exit-aware plan
    assert (train.global_batch_size // 32) % train.pipeline_parallel == 0
    plan = plan_pipeline(fcfg, train.pipeline_parallel * train.virtual_pipeline_parallel, train.seq_length,
                         train.pipeline_balance)
    assert sum(plan.layers_per_stage) == 40 and plan.speedup_over_even >= 1.0  # never slower than an even split
    stages = [st.name for st in recipe.mixture.stages]
    steps = stage_steps([type("S", (), {"tokens": st.tokens})() for st in recipe.mixture.stages], train.steps)
    end, decay = decay_span(LRSchedule(train.lr_schedule, train.warmup_steps, train.lr_anneal_stage), stages, steps)
    assert (end, decay) == (train.steps, steps[-1]) and stages[-1] == "anneal"
    train.lr_anneal_stage = "cooldown"
    with pytest.raises(Exception, match="lr_anneal_stage: no curriculum stage 'cooldown'"):
        check_runnable(recipe, ["train"])
