"""On a real two-node Ray cluster (127.0.0.1): the data stages write exactly what the local executor writes,
and ranks survive a dead worker process and a stuck task, while an error in the pipeline fails the stage.
(The later stages on Ray, submitted as a job: tests/test_ray_jobs.py.)"""

import pytest

from pipeline.runner import run_stages

pytestmark = pytest.mark.slow  # starts Ray clusters


@pytest.fixture(scope="module")
def ray_cluster():
    from tests.ray_cluster import two_node_cluster

    with two_node_cluster() as cluster:
        yield cluster


def test_the_data_stages_on_two_nodes_write_what_the_local_run_writes(demo_run, ray_cluster, tmp_path):
    """filter, dedup (exact, MinHash signatures, band and cluster tasks, substring), decontam (index, counting
    pass, tagging) and tokenize (parts and merge) as Ray tasks spread over two nodes: every document, token and
    report file equals the local run's, byte for byte."""
    import glob
    import json
    import os

    import ray

    from pipeline.run_diff import diff_runs

    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    recipe = demo_run["recipe"].model_copy(deep=True)
    recipe.run_dir = str(tmp_path / "ray_run")
    recipe.executor.kind = "ray"
    recipe.executor.ray.address = ray_cluster.address
    recipe.executor.ray.mem_per_cpu_gb = 0.5
    stages = ["filter", "dedup", "decontam", "tokenize"]
    results = run_stages(recipe, stages, quiet=True)
    assert results["filter"]["sources"] == demo_run["results"]["filter"]["sources"]
    nodes = {node for path in glob.glob(os.path.join(recipe.run_dir, "*", "logs", "**", "ray_nodes.json"), recursive=True)
             for node in json.load(open(path)).values()}
    assert nodes == {n["NodeID"] for n in ray.nodes()}  # the ranks really ran on both nodes
    diff = diff_runs(demo_run["layout"].root, recipe.run_dir)
    assert diff.compared > 20 and not diff.differing and not diff.only_in_second, diff
    assert all(f.split("/")[0] not in stages for f in diff.only_in_first), diff  # only the later stages' files


def _flaky_pipeline(root: str, fault: str):
    """A two-rank pipeline whose rank 1 meets ``fault`` on its first attempt only; every attempt is recorded."""

    def step(data, rank, world_size):
        import os
        import time

        attempts = os.path.join(root, f"attempts-{rank}")
        with open(attempts, "a") as f:
            f.write("x")
        first = os.path.getsize(attempts) == 1
        if rank == 1 and (first or fault == "raise"):
            if fault == "crash":
                os._exit(1)  # the worker process dies, as under the OOM killer
            if fault == "hang":
                time.sleep(3600)
            if fault == "raise":
                raise ValueError("bad shard")
        with open(os.path.join(root, f"done-{rank}"), "w") as f:
            f.write(str(rank))
        return iter(())

    return [step]


def _run_flaky(ray_cluster, tmp_path, fault, **ray_keys):
    import os

    from pipeline.core.config import ExecutorConfig
    from pipeline.core.executors import run_steps

    cfg = ExecutorConfig.model_validate({"kind": "ray", "tasks": 2, "workers": 2,
                                         "ray": {"address": ray_cluster.address, "mem_per_cpu_gb": 0.5, **ray_keys}})
    root = str(tmp_path)
    stats = run_steps(cfg, _flaky_pipeline(root, fault), os.path.join(root, "logs"), 2, "flaky")
    attempts = [os.path.getsize(os.path.join(root, f"attempts-{r}")) for r in range(2)]
    return stats, attempts, sorted(f for f in os.listdir(root) if f.startswith("done-"))


def test_a_rank_whose_worker_dies_is_rerun_by_ray(ray_cluster, tmp_path):
    _, attempts, done = _run_flaky(ray_cluster, tmp_path, "crash")
    assert attempts == [1, 2] and done == ["done-0", "done-1"]


def test_a_rank_past_its_time_limit_is_cancelled_and_resubmitted(ray_cluster, tmp_path):
    _, attempts, done = _run_flaky(ray_cluster, tmp_path, "hang", task_time_limit_s=10)
    assert attempts == [1, 2] and done == ["done-0", "done-1"]


def test_an_error_in_the_pipeline_fails_the_stage_naming_the_rank_without_retrying(ray_cluster, tmp_path):
    from pipeline.core.errors import StageError

    with pytest.raises(StageError, match=r"flaky.*rank 1: ValueError\('bad shard'\).*logs"):
        _run_flaky(ray_cluster, tmp_path, "raise")
    assert (tmp_path / "attempts-1").read_text() == "x"


def test_a_rank_on_a_lost_node_finishes_on_the_remaining_one(ray_cluster, tmp_path):
    """A node is removed (its raylet and workers killed) while a rank runs on it: Ray reruns that rank on
    the node that is left, and the stage completes."""
    import os
    import threading
    import time

    from pipeline.core.config import ExecutorConfig
    from pipeline.core.executors import run_steps

    head = ray_cluster.head_node.node_id
    victim = next(iter(ray_cluster.worker_nodes))
    root = str(tmp_path)

    def step(data, rank, world_size):
        import ray

        node = ray.get_runtime_context().get_node_id()
        with open(os.path.join(root, f"attempts-{rank}"), "a") as f:
            f.write(node + "\n")
        # the head's rank holds its only CPU a while, so the other rank must start on the second node, where
        # it is still working when that node goes
        time.sleep(5 if node == head else 3600)
        with open(os.path.join(root, f"done-{rank}"), "w") as f:
            f.write(node)
        return iter(())

    cfg = ExecutorConfig.model_validate({"kind": "ray", "tasks": 2, "workers": 2,
                                         "ray": {"address": ray_cluster.address, "mem_per_cpu_gb": 0.5}})
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(
        stats=run_steps(cfg, [step], os.path.join(root, "logs"), 2, "node_loss")), daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 120
        while not any(victim.node_id in open(os.path.join(root, f)).read() for f in os.listdir(root) if f.startswith("attempts-")):
            assert time.monotonic() < deadline and runner.is_alive(), "no rank started on the second node"
            time.sleep(0.5)
        ray_cluster.remove_node(victim)
        runner.join(timeout=300)
        assert not runner.is_alive() and "stats" in result, "the stage did not finish after the node was lost"
        done = {f: open(os.path.join(root, f)).read() for f in os.listdir(root) if f.startswith("done-")}
        assert sorted(done) == ["done-0", "done-1"] and set(done.values()) == {head}
        attempts = [open(os.path.join(root, f"attempts-{r}")).read().split() for r in range(2)]
        assert sorted(len(a) for a in attempts) == [1, 2]  # only the rank on the lost node ran again
    finally:
        ray_cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", memory=3 * 2**30)  # back to two nodes
        ray_cluster.wait_for_nodes()


def test_each_pool_asks_ray_for_its_measured_memory_and_an_oversized_request_fails_fast(ray_cluster, tmp_path):
    """A stage's Ray tasks carry the memory request of their pool (the measured table, no recipe figure): the
    running task sees it among its assigned resources. A request larger than every node (3 GiB here) fails
    the stage at once, naming the setting, instead of waiting for ever as Ray would."""
    import json
    import os

    from pipeline.core.config import ExecutorConfig
    from pipeline.core.errors import StageError
    from pipeline.core.executors import run_steps
    from pipeline.core.task_memory_requests import task_memory_mib

    def step(data, rank, world_size):
        import ray

        with open(os.path.join(str(tmp_path), f"resources-{rank}.json"), "w") as f:
            json.dump(ray.get_runtime_context().get_assigned_resources(), f)
        return iter(())

    cfg = ExecutorConfig.model_validate({"kind": "ray", "tasks": 2, "workers": 2, "ray": {"address": ray_cluster.address}})
    run_steps(cfg, [step], str(tmp_path / "logs"), 2, "decontam")
    expected = task_memory_mib("decontam", {}, None, 1)
    for rank in range(2):
        assigned = json.load(open(tmp_path / f"resources-{rank}.json"))
        assert assigned["memory"] == expected * 2**20 and assigned["CPU"] == 1
    cfg.ray.task_memory_gb = {"filter": 4.0}
    with pytest.raises(StageError, match="filter: each task asks Ray for 4,096 MiB"):
        run_steps(cfg, [step], str(tmp_path / "logs_filter"), 2, "filter")
