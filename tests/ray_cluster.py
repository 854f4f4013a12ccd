"""A two-node Ray cluster on 127.0.0.1, for the sweep's Ray test: ``python ray_cluster.py``.

It starts a head node (GCS and raylet) and a second worker node (its own raylet and object
store) as separate processes with Ray's ``cluster_utils.Cluster``, prints the cluster's address
on one line, and keeps them running until its standard input closes; then it stops them.

Run with ``RAY_TMPDIR`` set (a short private directory: Ray keeps its sockets and the current
cluster's address there, not in the shared ``/tmp/ray``) and
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: on Linux Ray otherwise replaces 127.0.0.1 by
the machine's network address (``ray start --address 127.0.0.1:PORT`` does too, and refuses a
second node with the variable set), and the test must stay on the loopback interface.
"""

import os
import sys

from ray.cluster_utils import Cluster


def main() -> None:
    temp_dir = os.path.join(os.environ["RAY_TMPDIR"], "ray")
    node = {
        "num_cpus": 1,
        "node_ip_address": "127.0.0.1",
        "temp_dir": temp_dir,
        "object_store_memory": 80 * 1024 * 1024,
    }
    cluster = Cluster(
        initialize_head=True,
        head_node_args={**node, "include_dashboard": False},
        shutdown_at_exit=True,
    )
    try:
        cluster.add_node(**node)
        cluster.wait_for_nodes(timeout=60)
        addresses = {node.node_ip_address for node in cluster.list_all_nodes()}
        if addresses != {"127.0.0.1"}:
            print(f"nodes not on 127.0.0.1: {sorted(addresses)}", flush=True)
            return
        print(cluster.address, flush=True)
        sys.stdin.read()
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
