"""Models that average softmax: an ensemble of fold models, and test-time mirroring.

Both are ``nn.Module`` s whose output is the *log* of the averaged class probabilities. A log
probability is a valid logit (``softmax(log p) == p`` when ``p`` sums to 1), so everything that
takes a network's logits — the argmax, MONAI's sliding window, the probabilities output, the
MLflow pyfunc — takes these unchanged, and the two compose: mirroring an ensemble averages over
every (fold, mirror) pair.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

#: Floor under averaged probabilities before the log, so an exact 0 stays finite.
_TINY = 1e-12


def _log_mean(probabilities: torch.Tensor, count: int) -> torch.Tensor:
    return torch.log(torch.clamp(probabilities / count, min=_TINY))


class SoftmaxEnsemble(nn.Module):
    """Mean of the members' softmax over the class axis (dim 1), returned as its log.

    Args:
        members: networks with the same input and output shapes (one per cross-validation fold).
    """

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for member in self.members:
            p = torch.softmax(member(x).float(), dim=1)
            total = p if total is None else total + p
        return _log_mean(total, len(self.members))


def mirror_sets(flip_axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of ``flip_axes`` (the empty one first): nnU-Net mirrors along each combination."""
    axes = tuple(flip_axes)
    return [combo for r in range(len(axes) + 1) for combo in itertools.combinations(axes, r)]


class MirroredModel(nn.Module):
    """Test-time mirroring: the mean softmax of ``model`` on the input and on its mirror images.

    Args:
        model: any network returning (N, C, *spatial) logits.
        flip_axes: spatial axes (0 = the first spatial axis: H in 2D, Z in 3D) to mirror along; every
            subset of them is one forward pass (2 ** len(flip_axes) in all).
    """

    def __init__(self, model: nn.Module, flip_axes: Sequence[int]):
        super().__init__()
        self.model = model
        self.flips = mirror_sets(flip_axes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x.ndim - 2
        bad = [a for combo in self.flips for a in combo if a >= spatial]
        if bad:
            raise ValueError(f"tta.flip_axes {sorted(set(bad))} out of range for {spatial} spatial dimension(s)")
        total = None
        for combo in self.flips:
            dims = [2 + a for a in combo]
            xin = torch.flip(x, dims) if dims else x
            out = self.model(xin).float()
            p = torch.softmax(torch.flip(out, dims) if dims else out, dim=1)
            total = p if total is None else total + p
        return _log_mean(total, len(self.flips))
