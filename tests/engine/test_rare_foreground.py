"""Rare foreground: oversampling, the batch Dice loss, foreground-case validation Dice."""

import numpy as np
import pytest
import torch
from torch import nn

from segops.config.schema import AugmentSpec, PreprocessSpec, UNetSpec, WindowIntensity
from segops.data.augment import Augmenter
from segops.engine.checkpoint import LoadedModel
from segops.engine.train import (
    ForegroundReservoir,
    forced_foreground_count,
    select_metric,
    training_batch,
    validation_sums,
)
from segops.losses import build_loss

PRE = PreprocessSpec(intensity=WindowIntensity(kind="window", lower=0, upper=255), patch_size=(16, 16))


def _pair(fg: bool) -> tuple[np.ndarray, np.ndarray]:
    """64x64 image; with ``fg`` a 2x2 defect in the top-left corner, which a uniformly placed
    16 px patch covers with probability 1/49**2: a patch that shows it was centred on it."""
    image = np.full((1, 64, 64), 100, np.float32)
    label = np.zeros((64, 64), np.uint8)
    if fg:
        image[0, :2, :2], label[:2, :2] = 250, 1
    return image, label


def _fg_patches(y: torch.Tensor) -> int:
    return int((y.flatten(1).amax(dim=1) > 0).sum())


def _no_aug(seed: int) -> Augmenter:
    return Augmenter(AugmentSpec(flip=0.0, rotate90=0.0), seed, spatial_dims=2)


@pytest.mark.parametrize(
    ("n", "share", "expected"), [(8, 0.33, 3), (3, 0.33, 1), (1, 0.33, 1), (8, 0.0, 0), (4, 1.0, 4)]
)
def test_forced_count_is_a_floor_on_the_share(n: int, share: float, expected: int) -> None:
    assert forced_foreground_count(n, share) == expected


def test_oversampling_puts_its_share_of_foreground_patches_in_a_mostly_empty_batch() -> None:
    batch = [_pair(True)] + [_pair(False) for _ in range(7)]  # 1 of 8 images has foreground
    _, y = training_batch(batch, PRE, 1, np.random.default_rng(0), augmenter=_no_aug(0))
    assert _fg_patches(y) == 0  # without: only the one foreground image may be centred on it (p 0.5; seed 0 misses)
    _, y = training_batch(
        batch,
        PRE,
        1,
        np.random.default_rng(0),
        augmenter=_no_aug(0),
        foreground_oversample=0.5,
        reservoir=ForegroundReservoir(),
    )
    assert y.shape == (8, 1, 16, 16) and _fg_patches(y) == 4


def test_an_all_empty_batch_gets_foreground_from_the_reservoir() -> None:
    rng, reservoir = np.random.default_rng(1), ForegroundReservoir(capacity=4)
    training_batch(
        [_pair(True), _pair(False)], PRE, 1, rng, augmenter=_no_aug(1), foreground_oversample=0.33, reservoir=reservoir
    )
    assert len(reservoir) == 1
    empty = [_pair(False) for _ in range(8)]
    _, y = training_batch(
        empty, PRE, 1, rng, patches_per_image=2, augmenter=_no_aug(1), foreground_oversample=0.33, reservoir=reservoir
    )
    assert y.shape[0] == 16 and _fg_patches(y) == 6  # ceil(0.33 * 16)
    _, y = training_batch(empty, PRE, 1, rng, augmenter=_no_aug(1), foreground_oversample=0.33)
    assert _fg_patches(y) == 0  # no reservoir, no foreground to draw from


def test_reservoir_keeps_recent_foreground_pairs_within_its_bounds() -> None:
    reservoir = ForegroundReservoir(capacity=3, max_bytes=10**9)
    for k in range(5):
        image, label = _pair(True)
        reservoir.add(image + k, label)
        reservoir.add(*_pair(False))  # empty labels are not kept
    assert len(reservoir) == 3
    kept = sorted(float(reservoir.draw(np.random.default_rng(s))[0][0, 10, 10]) for s in range(40))
    assert set(kept) == {102.0, 103.0, 104.0}  # the three most recent
    small = ForegroundReservoir(capacity=100, max_bytes=3 * _pair(True)[0].nbytes)
    for _ in range(5):
        small.add(*_pair(True))
    assert len(small) == 2  # 2 pairs (images + labels) fit in the byte budget, 3 do not


def _collapsed_logits(n: int) -> torch.Tensor:
    """A network that predicts background everywhere (p(foreground) ~ 0.0025)."""
    logits = torch.zeros(n, 2, 16, 16)
    logits[:, 0] = 3.0
    logits[:, 1] = -3.0
    return logits.requires_grad_()


def _target(n_empty: int) -> torch.Tensor:
    """``n_empty`` patches without foreground, then one with a 4x4 defect."""
    target = torch.zeros(n_empty + 1, 1, 16, 16, dtype=torch.long)
    target[-1, 0, 6:10, 6:10] = 1
    return target


def test_batch_dice_without_background_pulls_a_collapsed_model_toward_foreground() -> None:
    target = _target(7)
    pulls = {}
    for name, kwargs in {"old": {}, "new": {"batch_dice": True, "include_background": False}}.items():
        logits = _collapsed_logits(8)
        build_loss("dice", **kwargs)(logits, target).backward()
        pulls[name] = -float(logits.grad[-1, 1, 6:10, 6:10].mean())  # > 0: raises the defect's foreground logit
        pulls[f"{name}_empty"] = float(logits.grad[:7, 1].abs().max())  # the empty patches' foreground logits
    # per patch with the background channel, the defect patch's foreground Dice is 1 of 16 averaged
    # terms (measured: 1.9e-5 vs 2.3e-4, x12); the 7 empty patches' terms are constants
    assert pulls["new"] > 10 * pulls["old"] > 0
    assert pulls["old_empty"] < 1e-6


class _Threshold(nn.Module):
    """Foreground where the normalised input exceeds ``level``: a fixed, known predictor."""

    def __init__(self, level: float):
        super().__init__()
        self.level = level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.level - x[:, :1], x[:, :1] - self.level], dim=1)


def test_validation_scores_foreground_cases_apart() -> None:
    spec = UNetSpec(arch="unet", channels=(4, 8), strides=(2,), num_res_units=0)
    pre = PreprocessSpec(intensity=WindowIntensity(kind="window", lower=0, upper=255), patch_size=(16, 16))
    blind = LoadedModel(_Threshold(2.0), spec, pre, {})  # never foreground
    cases = [_pair(False), _pair(False), _pair(False), _pair(True)]
    sums = validation_sums(blind, cases, torch.device("cpu"))
    assert (sums.dice_sum, sums.cases, sums.fg_dice_sum, sums.fg_cases) == (3.0, 4, 0.0, 1)
    seeing = validation_sums(LoadedModel(_Threshold(0.8), spec, pre, {}), cases, torch.device("cpu"))
    assert (seeing.dice_sum, seeing.fg_dice_sum, seeing.fg_cases) == (4.0, 1.0, 1)


def test_selection_uses_foreground_dice_when_most_validation_cases_are_empty() -> None:
    assert select_metric(cases=4, fg_cases=1) == "val_fg_dice"
    assert select_metric(cases=4, fg_cases=2) == "val_dice"  # half empty: not most
    assert select_metric(cases=4, fg_cases=0) == "val_dice"  # no foreground case to score
