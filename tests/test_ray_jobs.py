"""The data stages as a Ray batch job, the way a cluster user runs them: a head started with `ray start
--head`, token authentication on, and `ray job submit` running `ruyi2 run` with `executor.ray.address:
auto`. Everything stays on 127.0.0.1. One node only: `ray start --address` refuses to join a loopback-only
cluster (Ray allows multi-node loopback only through ray.cluster_utils, which tests/test_ray_executor.py
uses for the two-node runs and the fault tests)."""

import os
import shutil
import socket
import subprocess
import sys

import pytest
import yaml

from pipeline.run_diff import diff_runs

pytestmark = pytest.mark.slow  # starts a Ray cluster from the command line

RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def ray_cli_cluster(tmp_path_factory):
    """A head node from `ray start --block` with a token file; stopped by signalling that process (not `ray
    stop`, which would stop every Ray on the machine)."""
    folder = tmp_path_factory.mktemp("ray_cli")
    token = folder / "auth_token"
    token.write_text(os.urandom(16).hex())
    token.chmod(0o600)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_ADDRESS": ""}
    gcs, dashboard = _free_ports(2)
    nodes = []
    try:
        nodes.append(subprocess.Popen(
            [RAY, "start", "--head", "--block", "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port",
             str(dashboard), "--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--memory", str(4 * 2**30),
             "--object-store-memory", str(300 * 2**20), "--disable-usage-stats"],
            env=env, stdout=open(folder / "head.log", "w"), stderr=subprocess.STDOUT))
        _wait_for_nodes(env, gcs, 1, nodes)
        yield {"env": env, "dashboard": f"http://127.0.0.1:{dashboard}"}
    finally:
        for node in reversed(nodes):
            node.terminate()
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                node.kill()


def _wait_for_nodes(env: dict, gcs: int, count: int, procs: list, timeout: float = 180) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), "a `ray start` process exited"
        status = subprocess.run([RAY, "status", "--address", f"127.0.0.1:{gcs}"], env=env, capture_output=True, text=True)
        active = status.stdout.split("Active:")[-1].split("Pending:")[0] if "Active:" in status.stdout else ""
        if active.count("node_") >= count:
            return
        time.sleep(2)
    raise TimeoutError(f"{count} Ray node(s) did not come up in {timeout} s")


def _ray(cluster: dict, *args, timeout: float = 600, env: dict | None = None):
    return subprocess.run([RAY, *args], env=env or cluster["env"], capture_output=True, text=True, timeout=timeout)


def test_ray_job_submit_runs_the_data_stages_with_outputs_identical_to_the_local_run(demo_run, ray_cli_cluster, tmp_path):
    local = demo_run["layout"]
    corpus = os.path.join(local.root, "demo_corpus")
    with open(os.path.join(corpus, "recipe.yaml")) as f:
        recipe = yaml.safe_load(f)
    recipe["run_dir"] = str(tmp_path / "job_run")
    recipe["executor"] = {**recipe["executor"], "kind": "ray",
                          "ray": {"address": "auto", "mem_per_cpu_gb": 0.5, "task_time_limit_s": 600}}
    job_recipe = os.path.join(corpus, "recipe-ray-job.yaml")  # beside the demo's: its relative paths hold
    with open(job_recipe, "w") as f:
        yaml.safe_dump(recipe, f, sort_keys=False)

    ruyi2 = shutil.which("ruyi2", path=os.path.dirname(sys.executable))
    job = _ray(ray_cli_cluster, "job", "submit", "--address", ray_cli_cluster["dashboard"], "--",
               ruyi2, "run", job_recipe, "--to", "mix")
    assert job.returncode == 0 and "succeeded" in job.stdout, job.stdout[-3000:] + job.stderr[-3000:]

    diff = diff_runs(demo_run["layout"].root, recipe["run_dir"])  # every document, token and report file
    assert diff.identical, diff


def test_a_cluster_with_token_auth_refuses_a_job_without_the_token(ray_cli_cluster):
    env = {k: v for k, v in ray_cli_cluster["env"].items() if not k.startswith("RAY_AUTH_TOKEN")}
    env["HOME"] = "/nonexistent"  # nor the default ~/.ray/auth_token
    job = _ray(ray_cli_cluster, "job", "submit", "--address", ray_cli_cluster["dashboard"], "--", "true", env=env, timeout=120)
    assert job.returncode != 0
    assert "token" in (job.stdout + job.stderr).lower()
