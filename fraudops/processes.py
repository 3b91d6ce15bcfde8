"""Other processes: whether one still exists (the dev stack asks it of the services it
started, and model_deployments rows name a host and a pid that may have died without closing
them), and waiting until one is ready (the broker applying ACLs, a service answering)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def process_alive(pid: int, group: bool = False) -> bool:
    """Whether a process with this pid (with `group`, any process of the group with this
    id) exists on this host; one we may not signal counts."""
    try:
        (os.killpg if group else os.kill)(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_until(check: Callable[[], object], what: str, timeout: float = 60, every: float = 0.1):
    """Poll `check` until it returns something truthy (and return that); a TimeoutError
    naming `what` otherwise. Exceptions from `check` propagate."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
