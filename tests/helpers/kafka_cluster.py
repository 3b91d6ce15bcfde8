"""A real 3-broker KRaft Kafka for the tests: the dev stack's `kafka-cluster` records
(template, logins, ACLs, replication factor 3, min.insync.replicas 2) on free loopback
ports under a directory of the test, each broker a process of its own, so one can be
killed and started again on its data while the others serve."""

from __future__ import annotations

import subprocess
from pathlib import Path

import devstack
from fraudops import kafka_access
from fraudops.settings import Settings
from testkit.stack import free_block, wait_until

OFFSETS = [0, 1, 2, devstack.KAFKA_CONTROLLER_OFFSET + 0, devstack.KAFKA_CONTROLLER_OFFSET + 1,
           devstack.KAFKA_CONTROLLER_OFFSET + 2]  # fmt: skip


class KafkaClusterServers:
    def __init__(self, run_dir: Path):
        settings = Settings(kafka_cluster_port=free_block(OFFSETS))
        self.stack = devstack.on_kafka_cluster(devstack.Stack(settings, Path(run_dir)))
        self.nodes = devstack.kafka_cluster_nodes(self.stack)
        self._procs: dict[int, subprocess.Popen] = {}

    @property
    def admin(self) -> Settings:
        """Settings logged in to the cluster as its admin (may create topics)."""
        return self.stack.as_kafka_user(kafka_access.ADMIN)

    def start(self, timeout: float = 180) -> KafkaClusterServers:
        devstack._kafka_prepare(self.stack, self.nodes)
        for node in self.nodes:  # a broker listens once a majority of controllers runs
            self.start_node(node, wait=False)
        for node in self.nodes:
            wait_until(lambda n=node: devstack.port_open(n.host, n.port), f"broker {node.node_id}",
                       timeout)  # fmt: skip
        wait_until(lambda: devstack._kafka_ready(self.stack), "the 3-broker Kafka", timeout)
        devstack._kafka_setup(self.stack)
        return self

    def start_node(self, node: devstack.KafkaNode, wait: bool = True) -> None:
        log = open(node.home / "broker.log", "ab")  # noqa: SIM115 - the broker's own stdout
        self._procs[node.node_id] = subprocess.Popen(
            devstack.kafka_node_command(self.stack, node), stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        if wait:
            wait_until(lambda: devstack.port_open(node.host, node.port), f"broker {node.node_id}")

    def kill(self, node: devstack.KafkaNode) -> None:
        """SIGKILL: the broker dies as a crashed host would."""
        self._procs[node.node_id].kill()
        self._procs[node.node_id].wait(timeout=30)

    def stop(self) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    def login(self) -> dict:
        """The admin's Kafka fields, to carry into other settings (`replace(base, **...)`)."""
        return self.admin.kafka_login()
