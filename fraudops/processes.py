"""Whether a process still exists: the dev stack asks it of the services it started, and
model_deployments rows name a host and a pid that may have died without closing them."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
