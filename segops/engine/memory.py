"""What segmenting and training take in memory, measured: probe runs at the run's sizes.

Ray places actors by the resources they ask for; an actor that asks for no ``memory`` is packed
beside others until the node runs out (Mask R-CNN actors on 500 px photos used 1.6–1.9 GiB each
while asking for none). So before the pool starts, the driver runs the model once on a blank
image of the run's size through the same :func:`segops.engine.cases.predict_batch` the actors
use (sliding windows, mirroring, probabilities included), samples this process's resident memory
while it runs, and asks Ray for

    ``ACTOR_BASE_BYTES + parameter bytes + batch_size x measured peak growth x SAFETY``

per actor. The peak is measured for one image and scaled by the batch (the engine stacks a
batch's images into one forward), which errs on the large side for the batch's fixed part.

Training workers are probed the same way: two optimiser steps of the step's model on random data
of the step's batch and patch size (a Mask R-CNN: square images of its ``min_size``), gradients
and optimizer state included.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import psutil
import torch

from segops.config.schema import MaskRCNNSpec, TrainStep
from segops.engine.cases import InferenceSettings, predict_batch
from segops.engine.checkpoint import LoadedModel
from segops.engine.probe import random_training_step

log = logging.getLogger(__name__)

#: Unique memory of an idle inference actor: a Ray worker that imported segops' actor module
#: (torch, MONAI, pydicom, highdicom) — 617 MiB USS measured on 2026-12-04 for the imports, plus
#: Ray's worker runtime.
ACTOR_BASE_BYTES = 800 * 2**20
#: Margin over the measured peak (allocator fragmentation, larger images than the probe's).
SAFETY = 1.5
#: How often the probe samples resident memory.
SAMPLE_S = 0.002


@dataclass(frozen=True)
class MemoryProbe:
    """One probe's figures, in bytes.

    Attributes:
        parameters: the model's parameters and buffers.
        peak_per_image: growth of resident memory while one image of the probe's shape was
            segmented (0 when the run was too short to sample; then ``seconds`` says so).
        seconds: how long the probe's prediction took.
        shape: (C, H, W) or (C, Z, H, W) of the probe's image.
    """

    parameters: int
    peak_per_image: int
    seconds: float
    shape: tuple[int, ...]

    def actor_bytes(self, batch_size: int) -> int:
        """The ``memory`` an inference actor asks Ray for when it segments ``batch_size`` images at once."""
        return int(ACTOR_BASE_BYTES + self.parameters + batch_size * self.peak_per_image * SAFETY)


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of a model's parameters and buffers."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def peak_growth(fn: Callable[[], object]) -> tuple[int, float]:
    """(largest growth of this process's resident memory while ``fn`` runs, seconds it took).

    Memory freed earlier is first handed back to the system (``malloc_trim`` where glibc has it),
    so the growth is ``fn``'s own and not hidden by pages the allocator kept.
    """
    gc.collect()
    _trim()
    process = psutil.Process()
    base = peak = process.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(SAMPLE_S)

    sampler = threading.Thread(target=sample, name="memory-probe", daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        fn()
    finally:
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
    peak = max(peak, process.memory_info().rss)
    return max(0, peak - base), seconds


def probe_inference(loaded: LoadedModel, settings: InferenceSettings, shape: tuple[int, ...]) -> MemoryProbe:
    """Segment one image of ``shape`` ((C, H, W) or (C, Z, H, W)) as an actor would and measure it.

    The image is a ramp, not blank: per-image percentile scaling of a constant image divides by
    zero (MONAI warns "Divide by zero (a_min == a_max)" into the user's terminal).
    """
    image = np.linspace(0.0, 1.0, int(np.prod(shape)), dtype=np.float32).reshape(shape)
    with torch.inference_mode():
        growth, seconds = peak_growth(lambda: predict_batch(loaded, [image], settings))
    probe = MemoryProbe(model_bytes(loaded.model), growth, seconds, tuple(shape))
    log.debug(
        "memory probe at %s: parameters %.0f MiB, +%.0f MiB per image (%.2f s)",
        shape,
        probe.parameters / 2**20,
        growth / 2**20,
        seconds,
    )
    return probe


def probe_training(step: TrainStep, image: TrainingImage | None = None) -> MemoryProbe:
    """Measure two optimiser steps of ``step``'s model on a batch of the size a worker trains on
    (``batch_size`` x ``patches_per_image`` patches), on one CPU thread as a worker runs.

    ``image``: a Mask R-CNN's largest training image as it trains (resized) and its objects
    (:func:`largest_training_image`); without it, a square ``min_size`` image with one object."""
    spec = step.model
    if spec.task == "semantic":
        size, objects = tuple(step.preprocess.patch_size), 1
    else:
        size, objects = (image.size, image.objects) if image is not None else ((spec.min_size,), 1)
    batch = step.samples_per_step
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, train_step = random_training_step(spec, batch, size, torch.device("cpu"), objects=objects)
        growth, seconds = peak_growth(lambda: (train_step(), train_step()))
    finally:
        torch.set_num_threads(threads)
    shape = (batch, spec.in_channels, *size)
    probe = MemoryProbe(model_bytes(model), growth // batch, seconds / 2, shape)
    log.debug("memory probe of a training step at %s: +%.0f MiB (%.2f s)", shape, growth / 2**20, seconds / 2)
    return probe


@dataclass(frozen=True)
class TrainingImage:
    """A Mask R-CNN training image as the model sees it: (H, W) after its resize, and its objects."""

    size: tuple[int, int]
    objects: int


#: Objects a probe image holds at most: the mask head trains on at most a quarter of the 512 sampled
#: proposals as positives, so memory stops growing with objects long before this.
MAX_PROBE_OBJECTS = 128


def largest_training_image(records: pd.DataFrame, spec: MaskRCNNSpec) -> TrainingImage:
    """The largest of ``records``' images (their ``height`` and ``width``) once resized as
    torchvision's GeneralizedRCNNTransform resizes it for ``spec`` (shorter side to ``min_size``
    unless the longer would pass ``max_size``), with the most objects any image holds (its nonzero
    ``label_values``; at most :data:`MAX_PROBE_OBJECTS`)."""
    shapes = zip(records["height"].astype(int), records["width"].astype(int))
    resized = [resized_shape(h, w, spec.min_size, spec.max_size) for h, w in shapes]
    size = max(resized, key=lambda hw: hw[0] * hw[1], default=(spec.min_size, spec.min_size))
    values = records["label_values"] if "label_values" in records else []  # older datasets lack the column
    objects = max((sum(int(v) > 0 for v in vs) for vs in values), default=1)
    return TrainingImage(size, min(MAX_PROBE_OBJECTS, max(1, objects)))


def resized_shape(h: int, w: int, min_size: int, max_size: int) -> tuple[int, int]:
    """(H, W) of an (h, w) image after torchvision's Mask R-CNN resize (scale min(min_size / short
    side, max_size / long side), sizes floored)."""
    scale = min(min_size / min(h, w), max_size / max(h, w))
    return int(h * scale), int(w * scale)


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the growth may read low, SAFETY covers some of it
        pass
