"""Softmax ensembles and test-time mirroring as modules."""

import pytest
import torch
from torch import nn

from segops.engine.ensemble import MirroredModel, SoftmaxEnsemble, mirror_sets


class Pointwise(nn.Module):
    """A 1x1 convolution: equivariant to every flip."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, 3, 1)

    def forward(self, x):
        return self.conv(x)


class LeftBiased(nn.Module):
    """Adds a ramp along W: a flip changes its output, so mirroring must too."""

    def forward(self, x):
        ramp = torch.linspace(-3, 3, x.shape[-1]).expand_as(x)
        return torch.cat([x, x + ramp], dim=1)


def test_mirror_sets_are_every_subset():
    assert mirror_sets([0, 1]) == [(), (0,), (1,), (0, 1)]
    assert mirror_sets([]) == [()]


def test_mirroring_an_equivariant_model_equals_its_plain_softmax():
    model = Pointwise(0).eval()
    x = torch.randn(2, 1, 8, 6)
    plain = torch.softmax(model(x), 1)
    with torch.no_grad():
        mirrored = torch.softmax(MirroredModel(model, [0, 1])(x), 1)
    torch.testing.assert_close(mirrored, plain, atol=1e-6, rtol=1e-5)


def test_mirroring_a_non_equivariant_model_averages_its_mirror_images():
    model = LeftBiased()
    x = torch.zeros(1, 1, 4, 5)
    with torch.no_grad():
        out = torch.softmax(MirroredModel(model, [1])(x), 1)
    plain = torch.softmax(model(x), 1)
    flipped = torch.flip(torch.softmax(model(torch.flip(x, [3])), 1), [3])
    assert not torch.allclose(out, plain, atol=1e-3)
    torch.testing.assert_close(out, (plain + flipped) / 2)
    # the ramp cancels: every pixel gets the same mean probability
    torch.testing.assert_close(out[0, 1, 0], out[0, 1, 0, :1].expand(5))


def test_mirroring_3d_volumes_along_z():
    conv = nn.Conv3d(1, 2, 1)
    x = torch.randn(1, 1, 3, 4, 4)
    with torch.no_grad():
        out = torch.softmax(MirroredModel(conv, [0, 1, 2])(x), 1)
        torch.testing.assert_close(out, torch.softmax(conv(x), 1), atol=1e-6, rtol=1e-5)


def test_flip_axis_beyond_the_model_dims_is_an_error():
    with pytest.raises(ValueError, match="out of range"):
        MirroredModel(Pointwise(0), [2])(torch.zeros(1, 1, 4, 4))


def test_ensemble_is_the_mean_of_its_members_softmax():
    members = [Pointwise(0), Pointwise(1), Pointwise(2)]
    x = torch.randn(2, 1, 5, 5)
    with torch.no_grad():
        out = SoftmaxEnsemble(members)(x)
        expected = sum(torch.softmax(m(x), 1) for m in members) / 3
    torch.testing.assert_close(torch.softmax(out, 1), expected)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(2, 5, 5))  # already normalised log-probabilities


def test_ensemble_of_one_equals_the_member():
    m = Pointwise(3)
    x = torch.randn(1, 1, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(torch.softmax(SoftmaxEnsemble([m])(x), 1), torch.softmax(m(x), 1))
