"""One real two-node Ray cluster per test session, on loopback, with token authentication.

`ray_cluster` starts it the first time a test asks (a head node and a second
node that declares two fake GPUs), connects this process to it and shuts it
down at the end of the session. Ray writes under HOME (~/.ray), so the session
gets a HOME of its own; RAY_AUTH_MODE=token with a fresh token (set when this
module is imported, since Ray reads them at import), as docs/ray.md tells
people to run their clusters.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

# Ray reads these once, when it is imported: set before any test module imports it
os.environ["RAY_AUTH_MODE"] = "token"
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

HEAD_CPUS = 2
GPU_NODE_CPUS = 2
FAKE_GPUS = 2


@dataclass
class RayCluster:
    """The session's cluster: `cluster` is ray.cluster_utils.Cluster; add and remove nodes with it."""

    cluster: Any
    gpu_node: Any

    def add_node(self, **kwargs: Any) -> Any:
        node = self.cluster.add_node(**kwargs)
        self.cluster.wait_for_nodes()
        return node

    def remove_node(self, node: Any) -> None:
        self.cluster.remove_node(node, allow_graceful=False)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    import ray
    from ray.cluster_utils import Cluster

    home = tmp_path_factory.mktemp("ray-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RAY_ADDRESS", raising=False)
        with pytest.MonkeyPatch.context() as home_mp:  # the nodes keep it; the other tests get theirs back
            home_mp.setenv("HOME", str(home))
            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": HEAD_CPUS, "num_gpus": 0})
            gpu_node = cluster.add_node(num_cpus=GPU_NODE_CPUS, num_gpus=FAKE_GPUS)
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        try:
            yield RayCluster(cluster, gpu_node)
        finally:
            ray.shutdown()
            cluster.shutdown()
            os.environ.pop("RAY_ADDRESS", None)
