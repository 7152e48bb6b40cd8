"""Clipped optimiser steps: a non-finite step is skipped and left out of the loss, and an epoch
of only such steps is an error that says what to check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segops.config.schema import PreprocessSpec, UNetSpec, WindowIntensity
from segops.engine.optim import clipped_step
from segops.engine.train import train_steps, training_batch
from segops.errors import StepError
from segops.losses import build_loss
from segops.models import build_model

from .squares import squares

SPEC = UNetSpec(arch="unet", channels=(8, 16), strides=(2,), num_res_units=0)
PRE = PreprocessSpec(intensity=WindowIntensity(kind="window", lower=0, upper=255), patch_size=(32, 32))


def _batches(poisoned: set[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(0)
    data = squares(12, 1)
    batches = [training_batch(data[i : i + 4], PRE, 1, rng) for i in range(0, 12, 4)]
    return [(x.clone().fill_(float("nan")) if i in poisoned else x, y) for i, (x, y) in enumerate(batches)]


def test_a_nan_batch_is_skipped_and_the_weights_stay_finite() -> None:
    torch.manual_seed(0)
    model = build_model(SPEC)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    total, count = train_steps(model, _batches({1}), build_loss("dice_ce"), optimizer, torch.device("cpu"))
    assert count == 8 and np.isfinite(total)  # two of three batches of 4 stepped
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_an_epoch_of_only_non_finite_steps_says_what_to_check() -> None:
    model = build_model(SPEC)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with pytest.raises(StepError, match=r"non-finite loss or gradient.*lower train.learning_rate"):
        train_steps(model, _batches({0, 1, 2}), build_loss("dice_ce"), optimizer, torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # nothing written


def test_the_gradient_norm_is_clipped() -> None:
    layer = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(layer.parameters(), lr=1.0)
    (1000 * layer(torch.ones(1, 4))).sum().backward()
    assert clipped_step(layer, optimizer, max_norm=2.0)
    assert float(torch.linalg.vector_norm(torch.cat([p.grad.ravel() for p in layer.parameters()]))) == pytest.approx(
        2.0
    )
