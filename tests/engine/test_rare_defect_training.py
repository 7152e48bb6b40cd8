"""Training on rare defects without Ray: 70 % defect-free photos, defects of 0.2-24 % of the area."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segops.config.schema import AugmentSpec, PreprocessSpec, TrainStep, UNetSpec, WindowIntensity
from segops.data.augment import Augmenter
from segops.engine.checkpoint import LoadedModel
from segops.engine.train import ForegroundReservoir, train_steps, training_batch, validation_sums
from segops.losses import build_loss
from segops.models import build_model
from segops.synth import make_defect_archive

SPEC = UNetSpec(arch="unet", channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2)
PRE = PreprocessSpec(intensity=WindowIntensity(kind="window", lower=0, upper=255), patch_size=(48, 48))


def _pairs(root: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(1, H, W) float image and (H, W) {0, 1} label per photo; anti-aliased masks binarised at 128."""
    pairs = []
    for jpg in sorted(root.glob("*/part-*.jpg")):
        image = np.asarray(Image.open(jpg), np.float32)[None]
        pairs.append((image, (np.asarray(Image.open(jpg.with_suffix(".png"))) >= 128).astype(np.uint8)))
    return pairs


def _train(train: list, epochs: int, batch_dice: bool, include_background: bool, oversample: float) -> LoadedModel:
    """The train step's recipe: AdamW, polynomial decay, Dice+CE, 2 patches per image, batches of 8."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model(SPEC)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-5)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: (1 - e / epochs) ** 0.9)
    loss = build_loss("dice_ce", batch_dice=batch_dice, include_background=include_background)
    augmenter, reservoir = Augmenter(AugmentSpec(), 0, spatial_dims=2), ForegroundReservoir()
    for _ in range(epochs):
        order = rng.permutation(len(train))
        batches = (
            training_batch([train[i] for i in order[k : k + 8]], PRE, 1, rng, 2, augmenter, oversample, reservoir)
            for k in range(0, len(train), 8)
        )
        train_steps(model, batches, loss, optimizer, torch.device("cpu"))
        schedule.step()
    return LoadedModel(model, SPEC, PRE, {})


@pytest.mark.slow
def test_default_recipe_learns_rare_defects(tmp_path: Path) -> None:
    make_defect_archive(tmp_path / "train", count=40, seed=1, size=96)
    make_defect_archive(tmp_path / "val", count=40, seed=2, size=96)
    train, held_out = _pairs(tmp_path / "train"), _pairs(tmp_path / "val")
    assert sum(label.any() for _, label in train) == 14  # 26 of 40 defect-free
    defects = [pair for pair in held_out if pair[1].any()]
    step = TrainStep.model_validate({"step": "train", "model": {"arch": "unet"}})  # the default recipe
    assert step.foreground_oversample == 0.33
    loaded = _train(train, 40, step.batch_dice, step.dice_include_background, step.foreground_oversample)
    sums = validation_sums(loaded, defects, torch.device("cpu"))
    assert sums.fg_cases == 15 and sums.fg_dice_sum / sums.fg_cases >= 0.6
