import pytest
import torch

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
