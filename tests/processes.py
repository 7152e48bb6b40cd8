"""Run a workflow in a child process and SIGKILL it with everything it started (for resume tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil


def subprocess_run(workflow: Path) -> subprocess.Popen:
    """``segops run WORKFLOW`` in a new session (so its local Ray cluster can be killed with it)."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    return subprocess.Popen([sys.executable, "-m", "segops.cli", "run", str(workflow)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the driver and every process of its session (its local Ray cluster included)."""
    members = [p for p in psutil.process_iter(["pid"]) if _sid(p.pid) == proc.pid]
    for p in members:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=30)


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None
