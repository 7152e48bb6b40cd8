"""Numeric precision of training and inference: mixed-precision autocast, shared by every engine loop.

``amp`` (on by default in the train and segment steps; evaluate always) means bfloat16 autocast where the
hardware computes in bfloat16 natively:

- **CUDA**: training and inference on GPUs with bfloat16 in hardware (compute capability 8 and
  later: A100, H100, L4, RTX 30xx; bf16 keeps fp32's exponent range, so no GradScaler). Older
  GPUs (T4, V100) would emulate it, slower than float32, so they stay in float32.
- **CPU**: semantic inference only, and only on CPUs with bfloat16 arithmetic in hardware
  (x86 ``amx_bf16`` or ``avx512_bf16``, i.e. Intel Sapphire Rapids / AMD Zen 4 and later),
  where oneDNN runs the U-Nets 1.9-2.4x faster than in float32 (``benchmarks/cpu_kernels.py``,
  ``benchmarks/precision.py``).
  Elsewhere bf16 would be emulated and slower, so the CPU stays in float32. CPU training stays in
  float32 (1.3x an epoch on the quickstart U-Net, Dice within the seeds' spread: measured on one
  dataset only), and so does Mask R-CNN inference (2.3x on its network, quality on a trained model
  not measured yet).

bfloat16 logits differ from float32's by up to ~0.07, so pixels whose two classes score within that
of each other may take the other class: on trained models 0.005-0.04 % of the pixels differ
(README "Precision"; tested in ``tests/engine/test_precision.py``). A segment step's
``amp: false`` gives float32.
"""

from __future__ import annotations

import functools
import platform
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

#: x86 CPU flags (``/proc/cpuinfo``) that mean bfloat16 matrix arithmetic in hardware.
BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def autocast(device: torch.device, amp: bool) -> AbstractContextManager:
    """bfloat16 on CUDA when ``amp``; a no-op context elsewhere: training's autocast, and Mask R-CNN
    inference's (float32 on a CPU, see the module docstring)."""
    if amp and device.type == "cuda" and cuda_has_bf16(device.index):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@functools.cache
def cuda_has_bf16(index: int | None = None) -> bool:
    """Whether CUDA device ``index`` (None: the current one) computes in bfloat16 natively: compute
    capability 8 or later. torch's autocast accepts bf16 on older GPUs too, emulated and slower."""
    return torch.cuda.get_device_capability(index)[0] >= 8


def inference_autocast(device: torch.device, amp: bool) -> AbstractContextManager:
    """Semantic inference's autocast: bfloat16 on CUDA when ``amp``, and on a CPU when ``amp`` and
    the CPU has bfloat16 in hardware (:func:`cpu_has_bf16`); a no-op context elsewhere."""
    if amp and device.type == "cpu" and cpu_has_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return autocast(device, amp)


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this machine's CPU computes in bfloat16 natively (:data:`BF16_CPU_FLAGS`), read from
    ``/proc/cpuinfo`` on Linux; False elsewhere (macOS, Windows: float32, as before)."""
    info = Path("/proc/cpuinfo")
    if platform.system() != "Linux" or not info.is_file():
        return False
    return cpu_flags_have_bf16(info.read_text(errors="replace"))


def cpu_flags_have_bf16(cpuinfo: str) -> bool:
    """Whether a ``/proc/cpuinfo`` text lists a flag of :data:`BF16_CPU_FLAGS` on its ``flags`` lines."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and BF16_CPU_FLAGS & set(value.split()):
            return True
    return False
