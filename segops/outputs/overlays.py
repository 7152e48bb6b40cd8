"""Overlay images for humans: prediction in red, ground-truth outline in green."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def overlay_rgb(image01: np.ndarray, pred: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    """Blend a mask over a gray image.

    Args:
        image01: (H, W) float in [0, 1].
        pred: (H, W) class map; non-zero pixels are tinted red.
        truth: optional (H, W) class map, drawn as a green outline.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    gray = np.clip(image01, 0, 1)
    rgb = np.stack([gray, gray, gray], axis=-1)
    fg = pred > 0
    rgb[fg] = 0.55 * rgb[fg] + 0.45 * np.array([1.0, 0.1, 0.1])
    if truth is not None:
        t = truth > 0
        edge = t & ~ndimage.binary_erosion(t)
        rgb[edge] = np.array([0.1, 1.0, 0.1])
    return (rgb * 255).round().astype(np.uint8)
