"""A generated semantic set the engine tests train on: bright squares on noise, the label is the square."""

from __future__ import annotations

import numpy as np


def squares(n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (image (1, 36, 44) float32 with pixels about 0..255, label (36, 44) uint8) pairs."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        image = rng.normal(60, 20, (1, 36, 44)).astype(np.float32)
        label = np.zeros((36, 44), np.uint8)
        y, x, s = rng.integers(2, 20), rng.integers(2, 28), rng.integers(6, 14)
        image[0, y : y + s, x : x + s] += 120
        label[y : y + s, x : x + s] = 1
        pairs.append((image, label))
    return pairs
