import pytest
import torch
from monai.losses import DiceCELoss, DiceLoss

from segops.config.sources import IGNORE_LABEL
from segops.errors import ShapeError
from segops.losses import DeepSupervisionLoss, build_loss, deep_supervision_weights


@pytest.mark.parametrize("name", ["dice_ce", "dice"])
def test_loss_is_low_for_perfect_logits_and_high_for_wrong(name: str) -> None:
    target = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    target[:, :, 2:6, 2:6] = 1
    onehot = torch.cat([1 - target, target], dim=1).float()
    loss = build_loss(name)
    perfect = loss(onehot * 20 - 10, target)
    wrong = loss((1 - onehot) * 20 - 10, target)
    assert perfect.item() < 0.01 < 0.9 < wrong.item()


def test_unknown_loss() -> None:
    with pytest.raises(ValueError, match="unknown loss 'focal'"):
        build_loss("focal")


@pytest.mark.parametrize(
    ("n", "weights"),
    [(1, [1.0]), (2, [1.0, 0.0]), (3, [1 / 1.5, 0.5 / 1.5, 0.0]), (4, [1 / 1.75, 0.5 / 1.75, 0.25 / 1.75, 0.0])],
)
def test_deep_supervision_weights_are_nnunets(n: int, weights: list[float]) -> None:
    assert deep_supervision_weights(n) == pytest.approx(weights)


def test_deep_supervision_loss_weights_each_output_against_the_full_size_target() -> None:
    gen = torch.Generator().manual_seed(0)
    stacked = torch.randn(2, 4, 3, 8, 8, generator=gen)  # (N, S, K, H, W)
    target = torch.randint(0, 3, (2, 1, 8, 8), generator=gen)
    loss = build_loss("dice_ce", supervised_outputs=4)
    base = build_loss("dice_ce")
    expected = sum(w * base(stacked[:, i], target) for i, w in enumerate([1, 0.5, 0.25, 0]))
    assert float(loss(stacked, target)) == pytest.approx(float(expected) / 1.75, rel=1e-6)
    assert float(loss(stacked[:, 0], target)) == pytest.approx(float(base(stacked[:, 0], target)))  # eval logits


def test_deep_supervision_loss_names_a_stack_of_the_wrong_depth() -> None:
    loss = build_loss("dice", supervised_outputs=4)
    with pytest.raises(ShapeError, match=r"logits of shape \(2, 3, 2, 8, 8\) .* and 4 outputs"):
        loss(torch.zeros(2, 3, 2, 8, 8), torch.zeros(2, 1, 8, 8, dtype=torch.long))


def test_a_single_output_builds_the_plain_loss() -> None:
    assert not isinstance(build_loss("dice_ce", supervised_outputs=1), DeepSupervisionLoss)


@pytest.mark.parametrize(("name", "batch_dice"), [("dice_ce", False), ("dice_ce", True), ("dice", False)])
def test_ignored_pixels_change_neither_the_loss_nor_its_gradient(name: str, batch_dice: bool) -> None:
    """ignore_void: target 255 pixels are left out. The loss over a target with an ignored band
    equals the MONAI loss over the same pixels with the band cut out, whatever the logits there."""
    torch.manual_seed(0)
    target = torch.zeros(2, 1, 8, 12, dtype=torch.long)
    target[:, :, 2:6, 2:6] = 1
    target[1, :, 1:7, 8:10] = 2
    ignored = target.clone()
    ignored[:, :, :, 10:] = IGNORE_LABEL  # a band of columns ignored
    logits = torch.randn(2, 3, 8, 12, requires_grad=True)
    loss = build_loss(name, batch_dice=batch_dice)
    value = loss(logits, ignored)
    value.backward()
    assert logits.grad[..., 10:].abs().max().item() == 0.0  # nothing flows from the ignored pixels
    assert logits.grad[..., :10].abs().max().item() > 0.0
    cut = build_loss(name, batch_dice=batch_dice)(logits.detach()[..., :10], target[..., :10])
    assert value.item() == pytest.approx(cut.item(), rel=1e-5)
    other = logits.detach().clone()
    other[..., 10:] = torch.randn(2, 3, 8, 2) * 10
    assert loss(other, ignored).item() == pytest.approx(value.item(), rel=1e-5)
    plain = build_loss(name, batch_dice=batch_dice)(logits.detach(), target)  # no ignored pixel: MONAI's loss itself
    monai = (DiceCELoss if name == "dice_ce" else DiceLoss)(
        to_onehot_y=True, softmax=True, batch=batch_dice, smooth_nr=1e-5, smooth_dr=1e-5
    )(logits.detach(), target)
    assert plain.item() == pytest.approx(monai.item(), rel=1e-6)


def test_a_patch_of_ignored_pixels_only_gives_zero_loss_with_a_gradient() -> None:
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    value = build_loss("dice_ce")(logits, torch.full((1, 1, 4, 4), IGNORE_LABEL))
    value.backward()
    assert value.item() == 0.0 and logits.grad is not None and not logits.grad.any()
