"""`ruyi2 eval` on the demo's trained familial model and on its Hugging Face export: every task, every
exit, deterministic; batching, padding and truncation change no score; the export scores as the run does;
the run report shows the scores."""

import json
import os

import polars as pl
import pytest

from pipeline.cli import main
from train_entry.eval_tasks import load_task

pytestmark = pytest.mark.slow  # needs the trained demo run

TASKS = ("arc_challenge", "hellaswag", "mmlu", "gsm8k")


@pytest.fixture(scope="module")
def run_eval(demo_run):
    root = demo_run["layout"].root
    assert main(["eval", root, "--limit", "6", "--max-new-tokens", "6"]) == 0
    return os.path.join(root, "eval", "train")


@pytest.fixture(scope="module")
def export(demo_run, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("eval_export"))
    assert main(["export", demo_run["layout"].root, "--out", out, "--dtype", "float32"]) == 0
    return out


def _read(folder: str):
    return json.load(open(os.path.join(folder, "results.json"))), pl.read_parquet(os.path.join(folder, "items.parquet"))


def test_every_exit_is_scored_on_every_task_and_a_rerun_gives_the_same_bytes(run_eval, demo_run, tmp_path):
    results, items = _read(run_eval)
    exits = [f"exit{e}" for e in (1, 2, 3)]  # the demo's familial model
    assert sorted(results["tasks"]) == sorted(TASKS)
    for task, t in results["tasks"].items():
        assert t["n"] == 6 and sorted(t["exits"]) == exits
        for m in t["exits"].values():
            assert 0 <= m[t["primary_metric"]] <= 1 and m[t["primary_metric"] + "_stderr"] >= 0
    assert items.height == 4 * 6 * 3
    mc = items.filter(pl.col("task") != "gsm8k")
    assert all(len(lls) >= 4 for lls in mc["loglikelihoods"]) and all(ll < 0 for lls in mc["loglikelihoods"] for ll in lls)
    # the per-exit accuracy is the mean of the items' correctness
    arc = items.filter((pl.col("task") == "arc_challenge") & (pl.col("exit") == "exit2"))
    assert results["tasks"]["arc_challenge"]["exits"]["exit2"]["acc"] == pytest.approx(arc["correct"].mean(), abs=1e-6)
    again = str(tmp_path / "again")
    assert main(["eval", demo_run["layout"].root, "--limit", "6", "--max-new-tokens", "6", "--out", again]) == 0
    for name in ("results.json", "items.parquet"):
        assert open(os.path.join(again, name), "rb").read() == open(os.path.join(run_eval, name), "rb").read()


def test_batching_padding_and_truncation_change_no_score(demo_run, dist):
    """Requests of many lengths scored in big padded batches, one at a time, and with the context cut to 40
    tokens, against a plain forward of each request alone (cut to the model's context, 64 for the demo)."""
    import torch

    from train_entry.eval_scoring import encode_pair, loglikelihoods
    from train_entry.evaluate import _run_scorer

    scorer, tok, eos, _ = _run_scorer(demo_run["layout"].root, compressed=False)
    items = load_task("arc_challenge", limit=4) + load_task("mmlu", limit=3, mmlu_shots=0)
    requests = [encode_pair(tok, it.context[-n:], c) for n, it in zip([40, 120, 400] * 3, items) for c in it.choices]
    assert len({len(c) + len(x) for c, x in requests}) > 5  # lengths differ: padding matters
    big, single = loglikelihoods(scorer, requests, eos, 100_000), loglikelihoods(scorer, requests, eos, 1)
    full = scorer.max_length + 1
    assert min(map(len, (c + x for c, x in requests))) < 40 < full < max(map(len, (c + x for c, x in requests)))
    scorer.max_length = 40
    cut = loglikelihoods(scorer, requests, eos, 4096)
    for e in scorer.exits:
        for k, (ctx, cont) in enumerate(requests):
            for window, got in ((full, big), (full, single), (41, cut)):
                seq = (ctx + cont)[-window:]
                x = torch.tensor([seq[:-1]])
                logits = scorer.model.exit_logits(x, torch.arange(x.shape[1])[None])[e][0, -len(cont):]
                want = float(torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(cont)[:, None]).sum())
                assert got[e][k][0] == pytest.approx(want, abs=2e-4), (e, k, window)
    assert any(abs(cut[3][k][0] - big[3][k][0]) > 1e-3 for k in range(len(requests)))  # the cut mattered


def test_an_exported_checkpoint_scores_as_the_run_does(run_eval, export, tmp_path):
    out = str(tmp_path / "hf")
    assert main(["eval", export, "--out", out, "--limit", "6", "--max-new-tokens", "6"]) == 0
    (run_results, run_items), (hf_results, hf_items) = _read(run_eval), _read(out)
    assert run_items["item_id"].to_list() == hf_items["item_id"].to_list()
    assert run_items["prediction"].to_list() == hf_items["prediction"].to_list()
    assert run_items["generation"].to_list() == hf_items["generation"].to_list()
    for a, b in zip(run_items["loglikelihoods"].to_list(), hf_items["loglikelihoods"].to_list()):
        assert (a is None and b is None) or a == pytest.approx(b, abs=1e-3)
    assert {t: r["exits"] for t, r in run_results["tasks"].items()} == {t: r["exits"] for t, r in hf_results["tasks"].items()}


def test_the_run_report_shows_the_benchmark_scores(run_eval, demo_run):
    recipe = os.path.join(demo_run["layout"].root, "demo_corpus", "recipe.yaml")
    assert main(["report", recipe, "--html"]) == 0
    page = open(os.path.join(demo_run["layout"].root, "report.html")).read()
    results, _ = _read(run_eval)
    arc = results["tasks"]["arc_challenge"]["exits"]["exit3"]
    assert "<h2>Benchmarks</h2>" in page and f"{arc['acc_norm']:.4f} ± {arc['acc_norm_stderr']:.4f}" in page
