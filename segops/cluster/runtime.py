"""Starting or attaching to Ray, quietly."""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from segops.config.schema import ClusterSpec

log = logging.getLogger(__name__)

_NOISY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray.serve")
#: Ray Data's issue detectors (high memory, hanging tasks): multi-line advice for Ray users.
ISSUE_DETECTION_LOGGER = "ray.data._internal.issue_detection.issue_detector_manager"


#: Ray Data's warning when a dataset executes while no CPU is free at that instant (Ray Train's
#: workers starting as the training fingerprint's pass begins): it says the job "will hang", and
#: it does not here, since the pass waits for a CPU; seen on a 2,331-image plan's run.
NO_CPU_WARNING = "Warning: The Ray cluster currently does not have any available CPUs"


class _LogFileOnly(logging.Filter):
    """Marks records (all, or those whose message starts with ``prefix``) for Ray Data's log file
    only: its console handler drops records with ``hide`` set
    (``ray.data._internal.logging.HiddenRecordFilter``), its file handler keeps them."""

    def __init__(self, prefix: str = "") -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.prefix or str(record.msg).startswith(self.prefix):
            record.hide = True
        return True


#: What Ray's C++ core writes to the driver's stderr when ``ray.init`` starts it with
#: ``RAY_BACKEND_LOG_LEVEL`` set (which segops sets to keep its ERROR chatter out): an INFO line
#: saying so, printed whatever the level.
_BACKEND_LEVEL_LINE = re.compile(r"Set ray log level from environment variable RAY_BACKEND_LOG_LEVEL")


@contextmanager
def _stderr_without(line: re.Pattern[str]) -> Iterator[None]:
    """Run the block with file descriptor 2 going to a temporary file, then write what it got to
    the real stderr, less the lines matching ``line`` (C++ code writes to the descriptor, so
    ``sys.stderr`` cannot be swapped instead). Everything else appears, after the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [x for x in held.read().decode("utf-8", "replace").splitlines(True) if not line.search(x)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


#: Ray Train's switch for its preemption watcher (``ray.train.v2._internal.constants``); off on a local Ray.
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
#: Least CPU a training run leaves free: Ray Data's split coordinator and read tasks ask whole CPUs.
TRAIN_MIN_RESERVE = 1.0
#: Least CPU an inference pool leaves free: its read tasks ask 0.25 CPU beside fractional actors
#: (:attr:`segops.cluster.infer.PoolSize.read_cpus`).
INFER_MIN_RESERVE = 0.5


def cpu_reserve(total_cpus: float, minimum: float) -> float:
    """CPUs that workers or actors leave free for Ray Data's read, decode and split tasks:
    10 % of the cluster's, at least ``minimum``.

    Taking every CPU (two 1-CPU workers or actors on a 2-CPU node) starves the data pipeline:
    the read stage is never scheduled and training or inference never starts.
    """
    return max(minimum, 0.1 * total_cpus)


def ensure_ray(cluster: ClusterSpec) -> dict[str, float]:
    """Attach to ``RAY_ADDRESS`` / ``cluster.address``, or start a local Ray; return its resources.

    Reuses an already-initialised Ray session (tests share one per module). Ray's own INFO
    logging and progress bars are kept out of the user's terminal; set
    ``SEGOPS_RAY_VERBOSE=1`` to see them.
    """
    import ray

    verbose = os.environ.get("SEGOPS_RAY_VERBOSE") == "1"
    if not ray.is_initialized():
        if not verbose:
            # Ray's C++ core logs a benign ERROR line for every Ray Data actor pool (constructor
            # args live in the object store); real failures still surface as Python exceptions.
            os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        address = os.environ.get("RAY_ADDRESS") or cluster.address
        if address is None:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local only: no token warning
            # Ray Train's preemption watcher is an extra actor process per training run (~2 s of CPU
            # to start) that follows the draining of autoscaled or spot nodes: a local Ray has none
            os.environ.setdefault(PREEMPTION_WATCHER_ENV, "0")
        with nullcontext() if verbose else _stderr_without(_BACKEND_LEVEL_LINE):
            ray.init(
                address=address,
                num_cpus=cluster.num_cpus if address is None else None,
                include_dashboard=False,
                log_to_driver=verbose,
                logging_level=logging.INFO if verbose else logging.WARNING,
                configure_logging=True,
            )
        log.debug("Ray %s: %s", "attached to " + address if address else "local", ray.cluster_resources())
    quiet_ray(verbose)
    limit_data_memory(cluster.data_memory_gb)
    return dict(ray.cluster_resources())


def limit_data_memory(gb: float | None) -> None:
    """Cap the object-store memory Ray Data pipelines of this driver keep in flight.

    Without a cap, a fast decode stage feeding slower inference actors fills up to Ray's default
    budget (a share of the whole object store), so memory grows with the archive's length
    instead of staying flat. Backpressure then holds decode at the cap.
    """
    from ray.data import DataContext

    if gb is None:
        return
    options = DataContext.get_current().execution_options
    options.resource_limits = options.resource_limits.copy(object_store_memory=gb * 2**30)


def quiet_ray(verbose: bool = False) -> None:
    """Silence Ray Data's progress bars and INFO chatter unless ``verbose``."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = verbose
    ctx.enable_operator_progress_bars = verbose
    ctx.print_on_execution_start = verbose
    if not verbose:
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        # "Progress bars disabled" is a warning Ray Data prints because we disabled them
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
        # the issue detectors' advice goes to Ray Data's log file (<session>/logs/ray-data/ray-data.log),
        # not into the middle of the user's progress bar
        for name, prefix in ((ISSUE_DETECTION_LOGGER, ""), ("ray.data.dataset", NO_CPU_WARNING)):
            logger = logging.getLogger(name)
            if not any(isinstance(f, _LogFileOnly) for f in logger.filters):
                logger.addFilter(_LogFileOnly(prefix))
