"""Helpers shared by the benchmarks: peak RSS of a process tree, and a stopwatch."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import psutil


class PeakRSS:
    """Samples the memory of this process and all its descendants (Ray workers included).

    Summed PSS (proportional set size) where the OS reports it: Ray workers map the same
    shared-memory object store, and summing plain RSS would count those pages once per process.

    Reading PSS is not free: the kernel walks every mapping (the object store's included), about
    20 ms per Ray process here, so one sample of a Ray run costs 0.1-0.2 s of CPU. Sampling every
    0.2 s took half a core from the run being measured. The pause after each sample is therefore
    ``overhead`` times the sample's own cost (at least ``interval``), which keeps the sampler under
    ``1/overhead`` of one core.
    """

    def __init__(self, interval: float = 0.5, overhead: float = 20.0):
        self.interval, self.overhead = interval, overhead
        self.peak = 0
        self.peak_processes = 0  # how many processes (driver + Ray) existed at most
        self.driver_at_peak = 0  # this process's own share of the peak (what the driver holds)
        self.baseline_driver = 0  # this process's own memory when measuring started
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree_rss(self) -> tuple[int, int]:
        """(summed memory of this process and its descendants, this process's own)."""
        me = psutil.Process()
        total = own = 0
        procs = [me, *me.children(recursive=True)]
        self.peak_processes = max(self.peak_processes, len(procs))
        for proc in procs:
            try:
                info = proc.memory_full_info()
                used = getattr(info, "pss", info.rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            total += used
            own = used if proc.pid == me.pid else own
        return total, own

    def _sample(self) -> None:
        total, own = self._tree_rss()
        if total > self.peak:
            self.peak, self.driver_at_peak = total, own

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.thread_time()
            self._sample()
            cost = time.thread_time() - start  # this thread's CPU time, kernel time included
            self._stop.wait(max(self.interval, self.overhead * cost))

    def __enter__(self) -> PeakRSS:
        self._sample()
        self.baseline_driver = self.driver_at_peak
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


@contextmanager
def stopwatch():
    """``with stopwatch() as t: ...`` then ``t()`` is the elapsed seconds."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def rate(label: str, job) -> float:
    """Run ``job()`` (returns an image count), print and return images per second."""
    with stopwatch() as elapsed:
        n = job()
    per_s = n / elapsed()
    print(f"{label:40s}: {n:6d} images in {elapsed():6.1f} s = {per_s:7.1f} img/s")
    return per_s
