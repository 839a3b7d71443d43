"""Stopping a helper program the tests started (a browser, a Jupyter server) with everything it spawned."""
from __future__ import annotations

import os
import signal
import subprocess


def stop_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM to the process group of ``proc`` (started with ``start_new_session=True``), SIGKILL
    after ``timeout`` seconds: helpers (Chromium's renderers, a server's kernels) go with it."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
