"""`ruyi2 ablate` with `ablation.kind: pipeline` on a copy of the small demo run: the raw, recipe, leave-one-out
and variant arms each run their own data stages, train the same proxy on the same number of tokens, are scored on
the recipe's held-out text, and get verdicts against recipe and raw; resumed without training or filtering again,
resumed after a kill, and run again on a two-node Ray cluster with the same bytes."""

import json
import os
import shutil

import polars as pl
import pytest
import yaml

from pipeline.cli import main
from pipeline.recipe import load_recipe
from tests.conftest import kill_ablate_once_a_lost_run_is_back, write_demo_recipe

pytestmark = pytest.mark.slow  # four arms' data stages and eight proxies

ABLATION = {
    "kind": "pipeline", "stage": "general", "leave_one_out": ["c4"],
    "variants": [{"name": "dedup-off", "patch": {"dedup": {"enabled": False}}}],
    "proxy": {"steps": 4, "micro_batch_size": 1, "global_batch_size": 2, "seq_length": 32, "eval_samples": 4,
              "lr_schedule": "cosine", "threads": 1},
    "workers": 2, "validation": {"seeds": 2},
}
ARMS = ["raw", "recipe", "no-c4", "dedup-off"]


@pytest.fixture(scope="module")
def ablation(demo_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline_ablation")
    run_dir = str(folder / "run")
    # the demo run's data stages are the recipe arm; a copy, so the mixture ablation's tests keep theirs
    shutil.copytree(demo_run["layout"].root, run_dir, ignore=shutil.ignore_patterns("ablate", "train", "base_qwen3"))
    os.symlink(os.path.join(demo_run["layout"].root, "base_qwen3"), os.path.join(run_dir, "base_qwen3"))
    path = write_demo_recipe(demo_run, str(folder), run_dir=run_dir, ablation=ABLATION)
    assert main(["ablate", path]) == 0
    root = os.path.join(run_dir, "ablate")
    with open(os.path.join(root, "summary.json")) as f:
        summary = json.load(f)
    return {"path": path, "root": root, "run_dir": run_dir, "summary": summary}


OUTPUTS = ("summary.json", "results.csv", "best.patch.yaml", "report.html")


def _outputs(root: str) -> dict[str, bytes]:
    return {n: open(os.path.join(root, n), "rb").read() for n in OUTPUTS}


def _lose(root: str, arm: str, runs: list[str]) -> tuple[dict[str, bytes], dict[str, int]]:
    """Delete one arm's data stages and some proxy results; returns the outputs before, and the modification
    times of the results that stay."""
    outputs = _outputs(root)
    kept = {p: os.stat(p).st_mtime_ns for a in ARMS for s in (1234, 1235)
            if f"{a}-s{s}" not in runs for p in [os.path.join(root, "runs", f"{a}-s{s}", "result.json")]}
    shutil.rmtree(os.path.join(root, "arms", arm))
    for rid in runs:
        os.remove(os.path.join(root, "runs", rid, "result.json"))
    return outputs, kept


def _stats(run_dir: str, stage: str) -> dict:
    with open(os.path.join(run_dir, stage, "stats.json")) as f:
        return json.load(f)


def _reasons(run_dir: str) -> set[str]:
    return {r.split(":")[0] for c in _stats(run_dir, "filter")["sources"].values() for r in c["removed"]["reasons"]}


def test_each_arm_runs_its_own_data_stages_with_its_patch(ablation):
    s, root = ablation["summary"], ablation["root"]
    assert s["arm_order"] == ARMS and all(a["feasible"] for a in s["arms"].values())
    assert s["arms"]["recipe"]["run_dir"] == ablation["run_dir"]  # the run's own stages, not run again
    raw, no_c4 = os.path.join(root, "arms", "raw"), os.path.join(root, "arms", "no-c4")
    # raw: the sanity rule alone removes nothing from the demo corpus, dedup and decontam are off
    assert _reasons(raw) == set() and _stats(raw, "dedup")["totals"]["removed"]["docs"] == 0
    assert _stats(raw, "filter")["totals"]["kept"]["docs"] > _stats(ablation["run_dir"], "filter")["totals"]["kept"]["docs"]
    # leave one out: the recipe's C4 removals are gone and only they
    assert "c4" in _reasons(ablation["run_dir"]) and "c4" not in _reasons(no_c4)
    arm = load_recipe(os.path.join(no_c4, "recipe.yaml"), check_inputs=False)
    assert not any(arm.filter.rules_for(src).c4.enabled for src in arm.sources)
    assert all(arm.filter.rules_for(src).gopher_quality.enabled == r.gopher_quality.enabled
               for src in arm.sources for r in [load_recipe(ablation["path"], check_inputs=False).filter.rules_for(src)])
    dedup_off = os.path.join(root, "arms", "dedup-off")
    assert _stats(dedup_off, "dedup")["totals"]["removed"]["docs"] == 0 < _stats(ablation["run_dir"], "dedup")["totals"]["removed"]["docs"]
    # dedup-off filters as the recipe does: the recipe's stored signals are read, nothing is tagged again, and the
    # filter writes what the recipe's tagging run wrote; no-c4 switches off a family whose edit changes the text
    # the others read, so it tags its corpus itself
    assert {a: i["signals"] for a, i in s["arms"].items()} == {
        "raw": "tagged", "recipe": "tagged", "no-c4": "tagged", "dedup-off": "the recipe's, thresholds re-applied"}
    assert _stats(dedup_off, "filter")["retune"] and os.path.islink(os.path.join(dedup_off, "filter", "attributes"))
    for part in ("output", "removed"):
        files = sorted(os.listdir(os.path.join(ablation["run_dir"], "filter", part)))
        assert files and files == sorted(os.listdir(os.path.join(dedup_off, "filter", part)))
        assert all(open(os.path.join(ablation["run_dir"], "filter", part, f), "rb").read()
                   == open(os.path.join(dedup_off, "filter", part, f), "rb").read() for f in files)
    assert s["arms"]["raw"]["funnel"]["tokenize"]["tokens"] > s["arms"]["recipe"]["funnel"]["tokenize"]["tokens"]


def test_every_arm_trains_the_same_tokens_and_is_scored_on_the_recipes_held_out_text(ablation):
    root, seeds = ablation["root"], ablation["summary"]["seeds"]
    specs, results = [], []
    for arm in ARMS:
        for seed in seeds:
            with open(os.path.join(root, "runs", f"{arm}-s{seed}", "result.json")) as f:
                results.append(json.load(f))
            with open(os.path.join(root, "runs", f"{arm}-s{seed}", "valid_data_args.txt")) as f:
                specs.append(f.read())
    assert len({r["tokens"] for r in results}) == 1 and results[0]["tokens"] == ablation["summary"]["proxy_tokens"]
    heldout = [c["heldout_prefix"] for c in _stats(ablation["run_dir"], "tokenize")["sources"].values() if c["heldout_prefix"]]
    assert len(set(specs)) == 1 and heldout and all(p in specs[0] for p in heldout)
    assert len({tuple(sorted(r["eval"])) for r in results}) == 1


def test_outcomes_verdicts_results_and_the_best_patch(ablation):
    s, root = ablation["summary"], ablation["root"]
    e = s["target_exit"]
    assert e == s["exits"][-1] and set(s["outcomes"][e]) == set(ARMS)
    for arm in ARMS:
        o = s["outcomes"][e][arm]
        assert o["n"] == 2 and o["mean"] == pytest.approx(sum(o["values"]) / 2)
        refs = s["versus"][e][arm]
        assert set(refs) == {"recipe", "raw"} - {arm}
        for ref, d in refs.items():
            mine, theirs = s["outcomes"][e][arm]["values"], s["outcomes"][e][ref]["values"]
            assert d["mean"] == pytest.approx(sum(a - b for a, b in zip(mine, theirs)) / 2)
            assert d["verdict"] in ("better", "worse", "no significant difference")
    rows = pl.read_csv(os.path.join(root, "results.csv"))
    assert rows.height == len(ARMS) * 2 * len(s["exits"]) and set(rows["arm"]) == set(ARMS)
    assert s["best"] == min(ARMS, key=lambda a: s["outcomes"][e][a]["mean"])
    with open(os.path.join(root, "best.patch.yaml")) as f:
        assert (yaml.safe_load(f) or {}) == s["arms"][s["best"]]["patch"]
    assert main(["validate", ablation["path"], "--patch", os.path.join(root, "best.patch.yaml")]) == 0


def test_the_report_renders_in_headless_chromium_with_the_documents_the_arms_disagree_on(ablation):
    from tests.browser import drawn_figures, render

    dom = render(os.path.join(ablation["root"], "report.html"), "pipeline_ablation_report")
    # loss bars per exit, the trade-off scatter, loss bars per evaluation set
    assert dom.count("<figure>") == 3 and drawn_figures(dom) == 3
    assert "Verdicts" in dom and all(f"<td class=\"l\">{a}</td>" in dom for a in ARMS)
    # the first document (by source and id) that raw keeps and the recipe removed is shown, with the recipe's reason
    final = pl.scan_parquet(os.path.join(ablation["root"], "arms", "raw", "decontam", "output", "*.parquet"))
    removed = pl.scan_parquet(os.path.join(ablation["run_dir"], "filter", "removed", "*.parquet"))
    src = pl.col("metadata").str.json_path_match("$.source")
    first = (final.select("id", source=src).join(removed.select("id", source=src, reason=pl.col("metadata").str.json_path_match(
        "$.removed_reason")), on=["source", "id"]).sort("source", "id").head(1).collect().row(0, named=True))
    assert f">{first['id']}<" in dom and f"filter: {first['reason']}" in dom


def test_a_resumed_ablation_trains_and_filters_nothing_again_and_a_fresh_one_refuses_to_delete(ablation, capsys):
    root = ablation["root"]
    marks = {p: os.stat(p).st_mtime_ns for p in
             [os.path.join(root, "runs", f"{a}-s1234", "result.json") for a in ARMS]
             + [os.path.join(root, "arms", a, "tokenize", "stats.json") for a in ("raw", "no-c4", "dedup-off")]}
    with open(os.path.join(root, "summary.json"), "rb") as f:
        before = f.read()
    assert main(["ablate", ablation["path"], "--resume"]) == 0
    assert {p: os.stat(p).st_mtime_ns for p in marks} == marks
    with open(os.path.join(root, "summary.json"), "rb") as f:
        assert f.read() == before
    capsys.readouterr()
    assert main(["ablate", ablation["path"]]) != 0
    assert "--resume" in capsys.readouterr().err


def test_an_ablation_killed_mid_way_resumes_with_what_is_missing_and_gives_the_same_bytes(ablation):
    """An arm's data stages and three proxy runs lost; `ablate --resume` is killed (SIGKILL to its process group,
    workers included) once the arm is rebuilt and one lost run is retrained; the next --resume trains only what is
    still missing and writes what the uninterrupted ablation wrote."""
    root = ablation["root"]
    lost = ["no-c4-s1234", "no-c4-s1235", "recipe-s1235"]
    outputs, kept = _lose(root, "no-c4", lost)
    kill_ablate_once_a_lost_run_is_back(ablation["path"], root, lost)
    assert os.path.exists(os.path.join(root, "arms", "no-c4", "cost.json"))  # the arm was rebuilt before the kill
    assert main(["ablate", ablation["path"], "--resume"]) == 0
    assert {p: os.stat(p).st_mtime_ns for p in kept} == kept
    assert _outputs(root) == outputs


def test_the_whole_ablation_on_a_two_node_ray_cluster_writes_what_the_local_one_wrote(ablation, demo_run):
    """Every arm's data stages and every proxy run deleted (the recipe arm is the run's own), then `ablate` on a
    two-node Ray cluster: the arms' stages run as Ray tasks, the proxies too, and every output is the local
    ablation's, byte for byte."""
    import ray

    from tests.ray_cluster import two_node_cluster

    root = ablation["root"]
    made = [a for a in ARMS if a != "recipe"]
    arm_stats = {a: open(os.path.join(root, "arms", a, "tokenize", "stats.json"), "rb").read() for a in made}
    outputs = _outputs(root)
    for a in made:
        shutil.rmtree(os.path.join(root, "arms", a))
    shutil.rmtree(os.path.join(root, "runs"))
    with two_node_cluster() as cluster:
        executor = {"kind": "ray", "tasks": 2, "workers": 2, "ray": {"address": cluster.address}}
        path = write_demo_recipe(demo_run, os.path.dirname(ablation["path"]), run_dir=ablation["run_dir"], ablation=ABLATION,
                                 executor=executor)
        assert main(["ablate", path, "--resume"]) == 0
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    for a in made:
        with open(os.path.join(root, "arms", a, "recipe.yaml")) as f:
            assert yaml.safe_load(f)["executor"]["kind"] == "ray"  # the arm's stages ran on the cluster
        assert open(os.path.join(root, "arms", a, "tokenize", "stats.json"), "rb").read() == arm_stats[a]
    assert _outputs(root) == outputs


def test_an_arm_whose_patch_changed_runs_its_data_stages_again_and_retrains_only_if_its_data_changed(ablation, demo_run):
    """--resume after editing a variant: the arm's stale stages are run again (its new patch in its recipe); its
    proxies are kept when the data comes out the same, as here (dedup is off either way)."""
    root = ablation["root"]
    arm = os.path.join(root, "arms", "dedup-off")
    cost = os.stat(os.path.join(arm, "cost.json")).st_mtime_ns
    results = {p: os.stat(p).st_mtime_ns for p in [os.path.join(root, "runs", f"dedup-off-s{s}", "result.json") for s in (1234, 1235)]}
    changed = dict(ABLATION, variants=[{"name": "dedup-off", "patch": {"dedup": {"enabled": False, "exact": {"enabled": False}}}}])
    path = write_demo_recipe(demo_run, os.path.dirname(ablation["path"]), run_dir=ablation["run_dir"], ablation=changed)
    assert main(["ablate", path, "--resume"]) == 0
    assert os.stat(os.path.join(arm, "cost.json")).st_mtime_ns != cost
    assert not load_recipe(os.path.join(arm, "recipe.yaml"), check_inputs=False).dedup.exact.enabled
    assert {p: os.stat(p).st_mtime_ns for p in results} == results
