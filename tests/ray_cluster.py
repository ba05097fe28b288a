"""A real two-node Ray cluster on 127.0.0.1 for the tests (``ray.cluster_utils.Cluster``: a head and one more
node, one CPU and 3 GiB each), with the driver connected; shut down on exit."""

from __future__ import annotations

import os
from contextlib import contextmanager


@contextmanager
def two_node_cluster():
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
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
