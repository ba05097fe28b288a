"""bench/train_gpu.py: the memory plan that decides whether a GPU run is attempted, and the dry run of the
whole script on a CPU (tiny shape): the three contenders (plain megatron-core GPT, the familial model, the
Hugging Face early-exit loop) train on the same batches and report throughput, FLOPs and the planned memory;
a contender that fails is recorded while the others still run. On a GPU machine the same script, without
--smoke, gives the figures in BENCHMARKS.md."""

import json
import os
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "train_gpu.py")


def _bench(*args, timeout=600):
    return subprocess.run([sys.executable, BENCH, *args], capture_output=True, text=True, timeout=timeout)


def test_the_default_device_run_is_planned_to_fit_an_h100_with_margin():
    proc = _bench("--plan")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert out.splitlines()[0].startswith("python ") and " torch " in out.splitlines()[0]  # the environment first
    assert "against 79.1 GiB with 10% kept free" in out and out.count("-> fits") == 3 and "DOES NOT FIT" not in out
    for part in ("weights", "gradients", "optimizer", "activations", "transient", "context+fragmentation"):
        assert part in out


def test_a_configuration_that_does_not_fit_is_refused_with_the_arithmetic():
    proc = _bench("--plan", "--shape", "qwen3-4b")
    assert proc.returncode == 2
    assert proc.stdout.count("DOES NOT FIT") == 3
    assert "4,411" in proc.stdout or "4.41" in proc.stdout  # Qwen3-4B's parameters, untied
    assert "refused: plain, familial, hf" in proc.stderr
    assert _bench("--plan", "--shape", "qwen3-4b", "--gpu-gib", "200").returncode == 0  # an H200-class budget holds it


@pytest.mark.slow  # three training processes
def test_train_gpu_bench_dry_run_records_a_failed_contender_and_runs_the_others(tmp_path):
    out = tmp_path / "smoke.json"
    proc = _bench("--smoke", "--out", str(out), "--inject-failure", "hf")
    assert proc.returncode == 1, proc.stderr[-3000:]  # a failed contender makes the run fail, after the others ran
    summary = json.loads(out.read_text())
    by_name = {r["contender"]: r for r in summary["results"]}
    assert set(by_name) == {"plain", "familial", "hf"}
    assert "injected failure of contender 'hf'" in by_name["hf"]["log_tail"] and by_name["hf"]["error"] == "exit status 1"
    assert by_name["plain"]["exits"] == [5] and by_name["familial"]["exits"] == [1, 3, 5]
    for r in (by_name["plain"], by_name["familial"]):
        assert r["tokens_per_s"] > 0 and r["wall_s"] > 0 and r["cpu_s"] > 0 and r["predicted_gib"] > 0
    assert by_name["familial"]["flops_per_token"] > by_name["plain"]["flops_per_token"]
    assert summary["plans"]["familial"]["total_gib"] > summary["plans"]["plain"]["total_gib"]
    assert "familial overhead" in proc.stdout and "hf        failed" in proc.stdout

    proc = _bench("--smoke", "--out", str(out), "--contenders", "familial,hf")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    by_name = {r["contender"]: r for r in summary["results"]}
    # the branches are counted: the familial model and the HF loop do the same work and hold the same weights
    assert by_name["familial"]["flops_per_token"] == by_name["hf"]["flops_per_token"]
    assert by_name["familial"]["parameters"] == by_name["hf"]["parameters"] == summary["plans"]["hf"]["parameters"]
