"""A multi-node Ray cluster on this machine (loopback), for tests and benchmarks.

Each node is a ``ray start --block`` process started in its own session, so everything the
node spawns (GCS, raylet, agents, worker processes) shares that session id. Stopping a node
SIGTERMs its ``ray start`` and then SIGKILLs whatever is left *of that session*: unlike a global
``ray stop --force``, this never touches another Ray cluster on the machine. The cluster keeps
its files under its own ``--temp-dir`` for the same reason.

Linux only (process sessions are read from ``/proc``). Drivers attach with
``RAY_ADDRESS=cluster.address``; Ray connects a driver to the head node when several nodes
share a host, so killing a worker node never kills the driver.

    with LocalCluster(cpus=(1, 1)) as cluster:
        subprocess.run([..., "segops", "run", "wf.yaml"], env=cluster.driver_env())
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from segops.errors import SegopsError

log = logging.getLogger(__name__)

#: GCS declares a node dead after ``period × threshold`` without a health-check answer. Ray's
#: default (3 s × 5) makes a dead node cost ~15 s before Ray Train can restart its workers.
FAST_FAILURE_DETECTION = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}


class ClusterStartError(SegopsError):
    """A node of a :class:`LocalCluster` did not come up."""


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS's pick) on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_pids(sid: int) -> list[int]:
    """Every live process whose session id is ``sid`` (from ``/proc``; zombies left out)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.getsid(int(name)) == sid and _state(int(name)) != "Z":
                pids.append(int(name))
        except OSError:  # exited meanwhile
            pass
    return pids


def _state(pid: int) -> str:
    """One-letter process state from ``/proc/PID/stat`` (``Z``: zombie, waiting to be reaped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


def cmdline(pid: int) -> str:
    """The command line of ``pid`` ('' if it exited). Ray workers show their actor here (``ray::Class...``)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


@dataclass
class LocalNode:
    """One node: its ``ray start --block`` process, whose pid is the session id of all it spawns."""

    name: str
    process: subprocess.Popen
    log_path: Path

    @property
    def sid(self) -> int:
        return self.process.pid

    def pids(self) -> list[int]:
        return session_pids(self.sid)

    def worker_titles(self) -> dict[int, str]:
        """pid → title of this node's Ray worker processes (``ray::RayTrainWorker...``, ``ray::IDLE``)."""
        titles = {pid: cmdline(pid) for pid in self.pids()}
        return {pid: t for pid, t in titles.items() if t.startswith("ray::")}

    def raylet_pid(self) -> int:
        """Raises ClusterStartError: the node has no raylet (never started, or killed)."""
        for pid in self.pids():
            if Path(cmdline(pid).split(" ", 1)[0]).name == "raylet":
                return pid
        raise ClusterStartError(f"node {self.name} (session {self.sid}) has no raylet process")

    def node_id(self) -> str:
        """The hex Ray node id, read from the raylet's command line."""
        for arg in cmdline(self.raylet_pid()).split():
            if arg.startswith("--node_id="):
                return arg.split("=", 1)[1]
        raise ClusterStartError(f"node {self.name}: no --node_id in the raylet's command line")

    def kill_raylet(self) -> int:
        """SIGKILL the raylet (the node dies as on a machine failure); returns its pid."""
        pid = self.raylet_pid()
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM ``ray start`` (it shuts its node down), then SIGKILL what is left of the session."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + grace_s
        while (left := self.pids()) and time.monotonic() < deadline:  # a worker may fork while we kill
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=grace_s)

    def wait_started(self, timeout_s: float) -> None:
        """Until ``ray start`` reports the node registered with the GCS."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            if "Ray runtime started." in text:
                return
            if self.process.poll() is not None:
                raise ClusterStartError(
                    f"ray start for node {self.name} exited with {self.process.returncode}:\n{text[-3000:]}"
                )
            time.sleep(0.2)
        raise ClusterStartError(f"node {self.name} not started after {timeout_s:.0f} s; see {self.log_path}")


@dataclass
class LocalCluster:
    """A head node and ``len(cpus) - 1`` worker nodes, all on 127.0.0.1.

    Args:
        cpus: logical CPUs of each node, head first; ``(1, 1)`` is two 1-CPU nodes.
        temp_dir: Ray's temp dir for this cluster (default: a new short folder under /tmp;
            unix socket paths must stay under 108 bytes).
        env: extra environment for the nodes (e.g. ``RAY_health_check_period_ms``).
        object_store_mb: object store per node, MiB (Ray's default is 30 % of RAM, each).
        keep_logs: keep a temp dir this cluster created (Ray's logs) after :meth:`stop`.
    """

    cpus: tuple[int, ...] = (1, 1)
    temp_dir: Path | None = None
    env: dict[str, str] = field(default_factory=lambda: dict(FAST_FAILURE_DETECTION))
    object_store_mb: int = 512
    start_timeout_s: float = 60.0
    keep_logs: bool = False
    nodes: list[LocalNode] = field(default_factory=list, init=False)
    port: int = field(default=0, init=False)
    _own_temp_dir: bool = field(default=False, init=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def head(self) -> LocalNode:
        return self.nodes[0]

    @property
    def workers(self) -> list[LocalNode]:
        return self.nodes[1:]

    def driver_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a driver process that should attach to this cluster."""
        return {**(os.environ if base is None else base), "RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "disabled"}

    def start(self) -> LocalCluster:
        """Start every node; on failure, stop those already started and raise ClusterStartError."""
        if self.temp_dir is None:
            self.temp_dir = Path(tempfile.mkdtemp(prefix="segray-", dir="/tmp"))
            self._own_temp_dir = True
        self.port = free_port()
        try:
            self._start_node("head", self.cpus[0], ["--head", "--port", str(self.port), "--include-dashboard", "false"])
            for i, n in enumerate(self.cpus[1:], 1):
                self._start_node(f"worker{i}", n, ["--address", self.address])
        except BaseException:
            self.stop()
            raise
        log.info("local Ray cluster at %s: %s CPUs per node", self.address, list(self.cpus))
        return self

    def _start_node(self, name: str, cpus: int, role: list[str]) -> None:
        ray = Path(sys.executable).parent / "ray"
        args = [
            str(ray),
            "start",
            *role,
            "--block",
            "--num-cpus",
            str(cpus),
            "--node-ip-address",
            "127.0.0.1",
            "--temp-dir",
            str(self.temp_dir),
            "--disable-usage-stats",
            "--object-store-memory",
            str(self.object_store_mb * 2**20),
            "--dashboard-agent-listen-port",
            str(free_port()),
            "--metrics-export-port",
            str(free_port()),
        ]
        log_path = Path(self.temp_dir) / f"ray-start-{name}.log"
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", **self.env}
        env.pop("RAY_ADDRESS", None)
        with open(log_path, "w") as out:
            proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        node = LocalNode(name, proc, log_path)
        self.nodes.append(node)
        node.wait_started(self.start_timeout_s)

    def stop(self) -> None:
        """Stop worker nodes, then the head; only this cluster's processes are touched."""
        for node in reversed(self.nodes):
            node.stop()
        if self._own_temp_dir and not self.keep_logs and self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def hold_cpus(self, node: LocalNode, cpus: float) -> subprocess.Popen:
        """A driver process that holds ``cpus`` of ``node`` with an idle actor until it is killed.

        Shapes where the scheduler can put work (e.g. keep training workers off the head), then
        frees the CPUs when killed: the actor dies with its owner. Returns once the actor runs.
        """
        code = (
            "import sys, ray\n"
            "from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as A\n"
            "ray.init(logging_level='ERROR')\n"
            "@ray.remote\n"
            "class Hold:\n"
            "    def ready(self): return True\n"
            f"h = Hold.options(num_cpus={cpus}, scheduling_strategy=A('{node.node_id()}', soft=False)).remote()\n"
            "ray.get(h.ready.remote()); print('held', flush=True); sys.stdin.read()\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            env=self.driver_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        ready, _, _ = select.select([proc.stdout], [], [], self.start_timeout_s)
        if not ready or proc.stdout.readline().strip() != "held":
            proc.kill()
            raise ClusterStartError(f"could not hold {cpus} CPU(s) on node {node.name} (exit {proc.wait()})")
        return proc

    def stray_pids(self) -> list[int]:
        """Processes of this cluster's sessions still alive (should be none after :meth:`stop`)."""
        return [pid for node in self.nodes for pid in node.pids()]

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
