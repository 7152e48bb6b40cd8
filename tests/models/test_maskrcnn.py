"""Mask R-CNN builds from its spec without downloads, and its Dice term is a clean add-on."""

import pytest
import torch
from monai.losses import DiceLoss
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

from segops.config.schema import MaskRCNNSpec
from segops.errors import ShapeError
from segops.models import build_model, known_archs
from segops.models.maskrcnn import IMAGE_MEAN, IMAGE_STD, DiceRoIHeads, soft_dice_loss

TINY = {"min_size": 64, "max_size": 64, "anchor_sizes": (8, 16, 32, 64, 128)}


def _tiny(model: torch.nn.Module) -> torch.nn.Module:
    """Sample 64 RoIs per image instead of 512: the box head's FC layers dominate CPU time."""
    model.roi_heads.fg_bg_sampler.batch_size_per_image = 64
    return model.train()


def _inputs(channels: int) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Two 64×64 images: one with a bright square (class 1), one with no instances."""
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(channels, 64, 64, generator=gen) * 0.2 for _ in range(2)]
    images[0][:, 10:30, 20:44] += 0.7
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 10:30, 20:44] = 1
    targets = [
        {"boxes": torch.tensor([[20.0, 10.0, 44.0, 30.0]]), "labels": torch.tensor([1]), "masks": masks},
        {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros(0, 64, 64, dtype=torch.uint8),
        },
    ]
    return images, targets


def _losses_and_grads(model, images, targets) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)  # RoI sampling draws from the global RNG
    losses = model(images, targets)
    sum(losses.values()).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads


@pytest.mark.parametrize(
    ("backbone", "stock"),
    [("resnet18_fpn", None), ("resnet50_fpn", maskrcnn_resnet50_fpn), ("resnet50_fpn_v2", maskrcnn_resnet50_fpn_v2)],
)
def test_every_backbone_builds_without_weights(backbone, stock) -> None:
    spec = MaskRCNNSpec(arch="maskrcnn", backbone=backbone, classes=3, aspect_ratios=(0.5, 1.0, 2.0))
    model = build_model(spec)
    n_params = sum(p.numel() for p in model.parameters())
    assert isinstance(model, MaskRCNN) and isinstance(model.roi_heads, DiceRoIHeads)
    if stock is None:
        assert 25e6 < n_params < 35e6  # ResNet-18 FPN: about 31 M, 2/3 of it the box head's FC layers
    else:  # exactly torchvision's layout, so a stock model loads our weights and vice versa
        reference = stock(weights=None, weights_backbone=None, num_classes=3)
        ours = {k: v.shape for k, v in model.state_dict().items()}
        assert ours == {k: v.shape for k, v in reference.state_dict().items()}


def test_spec_fields_reach_the_model() -> None:
    spec = MaskRCNNSpec(
        arch="maskrcnn",
        backbone="resnet50_fpn_v2",
        in_channels=2,
        classes=4,
        min_size=96,
        max_size=160,
        anchor_sizes=(4, 8, 16, 32, 64),
        aspect_ratios=(1.0, 2.0),
        score_threshold=0.3,
        detections_per_image=7,
        mask_dice_weight=0.5,
    )
    model = build_model(spec)
    assert "maskrcnn" in known_archs()
    assert model.rpn.anchor_generator.sizes == ((4,), (8,), (16,), (32,), (64,))
    assert model.rpn.anchor_generator.aspect_ratios == ((1.0, 2.0),) * 5
    assert model.rpn.head.cls_logits.out_channels == 2  # one per aspect ratio (v2's head is rebuilt)
    assert model.roi_heads.box_predictor.cls_score.out_features == 4
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 4
    assert (model.roi_heads.score_thresh, model.roi_heads.detections_per_img) == (0.3, 7)
    assert model.roi_heads.dice_weight == 0.5
    assert (model.transform.min_size, model.transform.max_size) == ((96,), 160)
    assert model.transform.image_mean == list(IMAGE_MEAN) and model.transform.image_std == list(IMAGE_STD)


def test_training_forward_reports_every_loss_for_gray_input() -> None:
    torch.manual_seed(0)
    model = _tiny(build_model(MaskRCNNSpec(arch="maskrcnn", in_channels=1, **TINY)))
    images, targets = _inputs(1)
    losses = model(images, targets)
    assert set(losses) == {
        "loss_classifier",
        "loss_box_reg",
        "loss_mask",
        "loss_mask_dice",
        "loss_objectness",
        "loss_rpn_box_reg",
    }
    assert all(torch.isfinite(v) for v in losses.values())
    assert 0 < losses["loss_mask_dice"] <= 1  # weight 1: a Dice loss
    assert model.roi_heads._samples is None and model.roi_heads._mask_logits is None  # nothing kept
    with pytest.raises(ShapeError, match=r"built for 1 input channel\(s\), got an image of shape \(3, 64, 64\)"):
        model([torch.zeros(3, 64, 64)], targets[1:])


def test_weight_zero_gives_stock_torchvision_losses_and_gradients() -> None:
    torch.manual_seed(0)
    ours = _tiny(build_model(MaskRCNNSpec(arch="maskrcnn", in_channels=3, mask_dice_weight=0.0, **TINY)))
    backbone = resnet_fpn_backbone(
        backbone_name="resnet18", weights=None, trainable_layers=5, norm_layer=torch.nn.BatchNorm2d
    )
    anchors = AnchorGenerator(tuple((s,) for s in TINY["anchor_sizes"]), ((0.5, 1.0, 2.0),) * 5)
    stock = MaskRCNN(
        backbone,
        num_classes=2,
        min_size=64,
        max_size=64,
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
        rpn_anchor_generator=anchors,
        box_score_thresh=0.5,
        box_detections_per_img=100,
    )
    stock.load_state_dict(ours.state_dict())  # strict: same keys and shapes
    _tiny(stock)
    images, targets = _inputs(3)
    our_losses, our_grads = _losses_and_grads(ours, images, targets)
    stock_losses, stock_grads = _losses_and_grads(stock, images, targets)
    assert set(our_losses) == set(stock_losses) and "loss_mask_dice" not in our_losses
    for name, value in stock_losses.items():
        torch.testing.assert_close(our_losses[name], value, rtol=0, atol=0)
    assert our_grads.keys() == stock_grads.keys()
    for name, grad in stock_grads.items():
        torch.testing.assert_close(our_grads[name], grad, rtol=0, atol=0, msg=name)


def test_dice_weight_changes_only_mask_branch_gradients() -> None:
    torch.manual_seed(0)
    with_dice = _tiny(build_model(MaskRCNNSpec(arch="maskrcnn", mask_dice_weight=2.0, **TINY)))
    without = _tiny(build_model(MaskRCNNSpec(arch="maskrcnn", mask_dice_weight=0.0, **TINY)))
    without.load_state_dict(with_dice.state_dict())
    images, targets = _inputs(1)
    losses_d, grads_d = _losses_and_grads(with_dice, images, targets)
    losses_0, grads_0 = _losses_and_grads(without, images, targets)
    for name, value in losses_0.items():  # the stock components are untouched
        torch.testing.assert_close(losses_d[name], value, rtol=0, atol=0)
    assert losses_d["loss_mask_dice"] > 0
    mask_logits = "roi_heads.mask_predictor.mask_fcn_logits.weight"
    assert (grads_d[mask_logits] - grads_0[mask_logits]).abs().max() > 1e-6
    for name in ("roi_heads.box_predictor.cls_score.weight", "roi_heads.box_head.fc7.weight"):
        torch.testing.assert_close(grads_d[name], grads_0[name], rtol=0, atol=0, msg=name)


def test_soft_dice_loss_matches_monai_and_its_limits() -> None:
    gen = torch.Generator().manual_seed(1)
    logits, targets = torch.randn(5, 28, 28, generator=gen), (torch.rand(5, 28, 28, generator=gen) > 0.5).float()
    monai = DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)(logits[:, None], targets[:, None])
    torch.testing.assert_close(soft_dice_loss(logits, targets), monai)
    assert soft_dice_loss(40 * (2 * targets - 1), targets) < 1e-4
    assert soft_dice_loss(-40 * (2 * targets - 1), targets) > 1 - 1e-4
    empty = torch.zeros(0, 28, 28, requires_grad=True)
    loss = soft_dice_loss(empty, torch.zeros(0, 28, 28))
    loss.backward()
    assert loss == 0 and empty.grad is not None
    with pytest.raises(ShapeError, match=r"equal shape \(N, M, M\)"):
        soft_dice_loss(logits, targets[:, :14])


def test_heads_hand_on_float32_under_bfloat16_autocast() -> None:
    """torchvision's box coder casts proposals to the dtype of the predicted offsets: in bfloat16 a
    box coordinate keeps 8 significant bits (4 px steps on a 1024 px photo). The heads' outputs are
    float32, so boxes, mask probabilities, scores and every loss are too while the convolutions run in
    bf16; the masks come out thresholded to bool as they are pasted."""
    model = _tiny(build_model(MaskRCNNSpec(arch="maskrcnn", in_channels=1, **TINY)))
    images, targets = _inputs(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(images, targets)
        model.eval()
        model.roi_heads.score_thresh = 0.0  # an untrained model: keep its detections
        with torch.inference_mode():
            detections = model(images)
    assert {k: v.dtype for k, v in losses.items()} == dict.fromkeys(losses, torch.float32)
    assert all(d["boxes"].dtype == d["scores"].dtype == torch.float32 for d in detections)
    assert all(d["masks"].dtype == torch.bool for d in detections)  # float32 probabilities, thresholded as pasted
    assert sum(len(d["boxes"]) for d in detections) > 0
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):  # the convolutions: bf16
        assert model.backbone(torch.zeros(1, 3, 64, 64))["0"].dtype == torch.bfloat16
