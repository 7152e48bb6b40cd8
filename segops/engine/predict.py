"""Whole-image inference for 2D semantic segmentation (plain torch)."""

from __future__ import annotations

from collections import defaultdict
from contextlib import nullcontext

import numpy as np
import torch

from segops.data.transforms import pad_to_multiple, prepare_image
from segops.engine.checkpoint import LoadedModel


def predict_masks(
    loaded: LoadedModel,
    images: list[np.ndarray],
    device: str | torch.device = "cpu",
    amp: bool = False,
) -> list[np.ndarray]:
    """Segment raw record images.

    Args:
        images: each (C, H, W) float32 as decoded (before intensity normalisation).
        amp: autocast to bfloat16 on CUDA (ignored on CPU).

    Returns:
        One (H, W) uint8 class map per image, same order and size as the inputs.
    """
    spec, pre = loaded.model_spec, loaded.preprocess
    prepared = [pad_to_multiple(prepare_image(img, pre.intensity, spec.in_channels), spec.size_divisor) for img in images]
    by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, arr in enumerate(prepared):
        by_shape[arr.shape].append(i)  # batch only equal shapes together
    masks: list[np.ndarray | None] = [None] * len(images)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp and torch.device(device).type == "cuda" else nullcontext()
    with torch.inference_mode(), autocast:
        for indices in by_shape.values():
            batch = torch.from_numpy(np.stack([prepared[i] for i in indices])).to(device)
            labels = loaded.model(batch).argmax(dim=1).to(torch.uint8).cpu().numpy()
            for i, label in zip(indices, labels):
                h, w = images[i].shape[1:]
                masks[i] = label[:h, :w]
    return masks  # type: ignore[return-value]
