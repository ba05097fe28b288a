"""Kill `ruyi2 run` (SIGKILL to its whole process group: driver, workers, a local Ray cluster) at N moments
spread over a run, resume each with `--resume`, and compare every output file with an uninterrupted run.

    .venv/bin/python bench/kill_resume.py --points 20 --executor local --to tokenize
    .venv/bin/python bench/kill_resume.py --points 10 --executor ray --to tokenize

The corpus is the small embedded demo (`ruyi2 demo --small`). Kill moments are evenly spaced over the
reference run's duration with a seeded jitter, so each stage is hit in proportion to its share of the time.
Prints one row per kill point (moment, stage running, resume time, identical or which files differ) and
exits non-zero if any resumed run differs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.run_diff import diff_runs  # noqa: E402

RUYI2 = [sys.executable, "-m", "pipeline.cli"]


def ruyi2(args: list[str], log: str, kill_after: float | None = None) -> tuple[int | None, float]:
    """Run the CLI; with ``kill_after``, SIGKILL its process group then. Returns (exit code or None if
    killed, seconds)."""
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(RUYI2 + args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
    return code, time.perf_counter() - t0


def stage_at_kill(log: str) -> str:
    started = re.findall(r"=== stage (\w+) ===", open(log).read())
    return started[-1] if started else "(start-up)"


def kill_and_resume(recipe: str, run_dir: str, to: str, kill_after: float, logs: str) -> dict:
    """One kill point: the run killed after ``kill_after`` s, then resumed to the end."""
    common = [recipe, "--run-dir", run_dir, "--to", to]
    code, _ = ruyi2(["run", *common], os.path.join(logs, "killed.log"), kill_after)
    stage = stage_at_kill(os.path.join(logs, "killed.log")) if code is None else "(finished first)"
    resumed, seconds = ruyi2(["run", *common, "--resume"], os.path.join(logs, "resumed.log"))
    if resumed != 0:
        raise RuntimeError(f"the resumed run failed (exit {resumed}); see {logs}/resumed.log")
    return {"kill_after_s": round(kill_after, 2), "stage": stage, "resume_s": round(seconds, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=20)
    ap.add_argument("--executor", choices=["local", "ray"], default="local")
    ap.add_argument("--to", default="tokenize", help="last stage of every run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", help="working folder (default: a new temporary one)")
    args = ap.parse_args()

    from pipeline.demo import prepare_demo

    work = args.work or tempfile.mkdtemp(prefix="kill_resume_")
    recipe = prepare_demo(os.path.join(work, "corpus"), executor=args.executor, small=True)
    reference = os.path.join(work, "reference")
    code, duration = ruyi2(["run", recipe, "--run-dir", reference, "--to", args.to], os.path.join(work, "reference.log"))
    if code != 0:
        raise SystemExit(f"the reference run failed; see {work}/reference.log")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; executor {args.executor}; "
          f"reference run (filter..{args.to}) {duration:.1f} s")
    rng = random.Random(args.seed)
    rows, failures = [], 0
    for i in range(args.points):
        moment = duration * (i + rng.random()) / args.points
        point = os.path.join(work, f"point{i:02d}")
        os.makedirs(point)
        row = kill_and_resume(recipe, os.path.join(point, "run"), args.to, moment, point)
        diff = diff_runs(reference, os.path.join(point, "run"))
        row.update(identical=diff.identical, files_compared=diff.compared,
                   differing=diff.differing + diff.only_in_first + diff.only_in_second)
        failures += not diff.identical
        rows.append(row)
        print(json.dumps(row), flush=True)
    by_stage: dict[str, int] = {}
    for row in rows:
        by_stage[row["stage"]] = by_stage.get(row["stage"], 0) + 1
    print(f"{args.points - failures}/{args.points} resumed runs byte-identical to the reference; kills by stage: {by_stage}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
