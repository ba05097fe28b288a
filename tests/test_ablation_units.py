"""The mixture ablation's parts on their own: candidates, baselines, fits, the proposer, the recipe section
and the recipe patch its proposal is handed off with."""

import os

import numpy as np
import pytest
import yaml

from mixtures.ablation import fits
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
    ({"target": {"benchmark": {"task": "mmlu"}}, "fit": {"model": "dml_per_set"}}, r"ablation\.fit\.model: dml_per_set"),
])
def test_a_bad_ablation_section_fails_before_any_work_naming_the_key(tmp_path, ablation, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(_recipe(tmp_path, ablation))


@pytest.mark.parametrize("ablation, message", [
    ({"variants": [{"name": "v", "patch": {}}]}, r"variants, leave_one_out and eval_sets belong to a pipeline ablation: set kind: pipeline"),
    ({"kind": "pipeline", "leave_one_out": ["c5"]}, r"ablation\.leave_one_out: 'c5' is not a filter family"),
    ({"kind": "pipeline", "leave_one_out": ["c4"], "variants": [{"name": "no-c4", "patch": {}}]},
     r"arm name\(s\) \['no-c4'\] used twice or reserved"),
    ({"kind": "pipeline", "variants": [{"name": "raw", "patch": {}}]}, r"arm name\(s\) \['raw'\] used twice or reserved"),
    ({"kind": "pipeline", "variants": [{"name": "v", "patch": {"sources": []}}]},
     r"variant 'v': a patch may set filter, dedup, decontam, not \['sources'\]"),
    ({"kind": "pipeline", "variants": [{"name": "strict", "patch": {"filter": {"rules": {"c4": {"min_sentencez": 3}}}}}]},
     r"(?s)ablation arm 'strict' \(the recipe with its patch\): invalid recipe.*filter\.rules\.c4\.min_sentencez: unknown key"),
    ({"kind": "pipeline", "variants": [{"name": "mh", "patch": {"dedup": {"minhash": {"min_similarity": 1.5}}}}]},
     r"(?s)ablation arm 'mh' \(the recipe with its patch\): invalid recipe.*dedup\.minhash\.min_similarity: Input should be less than or equal to 1"),
])
def test_a_bad_pipeline_ablation_fails_when_the_recipe_loads_naming_the_arm_or_key(tmp_path, ablation, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(_recipe(tmp_path, ablation))


def test_the_arms_of_a_pipeline_ablation_switch_families_off_for_every_source(tmp_path):
    from pipeline.ablation_arms import ablation_arms, arm_recipe

    recipe = load_recipe(_recipe(tmp_path, {"kind": "pipeline", "leave_one_out": ["classifier", "c4"], "variants": [
        {"name": "strict-c4", "patch": {"filter": {"rules": {"c4": {"min_num_sentences": 9}}}}}]}))
    arms = {a.name: arm_recipe(recipe, a, str(tmp_path / a.name)) for a in ablation_arms(recipe)}
    assert list(arms) == ["raw", "recipe", "no-classifier", "no-c4", "strict-c4"]
    for src in recipe.sources:
        raw = arms["raw"].filter.rules_for(src)
        assert raw.sanity.enabled and not any(getattr(raw, f).enabled for f in type(raw).model_fields if f != "sanity")
        assert not arms["no-c4"].filter.rules_for(src).c4.enabled
        assert arms["no-c4"].filter.rules_for(src).gopher_quality == recipe.filter.rules_for(src).gopher_quality
        assert arms["strict-c4"].filter.rules_for(src).c4.min_num_sentences == 9
    assert not arms["raw"].dedup.enabled and not arms["raw"].decontam.enabled and arms["no-c4"].dedup.enabled
    assert arms["recipe"].filter == recipe.filter and arms["recipe"].ablation is None
    assert {a.run_dir for a in arms.values()} == {str(tmp_path / n) for n in arms}


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


# 28 measured proxies of the full-demo ablation (BENCHMARKS.md): weights of web, book, docs, math, code,
# then the held-out loss of the book and web sets at the last exit
MEASURED = [
    (0.0957217, 0.406256, 0.213043, 0.139352, 0.145627, 8.43773, 8.89518),
    (0.192096, 0.00433539, 0.126583, 0.324892, 0.352093, 9.11588, 8.76643),
    (0.000123418, 0.0622713, 0.0466095, 0.791438, 0.099558, 8.99257, 9.11383),
    (0.119724, 0.203454, 0.0615021, 0.0920881, 0.523232, 8.7812, 8.93483),
    (0.0409655, 0.375786, 0.0192823, 0.0164625, 0.547504, 8.532, 9.04293),
    (0.026024, 0.611385, 0.0146026, 0.0176169, 0.330371, 8.23229, 9.06582),
    (0.0825532, 0.474483, 0.0491056, 0.130032, 0.263826, 8.38954, 8.96142),
    (0.12288, 0.320108, 0.259805, 0.0239239, 0.273284, 8.52391, 8.83243),
    (0.00010362, 0.236852, 0.00850585, 0.649523, 0.105016, 8.68336, 9.11375),
    (0.115162, 0.301023, 0.176553, 0.0373153, 0.369947, 8.59553, 8.85795),
    (0.0343661, 0.452426, 0.0085303, 0.284255, 0.220423, 8.41426, 9.0193),
    (0.00903189, 0.310357, 0.300081, 0.0541624, 0.326367, 8.55772, 8.91468),
    (0.0356676, 0.317252, 0.0371653, 0.000469196, 0.609446, 8.61889, 9.06451),
    (0.0242049, 0.193542, 0.395574, 0.0847187, 0.301961, 8.72054, 8.86921),
    (0.0173849, 0.229576, 0.322526, 0.175906, 0.254607, 8.67249, 8.92463),
    (0.0077531, 0.124275, 1.16932e-05, 0.727277, 0.140683, 8.8983, 9.10297),
    (0.000888655, 0.532262, 0.177584, 0.214278, 0.0749866, 8.27985, 8.98374),
    (0.00995703, 0.166319, 0.236294, 0.0994804, 0.487949, 8.82853, 8.96929),
    (0.112272, 0.0879053, 0.000599049, 0.0323342, 0.766889, 9.04526, 9.00438),
    (0.0270621, 0.0442295, 0.102985, 0.142815, 0.682908, 9.11825, 9.05561),
    (0.123479, 0.316842, 0.288737, 0.0293753, 0.241566, 8.53321, 8.78867),
    (0.173115, 0.158362, 0.277473, 0.251694, 0.139356, 8.75809, 8.74616),
    (0.0513001, 0.113475, 0.0596799, 0.0195487, 0.755996, 9.0028, 9.09705),
    (0.0333987, 0.192384, 0.0141752, 0.283476, 0.476566, 8.765, 9.03713),
    (0.00297856, 0.131888, 0.173398, 0.0762438, 0.615492, 8.88549, 8.9936),
    (0.00784723, 0.518828, 0.0284026, 0.23038, 0.214542, 8.3296, 9.0361),
    (0.19482, 0.201295, 0.201295, 0.201295, 0.201295, 8.70651, 8.77067),
    (0.1, 0.3, 0.1, 0.15, 0.35, 8.58892, 8.91147),
]


def test_the_log_linear_law_fits_real_ablation_runs_and_the_per_set_laws_fit_their_sum():
    """On these runs the single law once collapsed to a constant (its clip trapped b at -inf, out-of-fold
    Spearman -0.16); bounded, it ranks unseen mixtures; per set, then summed, as Data Mixing Laws does."""
    data = np.array(MEASURED)
    x, per_set = data[:, :5], data[:, 5:]
    for j in range(2):
        cv = fits.cross_validate(fits.LogLinear, x, per_set[:, j], 5)
        assert cv.spearman > 0.9 and cv.r2 > 0.85
    target = per_set @ np.array([0.5, 0.5])
    out = fits.fit_outcome(x, target, ["web", "book", "docs", "math", "code"], 5,
                           per_set=(per_set, [0.5, 0.5], ["book/shakespeare", "web/web"]))
    dml = out["joint"]["dml_per_set"]
    assert dml["cv"]["spearman"] > 0.9 and set(dml["params"]["sets"]) == {"book/shakespeare", "web/web"}
    law = dml["params"]["sets"]["book/shakespeare"]
    assert 0 <= law["c"] < per_set[:, 0].min() and law["t"]["book"] < 0  # more Shakespeare, lower book loss


def test_evaluation_sets_are_read_like_sources_and_tokenized_once_into_prefixes(tmp_path):
    """ablation.eval_sets: every record read, a bad one quarantined and counted, each document one sequence of its
    tokens plus EOS; the target weighs the sets by name; a second call reuses the prefixes, a changed set redoes them."""
    import json

    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from pipeline.ablate_pipeline import scoring_sets
    from pipeline.ablation_eval_sets import eval_set_prefixes
    from pipeline.core.layout import RunLayout
    from pipeline.core.tokens import load_tokenizer, token_id

    texts = ["A curated paragraph about tides and the moon.", "Another clean document, kept apart from training."]
    (tmp_path / "curated.jsonl").write_text("".join(json.dumps({"id": f"c{i}", "text": t}) + "\n" for i, t in enumerate(texts))
                                            + '{"id": "bad", "text": 7}\n')
    (tmp_path / "wiki.jsonl").write_text(json.dumps({"id": "w0", "text": "Wikipedia passage."}) + "\n")
    sets = [{"name": "curated", "paths": ["curated.jsonl"]}, {"name": "wiki", "paths": ["wiki.jsonl"]}]
    recipe = load_recipe(_recipe(tmp_path, {"kind": "pipeline", "eval_sets": sets, "target": {"weights": {"curated": 3, "wiki": 1}}}))
    root = str(tmp_path / "ablate")
    prefixes = eval_set_prefixes(recipe, root)
    tok, eos = load_tokenizer(recipe.tokenizer.path), token_id(recipe.tokenizer.path, recipe.tokenizer.eos_token)
    ds = IndexedDataset(prefixes["curated"])
    assert [list(ds[i]) for i in range(len(ds))] == [tok.encode(t, add_special_tokens=False).ids + [eos] for t in texts]
    with open(os.path.join(root, "eval_sets", "stats.json")) as f:
        counts = json.load(f)["sets"]
    assert counts["curated"] == {"read": 3, "quarantined": 1, "docs": 2, "tokens": sum(len(x) for x in ds)}
    weights, unscored, labels, _ = scoring_sets(recipe, RunLayout(str(tmp_path / "run")), root)
    assert weights == {"eval/curated": 0.75, "eval/wiki": 0.25} and unscored == [] and labels["eval/wiki"] == prefixes["wiki"]
    before = os.stat(prefixes["curated"] + ".bin").st_mtime_ns
    assert eval_set_prefixes(recipe, root) == prefixes and os.stat(prefixes["curated"] + ".bin").st_mtime_ns == before
    (tmp_path / "wiki.jsonl").write_text(json.dumps({"id": "w0", "text": "A longer Wikipedia passage."}) + "\n")
    sets[1]["paths"] = [str(tmp_path / "wiki.jsonl"), str(tmp_path / "curated.jsonl")]
    changed = load_recipe(_recipe(tmp_path, {"kind": "pipeline", "eval_sets": sets}))
    eval_set_prefixes(changed, root)
    assert len(IndexedDataset(prefixes["wiki"])) == 3


def test_a_bad_evaluation_set_fails_when_the_recipe_loads(tmp_path):
    with pytest.raises(RecipeError, match=r"ablation\.eval_sets\[0\] \('gone'\)\.paths: no input file matches"):
        load_recipe(_recipe(tmp_path, {"kind": "pipeline", "eval_sets": [{"name": "gone", "paths": ["nowhere/*.jsonl"]}]}))
    with pytest.raises(RecipeError, match=r"ablation\.target\.weights: \['web'\] is not one of ablation\.eval_sets"):
        load_recipe(_recipe(tmp_path, {"kind": "pipeline", "eval_sets": [{"name": "c", "paths": ["in.jsonl"]}],
                                       "target": {"weights": {"web": 1.0}}}))
    with pytest.raises(RecipeError, match=r"eval_sets belong to a pipeline ablation"):
        load_recipe(_recipe(tmp_path, {"eval_sets": [{"name": "c", "paths": ["in.jsonl"]}]}))


def test_an_arm_without_the_classifier_loses_the_quality_buckets_and_keeper_and_says_so(tmp_path):
    """The 800B recipe splits web by quality_score and keeps the better-scored duplicate: its no-classifier arm
    writes no score, so those are dropped (a curriculum weight on a bucket goes to its source) and noted."""
    import os

    from pipeline.ablation_arms import ablation_arms, fit_to_arm
    from pipeline.recipe import parse_recipe

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pipeline", "recipes", "ruyi2-800b.yaml")
    with open(path) as f:
        data = yaml.safe_load(f)
    data["run_dir"] = str(tmp_path / "run")
    data["ablation"] = {"kind": "pipeline", "leave_one_out": ["classifier", "c4"]}
    recipe = parse_recipe(data, path, check_inputs=False)
    arms = {a.name: fit_to_arm(recipe, a, str(tmp_path / a.name)) for a in ablation_arms(recipe)}
    for name in ("raw", "no-classifier"):
        arm, notes = arms[name]
        assert notes == ["dedup.quality_key 'quality_score' unset: no source writes it",
                         "mixture.buckets.web dropped: 'quality_score' is not written"]
        assert arm.mixture.buckets == {} and arm.dedup.quality_key is None
        for before, after in zip(recipe.mixture.stages, arm.mixture.stages):
            assert sum(after.weights.values()) == pytest.approx(sum(before.weights.values()))
            assert after.weights["web_en"] == before.weights["web_en.high"] and "web_en.high" not in after.weights
    for name in ("recipe", "no-c4"):
        arm, notes = arms[name]
        assert notes == [] and arm.mixture == recipe.mixture and arm.dedup.quality_key == "quality_score"
