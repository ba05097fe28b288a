"""Determinism and resume: a second run of the demo recipe, killed with SIGKILL (driver and workers) in the
middle of the dedup stage and resumed with `--resume`, writes the same bytes as the first, uninterrupted run
(the stages after the kill run afresh, so this also checks that a rerun is byte-identical); resumed once more when
finished, it rewrites nothing.
bench/kill_resume.py does the same at many moments (BENCHMARKS.md)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline.run_diff import diff_runs

pytestmark = pytest.mark.slow  # a data run, killed, then resumed


def test_a_run_killed_mid_stage_and_resumed_equals_the_uninterrupted_run(demo_run, tmp_path):
    recipe = os.path.join(demo_run["layout"].root, "demo_corpus", "recipe.yaml")
    run_dir, log = str(tmp_path / "run"), tmp_path / "killed.log"
    cli = [sys.executable, "-m", "pipeline.cli", "run", recipe, "--run-dir", run_dir, "--to", "mix"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cli, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        while "=== stage dedup ===" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        time.sleep(3)  # inside the dedup stage: signatures being written by its workers
        assert proc.poll() is None, "the run finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not os.path.exists(os.path.join(run_dir, "tokenize"))
    resumed = subprocess.run(cli + ["--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    diff = diff_runs(demo_run["layout"].root, run_dir)
    assert diff.identical, diff
    # the finished run resumed once more: every stage is complete and nothing is rewritten (tokenize once merged
    # its parts again after removing them, writing every token file empty)
    again = subprocess.run(cli + ["--resume"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    diff = diff_runs(demo_run["layout"].root, run_dir)
    assert diff.identical, diff
