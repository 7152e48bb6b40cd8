"""Run a workflow in a child process and SIGKILL it with everything it started (for resume tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from segops.cluster.local_cluster import free_port, session_pids


def subprocess_run(workflow: Path, env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen:
    """``segops run WORKFLOW`` in a new session (so its local Ray cluster can be killed with it).

    ``env``: default this process's environment; ``log``: stdout and stderr to this file (else discarded).
    """
    env = env if env is not None else {**os.environ, "RAY_AUTH_MODE": "disabled"}
    out = open(log, "w") if log is not None else subprocess.DEVNULL  # noqa: SIM115 (the child holds it)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "segops.cli", "run", str(workflow)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        if log is not None:
            out.close()


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the driver and every process of its session (its local Ray cluster included)."""
    for pid in session_pids(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


# --------------------------------------------------------------------------- services on loopback


def http_ok(url: str) -> bool:
    """True if GET ``url`` answers 200."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_until(ready, proc: subprocess.Popen, what: str, log: Path, timeout: float = 90) -> None:
    """Poll ``ready()`` until it is true; raise with the tail of ``log`` if ``proc`` dies or time runs out."""
    import time

    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            why = f"exited with {proc.returncode}" if proc.poll() is not None else f"not ready after {timeout:.0f} s"
            stop_group(proc)
            tail = log.read_text(errors="replace")[-3000:] if log.is_file() else "(no log)"
            raise RuntimeError(f"{what} {why}; last lines of {log}:\n{tail}")
        time.sleep(0.3)


def stop_group(proc: subprocess.Popen, sig: int = 15, timeout: float = 30) -> None:  # 15: SIGTERM
    """Send ``sig`` to the process group of ``proc`` (started with ``start_new_session=True``), wait
    for it, then SIGKILL whatever of the group is left (``mlflow server`` runs its uvicorn workers
    as children: stopping only the parent would leave them serving)."""
    import signal

    def signal_group(s: int) -> None:
        try:
            os.killpg(proc.pid, s)
        except ProcessLookupError:
            pass

    signal_group(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        signal_group(signal.SIGKILL)
        proc.wait(timeout=30)
    signal_group(signal.SIGKILL)  # children that outlived their parent


def start_mlflow_server(
    backend_store_uri: str, artifacts_destination: str, log: Path, env: dict[str, str] | None = None
):
    """``mlflow server`` on 127.0.0.1 serving artifacts (``--serve-artifacts``); returns (process, http URI).

    Clients need no storage credentials: they upload through the server, which alone talks to
    ``artifacts_destination`` (a folder, ``s3://…``). Stop it with :func:`stop_group`.
    """
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        artifacts_destination,
        "--serve-artifacts",
    ]
    server_env = {k: v for k, v in (env or os.environ).items() if k != "MLFLOW_TRACKING_URI"}
    # no GenAI job runner: its huey consumers take ~30 s to stop and leave a folder in /dev/shm
    server_env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=server_env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(f"{uri}/health"), proc, "mlflow server", log, timeout=180)
    return proc, uri


class ActorWatch:
    """Polls which Ray worker processes (``ray::RayTrainWorker``, ``ray::MapWorker(...)``) each node
    of a :class:`segops.cluster.local_cluster.LocalCluster` runs, from the nodes' process sessions.

    ``seen[node_name]`` maps a title prefix to the pids that carried it, so a worker that ran for a
    second between two polls may be missed, never misattributed.
    """

    def __init__(self, nodes: list, interval: float = 0.3):
        import threading

        self.nodes, self.interval = nodes, interval
        self.seen: dict[str, dict[str, set[int]]] = {n.name: {} for n in nodes}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.interval)

    def poll(self) -> None:
        for node in self.nodes:
            for pid, title in node.worker_titles().items():
                self.seen[node.name].setdefault(title.split(" ", 1)[0].split(".", 1)[0], set()).add(pid)

    def live(self, node: str, prefix: str) -> set[int]:
        """pids on ``node`` whose title starts with ``prefix`` now (``pids`` keeps every pid ever seen)."""
        found = next(n for n in self.nodes if n.name == node).worker_titles()
        return {pid for pid, title in found.items() if title.startswith(prefix)}

    def pids(self, node: str, prefix: str) -> set[int]:
        """pids on ``node`` whose title starts with ``prefix`` (e.g. ``ray::RayTrainWorker``)."""
        return {pid for title, pids in self.seen[node].items() if title.startswith(prefix) for pid in pids}

    def __enter__(self) -> ActorWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
