"""Shared fixtures: one small demo run (every stage, real data from installed packages) reused by the
stage tests, so each stage is checked on the output the real flow produced."""

from __future__ import annotations

import os

# Ray turns 127.0.0.1 into the machine's outward address when it connects, unless clusters are marked
# loopback-only; Ray reads this once at import, so it is set before anything imports ray. Test clusters
# must stay on 127.0.0.1.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pytest

from pipeline.core.layout import RunLayout
from pipeline.demo import prepare_demo, run_demo
from pipeline.recipe import load_recipe


@pytest.fixture(scope="session", autouse=True)
def index_cache(tmp_path_factory):
    """One decontamination index cache for the session (decontam/index_cache.py), not the user's: every run of
    the data stages with the same benchmarks builds the index once. Set in the environment, so the CLI
    subprocesses and the Ray clusters the tests start use it too."""
    before = os.environ.get("RUYI2_CACHE")
    os.environ["RUYI2_CACHE"] = str(tmp_path_factory.mktemp("ruyi2_cache"))
    yield os.environ["RUYI2_CACHE"]
    if before is None:
        os.environ.pop("RUYI2_CACHE")
    else:
        os.environ["RUYI2_CACHE"] = before


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The demo as `ruyi2 demo --small` runs it: data stages, the base model, the familial run from it."""
    run_dir = str(tmp_path_factory.mktemp("demo_run"))
    path = prepare_demo(run_dir, small=True)
    results = run_demo(path, quiet=True)
    return {"recipe": load_recipe(path), "layout": RunLayout(run_dir), "results": results}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A real S3-compatible server on 127.0.0.1:8333 for one test module (tests/s3_server.py), with the test
    credentials in the environment, the standard place a user sets them."""
    from tests.s3_server import CREDENTIALS, S3Server

    server = S3Server(str(tmp_path_factory.mktemp("weed")))
    mp = pytest.MonkeyPatch()
    for key, value in CREDENTIALS.items():
        mp.setenv(key, value)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        mp.undo()


@pytest.fixture(scope="module")
def dist():
    """torch.distributed (gloo, world size 1) and megatron-core's parallel state, for one test module.
    Module scope: the data stages fork workers, which must not inherit a live process group."""
    from train_entry.distributed import DistributedContext

    with DistributedContext() as ctx:
        yield ctx


def write_demo_recipe(demo_run, folder: str, name: str = "ablate.yaml", **sections) -> str:
    """The demo's recipe with ``sections`` replaced, written to ``folder/name``; returns its path."""
    import yaml

    data = demo_run["recipe"].model_dump(mode="json") | sections
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    return path


def kill_ablate_once_a_lost_run_is_back(recipe: str, root: str, lost: list[str]) -> None:
    """Runs `ruyi2 ablate RECIPE --resume` in its own process group and SIGKILLs the group (workers included) as
    soon as one of the ``lost`` proxy runs has its result again; asserts that the kill came before all were."""
    import signal
    import subprocess
    import sys
    import time

    def back(rid: str) -> bool:
        return os.path.exists(os.path.join(root, "runs", rid, "result.json"))

    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "ablate", recipe, "--resume"],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not any(back(rid) for rid in lost):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not all(back(rid) for rid in lost)  # killed mid-way


def read_docs(folder: str) -> list[dict]:
    """Every document of a stage folder as {id, text, metadata(dict)}."""
    import glob
    import json

    import pyarrow.parquet as pq

    out = []
    for path in sorted(glob.glob(os.path.join(folder, "*.parquet"))):
        for row in pq.read_table(path).to_pylist():
            row["metadata"] = json.loads(row["metadata"])
            out.append(row)
    return out
