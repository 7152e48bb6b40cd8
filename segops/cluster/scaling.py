"""How many Ray Train workers a train step runs, what each asks Ray for (CPUs, memory or a GPU),
and the process group they talk through.

On GPUs, one worker per GPU: NCCL allows one rank per device, and a worker asking for a GPU the
cluster does not have is never started (Ray Train waits for it, then fails inside Ray). So the
default ``scaling.workers`` (two, the two cores of a small CPU machine) becomes the cluster's GPU
count there (with ``use_gpu: auto`` a larger count is lowered to it), and with ``use_gpu: true``
a count the GPUs cannot hold is refused before any worker starts.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from ray.train.torch import TorchConfig

from segops.cluster.runtime import TRAIN_MIN_RESERVE, cpu_reserve
from segops.config.schema import ScalingSpec, TrainStep
from segops.errors import StepError

if TYPE_CHECKING:  # the memory probe is the driver's: workers need not import the inference path
    from segops.engine.memory import TrainingImage

log = logging.getLogger(__name__)

#: The process group of GPU workers: NCCL for CUDA tensors (DDP's gradients) and gloo for the CPU
#: tensors and objects the training loop reduces (loss and Dice sums, mask-AP entries). A group
#: of NCCL alone (Ray Train's default with GPUs) has no CPU backend, and its first CPU all-reduce
#: fails with "No backend type associated with device type cpu".
GPU_BACKEND = "cpu:gloo,cuda:nccl"


def resolve_use_gpu(use_gpu: bool | str, resources: dict[str, float]) -> bool:
    """``auto`` → True iff the cluster has at least one GPU."""
    if use_gpu == "auto":
        return resources.get("GPU", 0.0) >= 1.0
    return bool(use_gpu)


def resolve_scaling(scaling: ScalingSpec, resources: dict[str, float]) -> ScalingSpec:
    """``scaling`` with ``use_gpu`` decided (:func:`resolve_use_gpu`) and, on GPUs, one worker per GPU:
    as many workers as the cluster has GPUs where ``workers`` is not set; with ``use_gpu: auto``, a
    ``workers`` above that is lowered to it (logged: the shipped workflows' two workers are for CPUs).

    Raises:
        StepError: ``use_gpu: true`` with more workers than the cluster has GPUs.
    """
    use_gpu = resolve_use_gpu(scaling.use_gpu, resources)
    workers = scaling.workers
    if use_gpu:
        gpus = int(resources.get("GPU", 0.0))
        if "workers" not in scaling.model_fields_set:
            workers = max(gpus, 1)
        elif workers > gpus >= 1 and scaling.use_gpu == "auto":
            log.warning("train.scaling.workers %d lowered to %d: one training worker per GPU", workers, gpus)
            workers = gpus
        if workers > gpus:
            fix = f"set train.scaling.workers to at most {gpus}" if gpus else "set train.scaling.use_gpu: auto"
            raise StepError(
                f"train.scaling asks {workers} training worker(s) with a GPU each, but the cluster has {gpus} GPU(s): "
                f"Ray Train would wait for GPUs that never come; {fix} (or use_gpu: false to train on CPUs)"
            )
    return scaling.model_copy(update={"use_gpu": use_gpu, "workers": workers})


def torch_config(use_gpu: bool) -> TorchConfig:
    """Ray Train's process group: :data:`GPU_BACKEND` on GPUs, Ray's default (gloo) on CPUs."""
    return TorchConfig(backend=GPU_BACKEND if use_gpu else None)


def worker_cpus(workers: int, requested: float | None, resources: dict[str, float]) -> float:
    """CPUs per training worker.

    With ``requested`` unset, the workers share the cluster's CPUs minus
    :func:`segops.cluster.runtime.cpu_reserve` for Ray Data's read/split tasks (at least
    :data:`~segops.cluster.runtime.TRAIN_MIN_RESERVE`).
    """
    if requested is not None:
        return requested
    total = resources.get("CPU", 1.0)
    reserve = cpu_reserve(total, TRAIN_MIN_RESERVE)
    share = (total - reserve) / workers
    if share >= 1.0:
        return float(math.floor(share))
    return max(0.25, math.floor(share * 4) / 4)


def worker_memory(step: TrainStep, resources: dict[str, float], image: TrainingImage | None = None) -> int:
    """The ``memory`` a CPU training worker asks Ray for: measured by :func:`segops.engine.memory.probe_training`
    (a Mask R-CNN's on ``image``, the run's largest training image as it trains).

    Raises:
        StepError: the workers would need more memory together than the cluster offers, so Ray
            Train could never start them all.
    """
    from segops.engine.memory import probe_training  # the driver's: workers need not import the inference path

    batch = step.samples_per_step
    need = probe_training(step, image).actor_bytes(batch)
    available = resources.get("memory")
    if available and need * step.scaling.workers > available:
        raise StepError(
            f"{step.scaling.workers} training worker(s) would need {need / 2**30:.1f} GiB each ({batch} patches "
            f"per step: batch_size {step.batch_size}, patches_per_image {step.patches_per_image}) but the cluster "
            f"offers Ray {available / 2**30:.1f} GiB: lower train.batch_size, patches_per_image or scaling.workers"
        )
    log.info("each training worker asks for %.2f GiB (measured at %d patches per step)", need / 2**30, batch)
    return need
