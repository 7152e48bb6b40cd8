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


def trained_on_squares(spec, preprocess, epochs: int = 40):
    """A model of ``spec`` trained in-process on :func:`squares` (16 pairs, 2 batches of 8 an epoch,
    Dice+CE, Adam 3e-3, seeded), in eval mode: a briefly trained model whose masks mean something."""
    import torch

    from segops.engine.train import train_steps, training_batch
    from segops.losses import build_loss
    from segops.models import build_model

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model(spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    data = squares(16, 1)
    for _ in range(epochs):
        batches = [training_batch(data[i : i + 8], preprocess, 1, rng) for i in range(0, 16, 8)]
        train_steps(model, batches, build_loss("dice_ce"), optimizer, torch.device("cpu"))
    return model.eval()
