"""Fixtures of the integration tier that the session-wide conftest does not hold.

- `redis_servers`: factory `redis_servers()` -> a started `RedisServer` (real
  `redis-server`, free loopback port, its own directory, append-only file, no snapshots);
  every server it made is stopped when the test ends. `server.stop()` and `server.start()`
  take Redis away and bring it back with its data.
- `redis_server`: one such server.
- `redis_cluster`: one real Redis Cluster (3 masters, 3 replicas) for the session; tests
  keep apart by a key prefix of their own.
- `app`: the gRPC server (`ServingApp`) in-process on model v1, fresh topics and the
  session's database, 16 workers (enough for concurrent calls to gather into one batch);
  a test file with an `app` of its own overrides it.
- `channel`: a channel to `app` with the session's `client_token`, once it serves.
- `stream_settings`: settings for server and scorer processes sharing that Redis, fresh
  topics, a fresh database, a consumer group of their own and model v1 published; their
  `client_token` is the session's `client_token`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fraudops.settings import Settings
from testkit.redis_cluster import RedisClusterServers
from testkit.redis_server import RedisServer
from tests.helpers.serving_env import channel_to, running_app, wait_serving


@pytest.fixture
def redis_servers(tmp_path: Path) -> Iterator[Callable[[], RedisServer]]:
    started: list[RedisServer] = []

    def make() -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(started)}")
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def redis_server(redis_servers) -> RedisServer:
    return redis_servers()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory) -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def stream_settings(v1_settings, database_url, redis_server, client_token) -> Settings:
    return v1_settings("test-scorer", database_url=database_url, redis_url=redis_server.url,
                       client_token=client_token)  # fmt: skip


@pytest.fixture
def app(v1_settings, database_url):
    with running_app(v1_settings("test-server", database_url=database_url), 16, grace=2) as app:
        yield app


@pytest.fixture
def channel(app, client_token):
    with channel_to(app.port, client_token) as ch:
        wait_serving(ch)
        yield ch
