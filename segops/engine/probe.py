"""One training step of a model on seeded random data: what the planner times and the memory probe measures."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from segops.config.schema import DynUNetSpec, ModelSpec
from segops.losses import build_loss
from segops.models.registry import build_model


def random_training_step(
    spec: ModelSpec, batch: int, size: Sequence[int], device: torch.device, seed: int = 0, objects: int = 1
) -> tuple[torch.nn.Module, Callable[[], None]]:
    """(model of ``spec`` in training mode on ``device``, a function doing one Adam step on it).

    Args:
        batch: samples per step.
        size: a semantic model's patch (H, W) or (Z, H, W); a Mask R-CNN's image (H, W), or one
            side (square images).
        objects: a Mask R-CNN image's objects (boxes and masks, on a grid): its mask head's work
            grows with the proposals that match one.
    """
    gen = torch.Generator().manual_seed(seed)
    model = build_model(spec).to(device)
    if spec.task == "instance":
        h, w = int(size[0]), int(size[-1])
        images = [torch.rand(spec.in_channels, h, w, generator=gen).to(device) for _ in range(batch)]
        target = {k: v.to(device) for k, v in _grid_objects(h, w, max(1, objects)).items()}
        targets = [target] * batch

        def loss() -> torch.Tensor:
            return sum(model(images, targets).values())
    else:
        outputs = spec.supervised_outputs if isinstance(spec, DynUNetSpec) else 1
        loss_fn = build_loss("dice_ce", supervised_outputs=outputs)
        x = torch.randn(batch, spec.in_channels, *size, generator=gen).to(device)
        y = torch.randint(0, spec.classes, (batch, 1, *size), generator=gen).to(device)

        def loss() -> torch.Tensor:
            return loss_fn(model(x), y)

    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return model, step


def _grid_objects(h: int, w: int, k: int) -> dict[str, torch.Tensor]:
    """``k`` square objects of class 1 on a grid over an ``h`` x ``w`` image: boxes, labels, masks."""
    cells = math.ceil(math.sqrt(k))
    step_y, step_x = h // cells, w // cells
    side = max(2, min(step_y, step_x) // 2)
    masks = torch.zeros(k, h, w, dtype=torch.uint8)
    boxes = []
    for i in range(k):
        y, x = (i // cells) * step_y + step_y // 4, (i % cells) * step_x + step_x // 4
        masks[i, y : y + side, x : x + side] = 1
        boxes.append([x, y, x + side, y + side])
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "labels": torch.ones(k, dtype=torch.int64),
        "masks": masks,
    }
