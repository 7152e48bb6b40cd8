"""Segmentation losses by name (MONAI implementations)."""

from __future__ import annotations

import torch
from monai.losses import DeepSupervisionLoss as _MonaiDeepSupervisionLoss
from monai.losses import DiceCELoss, DiceLoss
from torch import nn

from segops.config.sources import IGNORE_LABEL
from segops.errors import ShapeError


def deep_supervision_weights(n_outputs: int) -> list[float]:
    """nnU-Net's weights for ``n_outputs`` deep-supervision outputs, full resolution first:
    ``1 / 2**i``, the lowest-resolution output 0 (when there are several), normalised to sum 1.

    4 outputs: ``[1, 0.5, 0.25, 0] / 1.75``.
    """
    weights = [0.5**i for i in range(n_outputs)]
    if n_outputs > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


class DeepSupervisionLoss(nn.Module):
    """``base`` over a deeply supervised network's outputs, weighted by :func:`deep_supervision_weights`.

    Takes the (N, S, K, *spatial) stack a MONAI ``DynUNet`` returns in training mode (the S
    outputs already upsampled to the target's size, so the target is not downsampled), or
    plain (N, K, *spatial) logits (eval mode, validation), which get ``base`` alone. Every
    output enters the sum, the zero-weighted one too, so DistributedDataParallel sees a
    gradient (of zeros) for every head's parameters.
    """

    def __init__(self, base: nn.Module, n_outputs: int):
        super().__init__()
        self.n_outputs = n_outputs
        self.weights = deep_supervision_weights(n_outputs)
        self.stacked = _MonaiDeepSupervisionLoss(base, weights=self.weights)
        self.base = base

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits: (N, S, K, *spatial) or (N, K, *spatial); target: (N, 1, *spatial) class indices."""
        if logits.ndim == target.ndim:
            return self.base(logits.float(), target)
        if logits.ndim != target.ndim + 1 or logits.shape[1] != self.n_outputs:
            raise ShapeError(
                f"deep-supervision logits of shape {tuple(logits.shape)} do not fit a target of shape "
                f"{tuple(target.shape)} and {self.n_outputs} outputs: expected (N, {self.n_outputs}, K, "
                "*spatial) from a training-mode network, or (N, K, *spatial)"
            )
        return self.stacked(list(torch.unbind(logits, dim=1)), target)


class IgnoringLoss(nn.Module):
    """``base`` with the pixels whose target is :data:`~segops.config.sources.IGNORE_LABEL` left out
    (mask-png ``ignore_void``), as nnU-Net's ignore label and torchvision's ``ignore_index=255``.

    A batch without such pixels goes to ``base`` unchanged. Otherwise the soft Dice is taken over
    softmax probabilities and one-hot targets both zeroed on ignored pixels (the same MONAI Dice
    settings), plus, for ``dice_ce``, cross-entropy over the other pixels.
    """

    def __init__(self, base: nn.Module, dice: DiceLoss, with_ce: bool):
        super().__init__()
        self.base, self.dice, self.with_ce = base, dice, with_ce

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits: (N, K, *spatial); target: (N, 1, *spatial) class indices."""
        ignored = target == IGNORE_LABEL
        if not bool(ignored.any()):
            return self.base(logits, target)
        if bool(ignored.all()):
            return logits.sum() * 0.0  # nothing to learn from, but a gradient (of zeros) for DDP
        keep = (~ignored).to(logits.dtype)
        classes = target.masked_fill(ignored, 0).long()[:, 0]
        one_hot = torch.nn.functional.one_hot(classes, logits.shape[1]).movedim(-1, 1).to(logits.dtype)
        loss = self.dice(torch.softmax(logits, dim=1) * keep, one_hot * keep)
        if self.with_ce:
            loss = loss + torch.nn.functional.cross_entropy(logits, target[:, 0].long(), ignore_index=IGNORE_LABEL)
        return loss


def build_loss(
    name: str, batch_dice: bool = False, include_background: bool = True, supervised_outputs: int = 1
) -> nn.Module:
    """Loss over (N, K, H, W) logits and (N, 1, H, W) integer targets ((N, K, Z, H, W) in 3D).

    ``dice_ce``: soft Dice + cross-entropy (nnU-Net's default); ``dice``: soft Dice alone.
    Softmax is applied inside; targets are one-hot encoded inside; target pixels of
    :data:`~segops.config.sources.IGNORE_LABEL` are left out (:class:`IgnoringLoss`).

    Args:
        batch_dice: one Dice over the whole batch (nnU-Net's ``batch_dice``) instead of one per
            patch. Per patch, a patch without foreground has a foreground Dice of ~0 whatever the
            prediction (0 / (predicted mass + 1e-5)): a constant without gradient, which only
            dilutes the mean, so the Dice gradient toward a defect in 1 patch of 8 is ~12x weaker
            (with the background term) than with one Dice over the batch.
        include_background: also average the background channel's Dice (nnU-Net: ``do_bg=False``).
            The background Dice is ~1 on every patch whatever the network does about defects.
        supervised_outputs: outputs a deeply supervised network stacks in training mode
            (``model.supervised_outputs``); above 1 the loss is a :class:`DeepSupervisionLoss`.
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
        plain: nn.Module = DiceCELoss(squared_pred=False, **common)
    elif name == "dice":
        plain = DiceLoss(**common)
    else:
        raise ValueError(f"unknown loss {name!r}; known: dice_ce, dice")
    masked = DiceLoss(**(common | {"to_onehot_y": False, "softmax": False}))  # on probabilities, one-hot given
    base = IgnoringLoss(plain, masked, with_ce=name == "dice_ce")
    return DeepSupervisionLoss(base, supervised_outputs) if supervised_outputs > 1 else base
