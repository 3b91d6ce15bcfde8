"""A real Redis Cluster for the tests and the benchmark: 3 masters with a replica each,
Debian's redis-server in cluster mode on free loopback ports (below 55536: each node's
cluster bus is its port + 10000), formed by the dev stack's own `form_redis_cluster`. A
node can be killed (its replica is promoted within about the node timeout) and started
again on its port and data (it rejoins as a replica)."""

from __future__ import annotations

from pathlib import Path

import redis

from devstack import form_redis_cluster, redis_cluster_node_command
from fraudops.processes import wait_until
from testkit.redis_server import RedisServer
from testkit.stack import free_block

NODES = 6


class ClusterNode(RedisServer):
    def command(self) -> list[str]:
        return redis_cluster_node_command(self.port, self.directory)


class RedisClusterServers:
    def __init__(self, directory: Path):
        base = free_block([*range(NODES), *range(10000, 10000 + NODES)])
        ports = [base + n for n in range(NODES)]
        self.nodes = [ClusterNode(Path(directory) / f"node-{p}", p) for p in ports]
        self.url = f"redis+cluster://127.0.0.1:{ports[0]}/0"

    def start(self) -> RedisClusterServers:
        for node in self.nodes:
            node.start()
        form_redis_cluster([node.port for node in self.nodes])
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def master_of(self, key: str) -> ClusterNode:
        """The node serving `key`'s slot now (asked of a live node)."""
        nodes = self._live().execute_command("CLUSTER", "NODES").decode()
        slot = self._live().cluster("keyslot", key)
        for line in nodes.splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for span in fields[8:]:
                low, _, high = span.partition("-")
                if int(low) <= slot <= int(high or low):
                    served = int(fields[1].split(":")[1].split("@")[0])
                    return next(node for node in self.nodes if node.port == served)
        raise LookupError(f"no live master serves slot {slot}")

    def wait_for_master(self, key: str, not_on: ClusterNode, timeout: float = 60) -> ClusterNode:
        """The replica promoted for `key`'s slot once `not_on` is gone, and every slot
        served again."""

        def promoted() -> ClusterNode | None:
            try:
                master = self.master_of(key)
                ok = b"cluster_state:ok" in self._live().execute_command("CLUSTER", "INFO")
            except (LookupError, redis.RedisError):
                return None
            return master if master is not not_on and ok else None

        return wait_until(promoted, f"a new master for {key!r}", timeout)

    def _live(self) -> redis.Redis:
        for node in self.nodes:
            if node._proc is not None and node._proc.poll() is None:
                return redis.Redis(port=node.port, socket_timeout=2)
        raise LookupError("no node of the cluster runs")
