"""A real `redis-server` on a free loopback port with its own directory and an append-only
file, for the tests and the benchmark. It can be stopped and started again on the same
port and directory, so a test can take Redis away mid-stream and bring its data back, or
freeze it to play a server that hangs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from testkit.stack import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    def __init__(self, directory: Path, port: int | None = None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [
            REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port),
            "--dir", str(self.directory), "--save", "", "--appendonly", "yes",
            "--protected-mode", "yes", "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip

    def start(self, timeout: float = 30) -> RedisServer:
        """Start (or restart) the server; returns once it answers PING with its data loaded."""
        command = self.command()
        self._proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    log = (self.directory / "redis.log").read_text(errors="replace")
                    raise RuntimeError(f"redis-server exited with {self._proc.returncode}:\n{log}")
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError):
                    time.sleep(0.05)
        finally:
            client.close()
        raise TimeoutError(f"redis-server on port {self.port} not ready after {timeout}s")

    @property
    def pid(self) -> int:
        return self._proc.pid

    def freeze(self) -> None:
        """SIGSTOP: Redis accepts connections but answers nothing (a hung server)."""
        os.kill(self.pid, signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILL: the server dies as a crashed host would, flushing nothing."""
        self._proc.kill()
        self._proc.wait(timeout=30)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM: Redis flushes its append-only file and exits."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=timeout)
