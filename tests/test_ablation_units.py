"""The mixture ablation's parts on their own: candidates, baselines, fits, the proposer, the recipe section
and the recipe patch its proposal is handed off with."""

import numpy as np
import pytest
import yaml

from mixtures.ablation.candidates import Category, dirichlet_samples, token_proportional, unimax
from mixtures.ablation.fits import LogLinear, fit_outcome
from mixtures.ablation.proposer import caps, propose
from pipeline.recipe import RecipeError, load_recipe, proxy_train

CATS = [Category("web", 1_000), Category("code", 50_000), Category("math", 20_000), Category("book", 200_000)]


def test_dirichlet_samples_are_seeded_and_centred_on_the_prior():
    prior = {"web": 0.1, "code": 0.5, "math": 0.3, "book": 0.1}
    a = dirichlet_samples(CATS, prior, 400, concentration=50.0, floor=0.0, seed=3)
    assert a == dirichlet_samples(CATS, prior, 400, concentration=50.0, floor=0.0, seed=3)
    assert a != dirichlet_samples(CATS, prior, 400, concentration=50.0, floor=0.0, seed=4)
    mean = {c: np.mean([s[c] for s in a]) for c in prior}
    assert all(abs(mean[c] - prior[c]) < 0.02 for c in prior)
    assert all(abs(sum(s.values()) - 1) < 1e-9 for s in a)
    # the floor explores a category the prior leaves out
    wide = dirichlet_samples(CATS, {"web": 0.0, "code": 1.0, "math": 0.0, "book": 0.0}, 50, 4.0, 0.2, 0)
    assert min(s["web"] for s in wide) > 0 and np.mean([s["web"] for s in wide]) > 0.02


def test_unimax_caps_small_categories_and_shares_the_rest_uniformly():
    w = unimax(CATS, stage_tokens=100_000, max_epochs=4)
    assert w["web"] == pytest.approx(4 * 1_000 / 100_000)  # capped: 4 epochs of its 1,000 tokens
    rest = [w[c] for c in ("code", "math", "book")]
    assert max(rest) - min(rest) < 1e-9 and sum(w.values()) == pytest.approx(1)
    assert token_proportional(CATS)["book"] == pytest.approx(200_000 / 271_000)


def test_fits_recover_a_data_mixing_law_and_rank_unseen_mixtures():
    rng = np.random.default_rng(0)
    t = np.array([-1.5, 0.5, 1.0, -0.5])
    def law(x):
        return 3.0 + np.exp(0.2 + x @ t)

    x = rng.dirichlet(np.ones(4), size=24)
    y = law(x) + rng.normal(0, 0.005, len(x))
    fit = fit_outcome(x, y, [c.name for c in CATS], k=5)
    assert fit["joint"]["log_linear"]["cv"]["spearman"] > 0.95
    assert fit["joint"]["log_linear"]["cv"]["r2"] > 0.9
    assert fit["splines"]["web"]["cv"]["spearman"] > 0.6  # the category with the strongest effect
    unseen = rng.dirichlet(np.ones(4), size=50)
    predicted = LogLinear().fit(x, y).predict(unseen)
    from scipy.stats import spearmanr
    assert spearmanr(predicted, law(unseen)).statistic > 0.95


def test_proposer_minimises_within_the_repeat_caps():
    class Known:  # loss falls with web, then math: the unconstrained optimum is all web
        def predict(self, w):
            return w @ np.array([-2.0, 0.0, -1.0, 0.0])

    cap = caps([c.unique_tokens for c in CATS], stage_tokens=100_000, max_epochs=4)
    w = propose(Known(), np.full(4, 0.25), cap, [np.full(4, 0.25)])
    assert w[0] == pytest.approx(0.04)  # web held at 4 epochs of 1,000 tokens
    assert w[2] == pytest.approx(0.8)  # math at its cap (4 x 20,000 / 100,000)
    assert w.sum() == pytest.approx(1) and np.all(w <= cap + 1e-9)
    # a penalty towards the prior pulls the proposal back
    prior = np.array([0.01, 0.49, 0.0, 0.5])
    pulled = propose(Known(), prior, cap, [prior], prior_penalty=100.0)
    assert np.abs(pulled - prior).sum() < np.abs(w - prior).sum()


def _recipe(tmp_path, ablation: dict, patch: dict | None = None) -> str:
    (tmp_path / "in.jsonl").write_text('{"text": "hello"}\n')
    data = {"run_dir": "run", "sources": [{"name": "web", "paths": ["in.jsonl"], "format": "jsonl", "domain": "web"},
                                          {"name": "code", "paths": ["in.jsonl"], "format": "jsonl", "domain": "code"}],
            "mixture": {"stages": [{"name": "general", "tokens": 1000, "weights": {"web": 0.5, "code": 0.5}},
                                   {"name": "anneal", "tokens": 100, "weights": {"code": 1.0}}]},
            "ablation": ablation}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(data))
    if patch is not None:
        (tmp_path / "patch.yaml").write_text(yaml.safe_dump(patch))
    return str(tmp_path / "recipe.yaml")


@pytest.mark.parametrize("ablation, message", [
    ({"proxy": {"stepz": 4}}, r"ablation\.proxy\.stepz: unknown key"),
    ({"proxy": {"model": {"hidden": 8}}}, r"ablation\.proxy\.model\.hidden: unknown key"),
    ({"proxy": {"steps": 0}}, r"ablation\.proxy\.steps: Input should be greater than or equal to 1"),
    ({"candidates": {"cuont": 4}}, r"ablation\.candidates\.cuont: unknown key"),
    ({"stage": "mid"}, r"ablation\.stage: no curriculum stage 'mid'"),
    ({"target": {"weights": {"books": 1.0}}}, r"ablation\.target\.weights: \['books'\] is neither a source nor a domain"),
    ({"target": {"benchmark": {"task": "mmlu", "limt": 20}}}, r"ablation\.target\.benchmark\.limt: unknown key"),
    ({"target": {"benchmark": {"task": "arc_easy"}}}, r"ablation\.target\.benchmark\.task: 'arc_easy' is not a `ruyi2 eval` task"),
])
def test_a_bad_ablation_section_fails_before_any_work_naming_the_key(tmp_path, ablation, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(_recipe(tmp_path, ablation))


def test_proxy_overrides_merge_into_the_train_section(tmp_path):
    recipe = load_recipe(_recipe(tmp_path, {"proxy": {"steps": 5, "model": {"num_layers": 2}, "init_from": {"path": "base"}}}))
    proxy = proxy_train(recipe)
    assert (proxy.steps, proxy.model.num_layers, proxy.model.preset) == (5, 2, recipe.train.model.preset)
    assert proxy.init_from.path == str(tmp_path / "base")  # relative to the recipe, like the train section's


def test_a_patch_replaces_a_stage_weights_by_name_and_names_unknown_stages(tmp_path):
    patch = {"mixture": {"stages": [{"name": "anneal", "weights": {"web": 0.2, "code": 0.8}}]}}
    recipe = load_recipe(_recipe(tmp_path, {}, patch), patch=str(tmp_path / "patch.yaml"))
    assert recipe.mixture.stages[1].weights == {"web": 0.2, "code": 0.8}
    assert recipe.mixture.stages[0].weights == {"web": 0.5, "code": 0.5}  # untouched
    bad = {"mixture": {"stages": [{"name": "annealing", "weights": {"web": 1.0}}]}}
    with pytest.raises(RecipeError, match=r"patch\.yaml: mixture\.stages\[0\]: names no curriculum stage"):
        load_recipe(_recipe(tmp_path, {}, bad), patch=str(tmp_path / "patch.yaml"))
    typo = {"mixture": {"max_epoch": 2}}
    with pytest.raises(RecipeError, match=r"mixture\.max_epoch: unknown key"):
        load_recipe(_recipe(tmp_path, {}, typo), patch=str(tmp_path / "patch.yaml"))
