"""`ruyi2 ablate` end to end on the small demo run: candidates and baselines through the planner, proxy
runs of the familial model continued from the demo's base, fits, a proposal validated over three seeds,
every output; resumed and on a two-node Ray cluster with identical results; the report in Chromium."""

import glob
import json
import os
import shutil

import numpy as np
import polars as pl
import pytest
import yaml

from pipeline.cli import main
from pipeline.core.layout import claim_run_dir
from tests.browser import drawn_figures, render
from tests.conftest import kill_ablate_once_a_lost_run_is_back, write_demo_recipe

pytestmark = pytest.mark.slow  # trains a few dozen proxies

# tiny proxies: 4 steps of 2 x 32 tokens each, continued from the demo's base model (3 exits)
ABLATION = {
    "stage": "general", "categories": "domains", "candidates": {"count": 6, "concentration": 1.0, "seed": 0},
    "proxy": {"steps": 4, "micro_batch_size": 1, "global_batch_size": 2, "seq_length": 32, "eval_samples": 4,
              "lr_schedule": "cosine", "threads": 1},
    "fit": {"folds": 3}, "workers": 2, "validation": {"seeds": 3},
}
OUTPUTS = ("results.parquet", "results.csv", "fits.json", "summary.json", "proposal.patch.yaml", "proposal.recipe.yaml",
           "report.html")


def _recipe(demo_run, folder, **changes) -> str:
    return write_demo_recipe(demo_run, folder, **({"ablation": ABLATION} | changes))


@pytest.fixture(scope="module")
def ablation(demo_run, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("ablation"))
    path = _recipe(demo_run, folder)
    assert main(["ablate", path]) == 0
    root = os.path.join(demo_run["layout"].root, "ablate")
    return {"recipe": path, "root": root, "folder": folder, "bytes": _outputs(root)}


def _outputs(root: str) -> dict[str, bytes]:
    return {name: open(os.path.join(root, name), "rb").read() for name in OUTPUTS}


def test_ablation_plans_every_candidate_and_writes_every_output(ablation, demo_run):
    root = ablation["root"]
    summary = json.load(open(os.path.join(root, "summary.json")))
    # the small demo's web source holds 1,677 unique tokens: at 50,000 stage tokens and max_epochs 4 a mixture
    # may give it at most 13.4%; the planner (over_cap: fail) rejects the uniform baseline and two samples
    rejected = {r["mixture"]: r["reason"] for r in summary["rejected"]}
    assert set(rejected) == {"uniform", "cand-001", "cand-005"}
    assert all("'web' would be repeated" in why for why in rejected.values())
    table = pl.read_parquet(os.path.join(root, "results.parquet"))
    fit = table.filter(pl.col("in_fit"))
    assert sorted(fit["mixture"]) == sorted(["cand-000", "cand-002", "cand-003", "cand-004", "token_proportional",
                                             "unimax", "recipe"])
    weights = fit.select([f"w_{c}" for c in summary["categories"]]).to_numpy()
    assert np.allclose(weights.sum(axis=1), 1) and (weights[:, 0] <= summary["caps"]["web"] + 1e-9).all()
    # validation: the proposal and the three feasible baselines at three seeds each
    assert summary["seeds"] == [1234, 1235, 1236]
    assert set(summary["mixtures"]) == {"proposal", "token_proportional", "unimax", "recipe"}
    assert table.height == 7 + 3 + 3 * 2 and table["run_id"].n_unique() == table.height
    for name, stat in summary["mixtures"].items():
        assert stat["n"] == 3 and stat["ci95"] > 0
        measured = table.filter(pl.col("mixture") == name).sort("seed")["target_exit3"].to_list()
        assert stat["values"] == pytest.approx(measured)
    for base, v in summary["versus"].items():
        assert v["verdict"] in ("better", "worse", "no significant difference")
        assert v["mean"] == pytest.approx(summary["mixtures"]["proposal"]["mean"] - summary["mixtures"][base]["mean"])
    # the target is the held-out loss on the sources that have a held-out prefix (only shakespeare here)
    assert summary["target_weights"] == {"book/shakespeare": 1.0}
    assert set(summary["unscored_sources"]) == {"web", "stdlib_docs", "sympy_math", "stdlib_code"}
    fits = json.load(open(os.path.join(root, "fits.json")))
    assert set(fits["exits"]) == {"exit1", "exit2", "exit3"}
    for f in fits["exits"].values():
        assert set(f["joint"]) == {"log_linear", "dml_per_set", "linear", "gp"} and f["chosen"] in f["joint"]
        assert all(len(m["cv"]["predictions"]) == 7 for m in f["joint"].values())
        assert set(f["splines"]) == set(summary["categories"])
    comp = summary["compute"]
    assert comp["proxy_tokens"] == 16 * 4 * 2 * 32 and 0 < comp["fraction_of_target"] < 1


def test_the_proposal_stays_within_the_caps_and_the_patch_plans_it(ablation, demo_run, tmp_path):
    root = ablation["root"]
    summary = json.load(open(os.path.join(root, "summary.json")))
    assert sum(summary["proposal"].values()) == pytest.approx(1)
    assert all(summary["proposal"][c] <= summary["caps"][c] + 1e-6 for c in summary["categories"])
    # the hand-off: `ruyi2 mix RECIPE --patch proposal.patch.yaml` plans exactly the proposed weights
    run = tmp_path / "run"
    claim_run_dir(str(run))  # a run directory assembled by hand: claimed, then the token files linked in
    os.symlink(os.path.join(demo_run["layout"].root, "tokenize"), run / "tokenize")
    patch = os.path.join(root, "proposal.patch.yaml")
    assert main(["mix", ablation["recipe"], "--run-dir", str(run), "--patch", patch]) == 0
    plan = json.load(open(run / "mix" / "plan.json"))
    general = {r["unit"]: r["weight"] for r in plan["stages"][0]["prefixes"]}
    assert general == pytest.approx(yaml.safe_load(open(patch))["mixture"]["stages"][0]["weights"], abs=1e-9)
    by_domain = {}
    for r in plan["stages"][0]["prefixes"]:
        by_domain[r["domain"]] = by_domain.get(r["domain"], 0) + r["weight"]
    assert by_domain == pytest.approx({c: w for c, w in summary["proposal"].items() if w > 0}, abs=1e-6)


def _forget(root: str, run_ids: list[str]) -> None:
    for rid in run_ids:
        os.remove(os.path.join(root, "runs", rid, "result.json"))


def test_an_ablation_killed_mid_way_resumes_with_what_is_missing_and_gives_the_same_bytes(ablation):
    """Four runs lost (two fitting, two validation); `ablate --resume` is killed (SIGKILL to its process
    group, workers included) once it has retrained one of them; the next --resume retrains only what is
    still missing and writes the same bytes as the uninterrupted ablation."""
    root = ablation["root"]
    lost = ["cand-002-s1234", "cand-003-s1234", "proposal-s1235", "recipe-s1236"]
    results = {os.path.basename(os.path.dirname(p)): p for p in glob.glob(os.path.join(root, "runs", "*", "result.json"))}
    kept = {rid: os.stat(p).st_mtime_ns for rid, p in results.items() if rid not in lost}
    _forget(root, lost)
    kill_ablate_once_a_lost_run_is_back(ablation["recipe"], root, lost)
    assert main(["ablate", ablation["recipe"], "--resume"]) == 0
    assert {rid: os.stat(results[rid]).st_mtime_ns for rid in kept} == kept  # finished runs were not retrained
    assert _outputs(root) == ablation["bytes"]


@pytest.fixture
def ray_two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    assert os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0"  # the cluster stays on 127.0.0.1
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                                                            "include_dashboard": False})
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_proxy_runs_on_a_ray_cluster_give_the_local_results(ablation, demo_run, ray_two_nodes):
    import ray

    root = ablation["root"]
    _forget(root, ["cand-000-s1234", "recipe-s1236", "unimax-s1235"])
    executor = {"kind": "ray", "tasks": 2, "workers": 2, "ray": {"address": ray_two_nodes.address}}
    path = _recipe(demo_run, ablation["folder"], executor=executor)
    assert main(["ablate", path, "--resume"]) == 0
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    outputs, expected = _outputs(root), dict(ablation["bytes"])
    # the proposed recipe is this recipe (with its Ray executor) patched: the same but for the executor
    proposed, local = (yaml.safe_load(d.pop("proposal.recipe.yaml")) for d in (outputs, expected))
    assert proposed.pop("executor")["kind"] == "ray"
    local.pop("executor", None)
    assert outputs == expected and proposed == local


def test_the_report_renders_in_headless_chromium(ablation):
    dom = render(os.path.join(ablation["root"], "report.html"), "ablation_report")
    # verdict bars, predicted vs measured, one spline grid per exit, loss curves: all drawn
    assert dom.count("<figure>") == 6 and dom.count("<svg") == 6 and drawn_figures(dom) == 6
    assert "Verdict" in dom and "proposal" in dom and "Fit quality" in dom


def test_a_benchmark_target_scores_each_proxy_as_ruyi2_eval_scores_its_checkpoint(demo_run, tmp_path):
    """ablation.target.benchmark: a proxy scores itself on the benchmark right after training; the score is
    what `ruyi2 eval` gives the checkpoint it leaves, and the ablation's target is that score's error."""
    from mixtures.ablation.ablate import Ablation
    from mixtures.ablation.proxy_runs import run_proxy
    from pipeline.ablate import train_proxy
    from pipeline.core.layout import RunLayout
    from pipeline.recipe import load_recipe, proxy_train

    run = tmp_path / "run"
    run.mkdir()
    os.symlink(os.path.join(demo_run["layout"].root, "tokenize"), run / "tokenize")
    benchmark = {"task": "arc_challenge", "limit": 8}
    path = _recipe(demo_run, str(tmp_path), run_dir=str(run),
                   ablation=ABLATION | {"target": {"benchmark": benchmark}, "keep_checkpoints": True})
    recipe = load_recipe(path)
    ab = Ablation(recipe, RunLayout(str(run)), proxy_train(recipe).model_dump(mode="json"), train_proxy)
    spec = ab.spec(next(m for m in ab.mixtures()[0] if m.name == "recipe"), recipe.train.seed)
    result = run_proxy(spec, train_proxy)
    assert sorted(result["benchmark"]) == ["exit1", "exit2", "exit3"]
    assert ab.outcome(result, "exit2") == 1 - result["benchmark"]["exit2"]
    shutil.copy(path, os.path.join(spec["out_dir"], "recipe.yaml"))  # the run's tokenizer, for the CLI
    out = str(tmp_path / "eval")
    assert main(["eval", spec["out_dir"], "--tasks", "arc_challenge", "--limit", "8", "--out", out]) == 0
    scored = json.load(open(os.path.join(out, "results.json")))["tasks"]["arc_challenge"]["exits"]
    assert result["benchmark"] == {e: m["acc_norm"] for e, m in scored.items()}
