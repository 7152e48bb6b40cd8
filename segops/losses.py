"""Segmentation losses by name (MONAI implementations)."""

from __future__ import annotations

from monai.losses import DiceCELoss, DiceLoss
from torch import nn


def build_loss(name: str, batch_dice: bool = False, include_background: bool = True) -> nn.Module:
    """Loss over (N, K, H, W) logits and (N, 1, H, W) integer targets ((N, K, Z, H, W) in 3D).

    ``dice_ce``: soft Dice + cross-entropy (nnU-Net's default); ``dice``: soft Dice alone.
    Softmax is applied inside; targets are one-hot encoded inside.

    Args:
        batch_dice: one Dice over the whole batch (nnU-Net's ``batch_dice``) instead of one per
            patch. Per patch, a patch without foreground has a foreground Dice of ~0 whatever the
            prediction (0 / (predicted mass + 1e-5)): a constant without gradient, which only
            dilutes the mean, so the Dice gradient toward a defect in 1 patch of 8 is ~12x weaker
            (with the background term) than with one Dice over the batch.
        include_background: also average the background channel's Dice (nnU-Net: ``do_bg=False``).
            The background Dice is ~1 on every patch whatever the network does about defects.
    """
    common = {
        "to_onehot_y": True,
        "softmax": True,
        "include_background": include_background,
        "batch": batch_dice,
        "smooth_nr": 1e-5,
        "smooth_dr": 1e-5,
    }
    if name == "dice_ce":
        return DiceCELoss(squared_pred=False, **common)
    if name == "dice":
        return DiceLoss(**common)
    raise ValueError(f"unknown loss {name!r}; known: dice_ce, dice")
