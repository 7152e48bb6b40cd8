"""Segmentation losses by name (MONAI implementations)."""

from __future__ import annotations

from monai.losses import DiceCELoss, DiceLoss
from torch import nn


def build_loss(name: str) -> nn.Module:
    """Loss over (N, K, H, W) logits and (N, 1, H, W) integer targets.

    ``dice_ce``: soft Dice + cross-entropy (nnU-Net's default); ``dice``: soft Dice alone.
    Softmax is applied inside; targets are one-hot encoded inside.
    """
    if name == "dice_ce":
        return DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=False, smooth_nr=1e-5, smooth_dr=1e-5)
    if name == "dice":
        return DiceLoss(to_onehot_y=True, softmax=True, smooth_nr=1e-5, smooth_dr=1e-5)
    raise ValueError(f"unknown loss {name!r}; known: dice_ce, dice")
