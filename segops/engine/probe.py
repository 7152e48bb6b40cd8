"""One training step of a model on seeded random data: what the planner times and the memory probe measures."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from segops.config.schema import DynUNetSpec, ModelSpec
from segops.losses import build_loss
from segops.models.registry import build_model


def random_training_step(
    spec: ModelSpec, batch: int, size: Sequence[int], device: torch.device, seed: int = 0
) -> tuple[torch.nn.Module, Callable[[], None]]:
    """(model of ``spec`` in training mode on ``device``, a function doing one Adam step on it).

    Args:
        batch: samples per step.
        size: a semantic model's patch (H, W) or (Z, H, W); a Mask R-CNN's image side (one value:
            square images, one box and mask each).
    """
    gen = torch.Generator().manual_seed(seed)
    model = build_model(spec).to(device)
    if spec.task == "instance":
        side = int(size[0])
        images = [torch.rand(spec.in_channels, side, side, generator=gen).to(device) for _ in range(batch)]
        mask = torch.zeros(1, side, side, dtype=torch.uint8)
        mask[:, side // 4 : side // 2, side // 4 : side // 2] = 1
        box = torch.tensor([[side / 4, side / 4, side / 2, side / 2]])
        targets = [
            {"boxes": box.to(device), "labels": torch.ones(1, dtype=torch.int64).to(device), "masks": mask.to(device)}
            for _ in range(batch)
        ]

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
