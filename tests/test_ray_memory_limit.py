"""The filter of the shipped 800B recipe on a Ray node whose memory the kernel limits (a cgroup, as a pod or a VM
of that size): with the requests the stage was measured to need (pipeline/core/task_peaks.json) Ray runs no more
tasks at once than the node holds and no worker is killed; with a flat request below what a filter task uses (0.5 GB
per CPU here, as the 800B recipe's flat 2 GB was below its workers' 2.5-2.9 GB before issue 34) Ray packs four
tasks onto the node and the kernel kills a worker. Needs root (the tests' machines and CI run as root)."""

from __future__ import annotations

import os

import pytest
import yaml

from pipeline.core.errors import StageError
from pipeline.core.task_memory import largest_task_rss
from pipeline.core.task_memory_requests import task_memory_mib
from pipeline.recipe import parse_recipe
from pipeline.runner import run_stages
from tests.memory_cgroup import MemoryCgroup, process_tree
from tests.realdata import need
from tests.recipe_corpus import build_corpus, train_classifiers

pytestmark = pytest.mark.slow  # a Ray cluster and the 800B recipe's filter, twice

RECIPE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pipeline", "recipes", "ruyi2-800b.yaml")
# the node's memory: Ray's `memory` resource, and the cgroup's limit over what the group held when the node's
# processes moved in (their earlier memory stays charged where it was)
NODE_MIB = 2048
TASKS = 4


@pytest.fixture(scope="module")
def limited_node(tmp_path_factory):
    """A head that runs no task (0 CPUs) and a worker node of 4 CPUs whose raylet, and every worker it starts,
    lives in a cgroup of NODE_MIB (plus what the node's own processes held when moved in)."""
    import ray
    from ray.cluster_utils import Cluster

    assert os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0"  # conftest.py: the cluster stays on 127.0.0.1
    group, cluster = MemoryCgroup(f"ruyi2-test-{os.getpid()}"), None
    try:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1",
                                                                "include_dashboard": False})
        node = cluster.add_node(num_cpus=TASKS, node_ip_address="127.0.0.1", memory=NODE_MIB * 2**20)
        # every worker the raylet starts is born inside; the kernel kills workers first (Ray gives them
        # oom_score_adj 1000)
        for pid in process_tree(node.all_processes["raylet"][0].process.pid):
            group.add(pid)
        group.limit(group.usage() + NODE_MIB * 2**20)
        ray.init(address=cluster.address)
        cluster.wait_for_nodes()
        root = tmp_path_factory.mktemp("memory_limit")
        paths, train_zh = need(build_corpus, str(root / "corpora"))
        models = train_classifiers(str(root / "models"), train_zh)
        yield cluster, group, paths, models, root
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        group.remove()


def _recipe(cluster, paths, models, run_dir, ray_settings):
    with open(RECIPE) as f:
        data = yaml.safe_load(f)
    data["run_dir"] = str(run_dir)
    for s in data["sources"]:
        s["paths"] = [paths[s["name"]]]
    for language, model in models.items():
        data["filter"]["per_language"][language]["classifier"]["model"] = model
    data["executor"] = {"kind": "ray", "tasks": TASKS, "workers": TASKS,
                        "ray": {"address": cluster.address, **ray_settings}}
    return parse_recipe(data, RECIPE)


def test_the_measured_requests_fit_the_node_and_no_worker_is_killed(limited_node):
    cluster, group, paths, models, root = limited_node
    request = task_memory_mib("filter", {}, None, 1)
    assert 2 * request > NODE_MIB >= request  # Ray may place one filter task at a time on this node
    kills = group.oom_kills()
    recipe = _recipe(cluster, paths, models, root / "measured", {"max_retries": 0})
    run_stages(recipe, ["filter"], quiet=True)
    assert group.oom_kills() == kills
    largest = largest_task_rss(os.path.join(recipe.run_dir, "filter", "logs"))
    # each task needed less than it asked for, and all four at once would not have fitted: what the flat
    # request below lets Ray do
    assert largest <= request and TASKS * largest > NODE_MIB


def test_a_flat_request_below_the_filters_use_overruns_the_node_and_the_kernel_kills_a_worker(limited_node):
    cluster, group, paths, models, root = limited_node
    kills = group.oom_kills()
    recipe = _recipe(cluster, paths, models, root / "flat", {"mem_per_cpu_gb": 0.5, "max_retries": 0})
    with pytest.raises(StageError, match="filter"):
        run_stages(recipe, ["filter"], quiet=True)
    assert group.oom_kills() > kills
