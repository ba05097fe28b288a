"""The filter stage on a real two-node Ray cluster (127.0.0.1) keeps exactly what the local executor keeps."""

import pytest

from pipeline.core.layout import RunLayout
from pipeline.runner import run_stages
from tests.conftest import read_docs

pytestmark = pytest.mark.slow  # starts Ray clusters


@pytest.fixture(scope="module")
def ray_cluster():
    import os

    import ray
    from ray.cluster_utils import Cluster

    # conftest.py sets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before ray is imported: the cluster stays on 127.0.0.1
    assert os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0"
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1", "memory": 3 * 2**30, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", memory=3 * 2**30)
    ray.init(address=cluster.address)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _by_id(folder):
    return {d["id"]: (d["text"], d["metadata"]) for d in read_docs(folder)}


def test_ray_filter_matches_local(demo_run, ray_cluster, tmp_path):
    import ray

    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    recipe = demo_run["recipe"].model_copy(deep=True)
    recipe.run_dir = str(tmp_path / "ray_run")
    recipe.executor.kind = "ray"
    recipe.executor.ray.address = ray_cluster.address
    recipe.executor.ray.mem_per_cpu_gb = 0.5
    stats = run_stages(recipe, ["filter"], quiet=True)["filter"]
    ray_layout, local_layout = RunLayout(recipe.run_dir), demo_run["layout"]
    for part in ("output", "removed", "quarantine"):
        folder = getattr(RunLayout, part)
        assert _by_id(folder(ray_layout, "filter")) == _by_id(folder(local_layout, "filter")), part
    local = demo_run["results"]["filter"]
    assert stats["sources"] == local["sources"]


def test_ray_decontam_matches_local(demo_run, ray_cluster, tmp_path):
    """The decontamination stage on the Ray cluster, from the local run's dedup output: same documents
    kept and removed, same contamination report."""
    import json
    import os
    import shutil

    local_layout = demo_run["layout"]
    recipe = demo_run["recipe"].model_copy(deep=True)
    recipe.run_dir = str(tmp_path / "ray_run")
    for stage in ("filter", "dedup"):
        shutil.copytree(local_layout.stage(stage), os.path.join(recipe.run_dir, stage))
    recipe.executor.kind = "ray"
    recipe.executor.ray.address = ray_cluster.address
    recipe.executor.ray.mem_per_cpu_gb = 0.5
    stats = run_stages(recipe, ["decontam"], quiet=True)["decontam"]
    ray_layout = RunLayout(recipe.run_dir)
    for part in ("output", "removed"):
        folder = getattr(RunLayout, part)
        assert _by_id(folder(ray_layout, "decontam")) == _by_id(folder(local_layout, "decontam")), part
    assert stats["sources"] == demo_run["results"]["decontam"]["sources"]
    reports = [json.load(open(os.path.join(layout.stage("decontam"), "contamination.json"))) for layout in (ray_layout, local_layout)]
    assert reports[0]["benchmarks"] == reports[1]["benchmarks"]
