"""One optimiser step with the gradient norm clipped, skipped when the gradient is not finite.

nnU-Net clips the gradient norm at 12; torchvision's detection references train Mask R-CNN with
a short warm-up instead, and a clip of 10 keeps its early steps from jumping. A loss or gradient
that is NaN or infinite (an image holding NaN, a learning rate too high for the data) would write
NaN into every weight; the step is skipped instead, as AMP's gradient scaler does. The norm is
taken after DistributedDataParallel has averaged the gradients, so every worker skips the same
steps.
"""

from __future__ import annotations

import torch
from torch import nn

from segops.errors import StepError

#: nnU-Net's gradient-norm clip for segmentation networks.
MAX_GRAD_NORM = 12.0

DIVERGED = (
    "every training step of this epoch had a non-finite loss or gradient (NaN or inf), so no weight was "
    "updated: the images may hold NaN or inf values (a float TIFF with no-data pixels), or the learning "
    "rate is too high for this data; check the images, or lower train.learning_rate"
)


def clipped_step(model: nn.Module, optimizer: torch.optim.Optimizer, max_norm: float = MAX_GRAD_NORM) -> bool:
    """Clip the gradient norm to ``max_norm`` and step; skip (and clear the gradient) when the norm
    is not finite. Returns whether the step was taken."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    if not torch.isfinite(norm):
        optimizer.zero_grad(set_to_none=True)
        return False
    optimizer.step()
    return True


def check_progress(taken: int, steps: int) -> None:
    """Raise when an epoch ran steps and took none of them.

    Raises:
        StepError: :data:`DIVERGED`.
    """
    if steps and not taken:
        raise StepError(DIVERGED)
