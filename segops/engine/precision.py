"""Numeric precision of training and inference: mixed-precision autocast, shared by every engine loop."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def autocast(device: torch.device, amp: bool) -> AbstractContextManager:
    """bfloat16 autocast on CUDA when ``amp``; a no-op context elsewhere.

    bf16 keeps fp32's exponent range, so training needs no GradScaler (unlike fp16).
    """
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()
