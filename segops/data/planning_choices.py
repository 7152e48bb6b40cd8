"""What a plan is made of: a planned value with the fingerprint figure that chose it, and the
knobs of the planning rules (see :mod:`segops.data.planning`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal


@dataclass(frozen=True)
class Choice:
    """A planned value and the fingerprint figure that chose it (a YAML comment)."""

    value: Any
    why: str


@dataclass(frozen=True)
class PlanSettings:
    """Knobs of the rules: the time budget, and what the planning machine can hold."""

    budget_minutes: float = 10.0
    max_patch_side: int = 256
    base_channels: int = 16
    max_channels: int = 256
    workers: int = 2
    #: Published Mask R-CNN weights found in the torch hub cache (``segops plan`` looks; nothing is
    #: downloaded): ``coco`` (ResNet-50 FPN, COCO), ``imagenet`` (a ResNet-18 backbone), or None.
    maskrcnn_weights: Literal["coco", "imagenet"] | None = None
    #: Where they were looked for, for the comment of a from-scratch plan.
    weights_cache: str = ""

    def on_gpus(self, gpus: int) -> PlanSettings:
        """The knobs for a machine with ``gpus`` CUDA devices (as is with none): larger patches and a
        wider network, and one training worker per GPU (``segops.cluster.scaling``), so an epoch's
        time is spread over as many workers as will train it."""
        if gpus < 1:
            return self
        return replace(self, max_patch_side=512, base_channels=32, max_channels=512, workers=gpus)
