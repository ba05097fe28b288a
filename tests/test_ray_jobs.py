"""The data stages as a Ray batch job, the way a cluster user runs them: a head started with `ray start
--head`, token authentication on, and `ray job submit` running `ruyi2 run` with `executor.ray.address:
auto`. Two clusters: one node on 127.0.0.1 (`ray start --address` refuses to join a loopback-only head),
and two nodes, each in a network namespace of its own joined by a veth pair (10.211.0.1 and 10.211.0.2,
addresses that exist only between the two namespaces), the worker joining the head with `ray start
--address` as on a real cluster."""

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
    # the token also in the environment (as RAY_AUTH_TOKEN, which Ray reads first): the jobs' drivers inherit it,
    # and it must reach no file of their run directories
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_AUTH_TOKEN": token.read_text(),
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
        yield {"env": env, "dashboard": f"http://127.0.0.1:{dashboard}", "token": token.read_text()}
    finally:
        _stop(nodes)


def _stop(nodes: list) -> None:
    """Stop `ray start --block` processes by signalling them (not `ray stop`, which stops every Ray here)."""
    for node in reversed(nodes):
        node.terminate()
        try:
            node.wait(timeout=60)
        except subprocess.TimeoutExpired:
            node.kill()


def _wait_for_nodes(env: dict, gcs, count: int, procs: list, timeout: float = 180, prefix: list | None = None) -> None:
    """Until ``count`` nodes are active at ``gcs`` (a port on 127.0.0.1, or HOST:PORT; ``prefix`` runs the
    status command inside a network namespace)."""
    import time

    address = gcs if isinstance(gcs, str) else f"127.0.0.1:{gcs}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), "a `ray start` process exited"
        status = subprocess.run([*(prefix or []), RAY, "status", "--address", address], env=env, capture_output=True, text=True)
        active = status.stdout.split("Active:")[-1].split("Pending:")[0] if "Active:" in status.stdout else ""
        if active.count("node_") >= count:
            return
        time.sleep(2)
    raise TimeoutError(f"{count} Ray node(s) did not come up in {timeout} s")


def _ray(cluster: dict, *args, timeout: float = 600, env: dict | None = None):
    return subprocess.run([RAY, *args], env=env or cluster["env"], capture_output=True, text=True, timeout=timeout)


def _job_recipe(demo_run, run_dir, name: str) -> tuple[str, str]:
    """The demo's recipe on the Ray executor at `address: auto`, written beside the demo's (its relative paths hold)."""
    corpus = os.path.join(demo_run["layout"].root, "demo_corpus")
    with open(os.path.join(corpus, "recipe.yaml")) as f:
        recipe = yaml.safe_load(f)
    recipe["run_dir"] = str(run_dir)
    recipe["executor"] = {**recipe["executor"], "kind": "ray",
                          "ray": {"address": "auto", "mem_per_cpu_gb": 0.5, "task_time_limit_s": 600}}
    path = os.path.join(corpus, name)
    with open(path, "w") as f:
        yaml.safe_dump(recipe, f, sort_keys=False)
    return path, recipe["run_dir"]


def test_ray_job_submit_with_the_token_runs_a_stage_with_outputs_identical_to_the_local_run(demo_run, ray_cli_cluster, tmp_path):
    """A job submitted to a token-auth head started by `ray start`; the filter stage only (every stage as a job,
    on two nodes: the next test)."""
    job_recipe, run_dir = _job_recipe(demo_run, tmp_path / "job_run", "recipe-ray-job.yaml")
    ruyi2 = shutil.which("ruyi2", path=os.path.dirname(sys.executable))
    job = _ray(ray_cli_cluster, "job", "submit", "--address", ray_cli_cluster["dashboard"], "--",
               ruyi2, "run", job_recipe, "--to", "filter")
    assert job.returncode == 0 and "succeeded" in job.stdout, job.stdout[-3000:] + job.stderr[-3000:]

    diff = diff_runs(demo_run["layout"].root, run_dir)  # every document and report file of the filter stage
    assert diff.compared > 0 and not diff.differing and not diff.only_in_second, diff
    assert {path.split("/")[0] for path in diff.only_in_first} == {"dedup", "decontam", "tokenize", "mix"}  # the later stages
    secret = ray_cli_cluster["token"].encode()
    for folder, _, files in os.walk(run_dir):  # logs, manifest, stats, recipe copy: the token is in none
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                assert secret not in f.read(), os.path.join(folder, name)


@pytest.mark.parametrize("mode", ["disabled", "token"])
def test_a_cluster_without_token_authentication_is_warned_about(mode):
    """Connecting to (or starting) a Ray cluster that does not authenticate logs a warning naming the risk; one
    with token authentication does not."""
    env = {**os.environ, "RAY_AUTH_MODE": mode, "RAY_ADDRESS": "", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    code = ("import ray; from pipeline.core.config import RayConfig; from pipeline.core.executors import ensure_ray\n"
            "ensure_ray(RayConfig(num_cpus=1)); ray.shutdown()")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr[-3000:]
    assert ("runs WITHOUT token authentication" in out.stderr) == (mode == "disabled"), out.stderr[-3000:]


@pytest.fixture(scope="module")
def ray_netns_cluster(tmp_path_factory):
    """A head and a worker node, each `ray start --block` inside its own network namespace, the worker
    joining with `ray start --address HEAD:PORT`; needs root (as the storage-error tests do)."""
    folder = tmp_path_factory.mktemp("ray_netns")
    token = folder / "auth_token"
    token.write_text(os.urandom(16).hex())
    token.chmod(0o600)
    tag = f"{os.getpid() % 100000}"
    head_ns, worker_ns, head_if, worker_if = f"r2h{tag}", f"r2w{tag}", f"r2h{tag}v", f"r2w{tag}v"
    head_ip, worker_ip = "10.211.0.1", "10.211.0.2"
    temp_dir = f"/tmp/r2ray{tag}"  # short: Ray's socket paths under it must fit a Unix socket name (107 bytes)

    def ip(*args):
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True)

    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_ADDRESS": "",
           "RAY_DASHBOARD_STARTUP_TIMEOUT_S": "300"}  # the job server lives in the dashboard; a busy machine starts it slowly
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # real node addresses, not loopback
    nodes, made = [], []
    try:
        for ns in (head_ns, worker_ns):
            ip("netns", "add", ns)
            made.append(ns)
        ip("link", "add", head_if, "type", "veth", "peer", "name", worker_if)
        for ns, dev, addr in ((head_ns, head_if, head_ip), (worker_ns, worker_if, worker_ip)):
            ip("link", "set", dev, "netns", ns)
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        common = ["--block", "--num-cpus", "1", "--memory", str(3 * 2**30), "--object-store-memory", str(200 * 2**20),
                  "--disable-usage-stats"]
        nodes.append(subprocess.Popen(
            ["ip", "netns", "exec", head_ns, RAY, "start", "--head", "--port", "6379", "--node-ip-address", head_ip,
             "--dashboard-host", head_ip, "--dashboard-port", "8265", "--temp-dir", temp_dir, *common],
            env=env, stdout=open(folder / "head.log", "w"), stderr=subprocess.STDOUT))
        in_head = ["ip", "netns", "exec", head_ns]
        _wait_for_nodes(env, f"{head_ip}:6379", 1, nodes, prefix=in_head)
        nodes.append(subprocess.Popen(
            ["ip", "netns", "exec", worker_ns, RAY, "start", "--address", f"{head_ip}:6379", "--node-ip-address", worker_ip,
             *common], env=env, stdout=open(folder / "worker.log", "w"), stderr=subprocess.STDOUT))
        _wait_for_nodes(env, f"{head_ip}:6379", 2, nodes, prefix=in_head)
        yield {"env": env, "dashboard": f"http://{head_ip}:8265", "prefix": in_head, "logs": folder}
    finally:
        _stop(nodes)
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_ray_job_submit_on_two_nodes_joined_with_ray_start_writes_what_the_local_run_writes(demo_run, ray_netns_cluster, tmp_path):
    import glob
    import json

    recipe_path, run_dir = _job_recipe(demo_run, tmp_path / "netns_job_run", "recipe-ray-netns-job.yaml")
    ruyi2 = shutil.which("ruyi2", path=os.path.dirname(sys.executable))
    job = subprocess.run([*ray_netns_cluster["prefix"], RAY, "job", "submit", "--address", ray_netns_cluster["dashboard"], "--",
                          ruyi2, "run", recipe_path, "--to", "mix"], env=ray_netns_cluster["env"], capture_output=True, text=True,
                         timeout=1200)
    assert job.returncode == 0 and "succeeded" in job.stdout, job.stdout[-3000:] + job.stderr[-3000:]
    nodes = {node for path in glob.glob(os.path.join(run_dir, "*", "logs", "**", "ray_nodes.json"), recursive=True)
             for node in json.load(open(path)).values()}
    assert len(nodes) == 2  # ranks ran on the head and on the worker that joined it
    diff = diff_runs(demo_run["layout"].root, run_dir)  # every document, token and report file
    assert diff.identical, diff


def test_a_cluster_with_token_auth_refuses_a_job_without_the_token(ray_cli_cluster):
    env = {k: v for k, v in ray_cli_cluster["env"].items() if not k.startswith("RAY_AUTH_TOKEN")}
    env["HOME"] = "/nonexistent"  # nor the default ~/.ray/auth_token
    job = _ray(ray_cli_cluster, "job", "submit", "--address", ray_cli_cluster["dashboard"], "--", "true", env=env, timeout=120)
    assert job.returncode != 0
    assert "token" in (job.stdout + job.stderr).lower()
