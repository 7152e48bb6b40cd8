import pytest
import torch

from segops.losses import build_loss


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
