"""bench/train_gpu.py's smoke mode: the three contenders (plain megatron-core GPT, the familial model, the
Hugging Face early-exit loop) train on the same batches and report throughput and FLOPs. On a GPU machine
the same script, without --smoke, gives the figures in BENCHMARKS.md."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # three training processes

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "train_gpu.py")


def test_train_gpu_bench_smoke(tmp_path):
    out = tmp_path / "smoke.json"
    proc = subprocess.run([sys.executable, BENCH, "--smoke", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    by_name = {r["contender"]: r for r in summary["results"]}
    assert set(by_name) == {"plain", "familial", "hf"}
    assert by_name["plain"]["exits"] == [5] and by_name["familial"]["exits"] == by_name["hf"]["exits"] == [1, 3, 5]
    for r in by_name.values():
        assert r["tokens_per_s"] > 0 and r["wall_s"] > 0 and r["cpu_s"] > 0
    # the branches are counted: the familial model and the HF loop do the same work, more than the plain model
    assert by_name["familial"]["flops_per_token"] == by_name["hf"]["flops_per_token"] > by_name["plain"]["flops_per_token"]
    assert by_name["familial"]["parameters"] == by_name["hf"]["parameters"]
    assert "familial overhead" in proc.stdout
