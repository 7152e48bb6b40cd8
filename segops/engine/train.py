"""One epoch of training and one pass of validation (plain torch, no Ray).

The Ray Train worker loop in :mod:`segops.cluster.train` feeds these from its dataset shard;
tests call them directly on in-memory arrays.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from segops.config.schema import AugmentSpec, PreprocessSpec
from segops.data.augment import Augmenter
from segops.data.transforms import prepare_image, random_patch
from segops.engine.checkpoint import LoadedModel
from segops.engine.predict import autocast, predict_masks
from segops.metrics import case_scores


def training_batch(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    preprocess: PreprocessSpec,
    in_channels: int,
    rng: np.random.Generator,
    patches_per_image: int = 1,
    augmenter: Augmenter | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(image, label) pairs → augmented patch tensors.

    Patches are sampled with ``rng``, then augmented by ``augmenter`` (default: random flips
    and 90° rotations, seeded from ``rng``). A 3-size ``preprocess.patch_size`` means pairs
    of (C, Z, H, W) volumes and (Z, H, W) labels, and 3D patches.

    Returns:
        x: (N, in_channels, *patch_size) float32; y: (N, 1, *patch_size) int64 class indices.
    """
    dims = len(preprocess.patch_size)
    if augmenter is None:
        augmenter = Augmenter(AugmentSpec(), int(rng.integers(2**31)), spatial_dims=dims)
    xs, ys = [], []
    for image, label in pairs:
        prepared = prepare_image(image, preprocess.intensity, in_channels, spatial_dims=dims)
        for _ in range(patches_per_image):
            x, y = augmenter(*random_patch(prepared, label, preprocess.patch_size, rng))
            xs.append(x)
            ys.append(y)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)[:, None].astype(np.int64))


def train_steps(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    amp: bool = False,
) -> tuple[float, int]:
    """Run one optimisation step per batch (forward and loss under bf16 autocast when ``amp`` on CUDA).

    Returns:
        (sum of per-sample loss, number of samples), so callers can average across workers.
    """
    model.train()
    total, count = 0.0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(x)
        count += len(x)
    return total, count


def validation_dice(
    loaded: LoadedModel,
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    device: torch.device,
    amp: bool = False,
) -> tuple[float, int]:
    """Whole-image Dice on validation cases (per volume for a 3D model, through the 3D sliding
    window), exactly as the segment step computes it.

    Returns:
        (sum of per-case Dice, number of cases).
    """
    loaded.model.eval()
    total, count = 0.0, 0
    for image, label in pairs:
        (pred,) = predict_masks(loaded, [image], device, amp)
        total += case_scores(pred, label, loaded.model_spec.classes)["dice"]
        count += 1
    return total, count
