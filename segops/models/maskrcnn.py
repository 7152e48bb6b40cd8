"""torchvision Mask R-CNN for 2D instance segmentation, with a soft Dice term on the mask head.

The network is torchvision's, built with ``weights=None`` (nothing is downloaded; published
starting weights are loaded afterwards by :mod:`segops.models.weights`, into a network built as
torchvision builds a pretrained one: frozen batch norm, ``trainable_backbone_layers``, ImageNet
input statistics); three things are swapped in after the builder has run, each a small subclass
or a public part:

* the transform repeats 1 or 2 input channels to the 3 the ResNet stem takes, so callers pass
  records' own channels;
* the anchor generator has one size per FPN level from the spec;
* the RoI heads add ``loss_mask_dice`` (soft Dice on positive RoIs' masks) beside
  torchvision's BCE ``loss_mask``, without copying ``RoIHeads.forward``.

Under bfloat16 autocast (``amp``) the RPN head, box predictor and mask predictor hand their
outputs on in float32 (forward hooks, :func:`float32_heads`): torchvision's box coder casts
anchors and proposals to the dtype of the predicted offsets, so in bfloat16 every box coordinate
was rounded to bfloat16's 8 significant bits (2 px steps from 256 px, 4 px from 512: the boxes,
and the masks pasted into them, of a 1024 px photo moved by up to 4 px). The convolutions stay in
bfloat16; decoding, NMS, losses and mask pasting run in float32.

The state dict keys are exactly torchvision's, so a stock ``MaskRCNN`` loads our weights.
"""

from __future__ import annotations

import torch
from monai.losses import DiceLoss
from torch import nn
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn_v2
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.roi_heads import RoIHeads, paste_masks_in_image, project_masks_on_boxes
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops.misc import FrozenBatchNorm2d

from segops.config.schema import MaskRCNNSpec
from segops.errors import ShapeError

# Inputs arrive in about [0, 1] from segops' intensity step. With no pretrained weights there
# are no ImageNet statistics to match, so the transform only centres [0, 1] on zero at a
# unit-like scale ([-2, 2]), the same for every channel because gray is repeated. BatchNorm
# right after the stem absorbs any remaining offset and scale (z-scored inputs work too).
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.25, 0.25, 0.25)
#: What torchvision's COCO and ImageNet weights were trained on (``image_stats: imagenet``).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: ResNet stages from the last, as torchvision counts ``trainable_backbone_layers``.
_STAGES = ("layer4", "layer3", "layer2", "layer1", "conv1")

# MONAI's soft Dice with its default smoothing; sigmoid because mask logits are per class.
_DICE = DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)


def build_maskrcnn(spec: MaskRCNNSpec) -> nn.Module:
    """Untrained Mask R-CNN for ``spec``; ``model(images, targets)`` as in torchvision.

    Images are a list of (in_channels, H, W) float tensors in about [0, 1]. In training mode
    the model returns torchvision's loss dict, plus ``loss_mask_dice`` (already multiplied by
    ``spec.mask_dice_weight``) when that weight is > 0; with weight 0 the key is absent and
    the losses are exactly torchvision's. In eval mode it returns torchvision's detections
    (``boxes``, ``labels``, ``scores``, ``masks`` (N, 1, H, W) probabilities at input size).
    """
    anchors = AnchorGenerator(
        sizes=tuple((s,) for s in spec.anchor_sizes),
        aspect_ratios=(tuple(spec.aspect_ratios),) * len(spec.anchor_sizes),
    )
    model = _torchvision_maskrcnn(spec, anchors)
    _freeze_stages(model.backbone.body, _trainable_layers(spec))
    stats = (IMAGENET_MEAN, IMAGENET_STD) if spec.image_stats == "imagenet" else (IMAGE_MEAN, IMAGE_STD)
    model.transform = ChannelsTo3Transform(spec.in_channels, spec.min_size, spec.max_size, *stats, spec.mask_threshold)
    model.roi_heads = DiceRoIHeads.from_heads(model.roi_heads, spec.mask_dice_weight)
    float32_heads(model)
    return model


def float32_heads(model: MaskRCNN) -> None:
    """Make the RPN head, box predictor and mask predictor return float32 under autocast (module docstring)."""
    for head in (model.rpn.head, model.roi_heads.box_predictor, model.roi_heads.mask_predictor):
        head.register_forward_hook(_float32_outputs)


def _float32_outputs(module: nn.Module, args: tuple, output: object) -> object:
    """A forward hook: floating tensors of ``output`` (nested in tuples and lists) as float32."""
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() else output
    if isinstance(output, (tuple, list)):
        return type(output)(_float32_outputs(module, args, o) for o in output)
    return output


def _torchvision_maskrcnn(spec: MaskRCNNSpec, anchors: AnchorGenerator) -> MaskRCNN:
    inference = {
        "box_score_thresh": spec.score_threshold,
        "box_detections_per_img": spec.detections_per_image,
        "box_batch_size_per_image": spec.box_batch_size_per_image,
    }
    if spec.backbone in ("resnet18_fpn", "resnet50_fpn"):
        # BatchNorm, not resnet_fpn_backbone's default FrozenBatchNorm2d: frozen identity statistics
        # suit pretrained weights only; torchvision's builders make the same switch (with
        # FrozenBatchNorm2d the keys are the same less the num_batches_tracked counters).
        norm = FrozenBatchNorm2d if spec.pretrained else nn.BatchNorm2d
        backbone = resnet_fpn_backbone(
            backbone_name=spec.backbone.removesuffix("_fpn"), weights=None, trainable_layers=5, norm_layer=norm
        )
        return MaskRCNN(backbone, num_classes=spec.classes, rpn_anchor_generator=anchors, **inference)
    # v2 uses BatchNorm with or without pretrained weights (torchvision's builder)
    model = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=spec.classes, **inference)
    # The v2 builder fixes its anchors and 2-conv RPN head; swap both for ones sized by the spec.
    model.rpn.anchor_generator = anchors
    model.rpn.head = RPNHead(model.backbone.out_channels, anchors.num_anchors_per_location()[0], conv_depth=2)
    return model


def _trainable_layers(spec: MaskRCNNSpec) -> int:
    """torchvision's default: 3 stages with pretrained weights, all 5 without."""
    if spec.trainable_backbone_layers is not None:
        return spec.trainable_backbone_layers
    return 3 if spec.pretrained else 5


def _freeze_stages(body: nn.Module, trainable: int) -> None:
    """``requires_grad_(False)`` on the ResNet stages below the last ``trainable`` ones, as
    torchvision's ``_resnet_fpn_extractor`` does (the stem's ``bn1`` trains only with all 5)."""
    train = list(_STAGES[:trainable]) + (["bn1"] if trainable == 5 else [])
    for name, parameter in body.named_parameters():
        if not any(name.startswith(stage) for stage in train):
            parameter.requires_grad_(False)


class ChannelsTo3Transform(GeneralizedRCNNTransform):
    """torchvision's normalise/resize/batch step, after repeating channels cyclically to 3.

    One channel becomes (c0, c0, c0), two become (c0, c1, c0). Has no parameters, so the state
    dict is unchanged.
    """

    #: Detections whose masks are pasted onto the whole image at once, as float32: what an image of
    #: hundreds of objects (MoNuSeg's nuclei, 1000 px tiles) holds at a time beside its bool masks.
    PASTE_CHUNK = 32

    def __init__(
        self,
        in_channels: int,
        min_size: int,
        max_size: int,
        mean: tuple[float, ...] = IMAGE_MEAN,
        std: tuple[float, ...] = IMAGE_STD,
        mask_threshold: float = 0.5,
    ):
        super().__init__(min_size, max_size, list(mean), list(std))
        self.in_channels = in_channels
        self.mask_threshold = mask_threshold

    def postprocess(
        self,
        result: list[dict[str, torch.Tensor]],
        image_shapes: list[tuple[int, int]],
        original_image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, torch.Tensor]]:
        """torchvision's (boxes back to the input image's size, masks pasted into it), each mask
        thresholded at ``mask_threshold`` into bool as it is pasted, :data:`PASTE_CHUNK` at a time:
        (N, 1, H, W) bool, 1 byte per pixel and object where torchvision holds 4 for all at once
        (a 1000 px tile with 800 nuclei: 0.8 GB, not 3.2 GB before any thresholding)."""
        if self.training:
            return result
        for pred, size, original in zip(result, image_shapes, original_image_sizes):
            pred["boxes"] = boxes = resize_boxes(pred["boxes"], size, original)
            if "masks" in pred:
                masks, step = pred["masks"], self.PASTE_CHUNK
                pasted = [
                    paste_masks_in_image(masks[i : i + step], boxes[i : i + step], original) >= self.mask_threshold
                    for i in range(0, len(masks), step)
                ]
                empty = torch.zeros((0, 1, *original), dtype=torch.bool, device=masks.device)
                pred["masks"] = torch.cat(pasted) if pasted else empty
        return result

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[0] != self.in_channels:
            raise ShapeError(
                f"Mask R-CNN was built for {self.in_channels} input channel(s), got an image of shape "
                f"{tuple(image.shape)}; prepare images with segops.data.transforms.prepare_image"
            )
        if self.in_channels != 3:
            image = image[[i % self.in_channels for i in range(3)]]
        return super().normalize(image)


def soft_dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over masks of 1 - soft Dice(sigmoid(logits), targets), MONAI's smoothing (1e-5).

    Args:
        logits: (N, M, M) mask logits (one class per mask).
        targets: (N, M, M) targets in [0, 1] (torchvision's RoI-aligned masks are fractional).

    Returns:
        Scalar; 0 for perfect masks. ``logits.sum() * 0`` when N = 0, so the graph stays connected.
    """
    if logits.shape != targets.shape or logits.dim() != 3:
        raise ShapeError(
            f"expected logits and targets of equal shape (N, M, M), got {logits.shape} and {targets.shape}"
        )
    if logits.shape[0] == 0:
        return logits.sum() * 0
    return _DICE(logits.float()[:, None], targets.float()[:, None])


class DiceRoIHeads(RoIHeads):
    """torchvision's RoI heads plus ``loss_mask_dice`` = weight × soft Dice on positive RoIs.

    Two hooks, no copy of ``RoIHeads.forward``: :meth:`select_training_samples` keeps the
    sampled proposals and their matched ground truth, and a forward hook on ``mask_predictor``
    keeps the mask logits; after torchvision's forward the Dice term is computed from both,
    against the same targets torchvision's BCE uses (``project_masks_on_boxes``). Nothing is
    kept past one forward call. With weight 0 nothing is recorded and the losses are stock.
    """

    def __init__(self, dice_weight: float, **kwargs):
        super().__init__(**kwargs)
        self.dice_weight = float(dice_weight)
        self._samples: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]] | None = None
        self._mask_logits: torch.Tensor | None = None
        self.mask_predictor.register_forward_hook(self._keep_mask_logits)

    @classmethod
    def from_heads(cls, heads: RoIHeads, dice_weight: float) -> DiceRoIHeads:
        """The same submodules and settings as ``heads`` (as torchvision's builder made them)."""
        return cls(
            dice_weight,
            box_roi_pool=heads.box_roi_pool,
            box_head=heads.box_head,
            box_predictor=heads.box_predictor,
            fg_iou_thresh=heads.proposal_matcher.high_threshold,
            bg_iou_thresh=heads.proposal_matcher.low_threshold,
            batch_size_per_image=heads.fg_bg_sampler.batch_size_per_image,
            positive_fraction=heads.fg_bg_sampler.positive_fraction,
            bbox_reg_weights=heads.box_coder.weights,
            score_thresh=heads.score_thresh,
            nms_thresh=heads.nms_thresh,
            detections_per_img=heads.detections_per_img,
            mask_roi_pool=heads.mask_roi_pool,
            mask_head=heads.mask_head,
            mask_predictor=heads.mask_predictor,
        )

    def _recording(self) -> bool:
        return self.training and self.dice_weight > 0

    def select_training_samples(
        self, proposals: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        proposals, matched_idxs, labels, regression_targets = super().select_training_samples(proposals, targets)
        if self._recording():
            self._samples = (proposals, matched_idxs, labels)
        return proposals, matched_idxs, labels, regression_targets

    def _keep_mask_logits(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if self._recording():
            self._mask_logits = output

    def forward(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, torch.Tensor]] | None = None,
    ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        try:
            result, losses = super().forward(features, proposals, image_shapes, targets)
            if self._recording():
                losses["loss_mask_dice"] = self.dice_weight * self._dice(targets)
        finally:
            self._samples, self._mask_logits = None, None
        return result, losses

    def _dice(self, targets: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """Soft Dice of the ground-truth class's mask on each positive RoI, as torchvision's BCE pairs them."""
        if self._samples is None or self._mask_logits is None:
            raise RuntimeError(
                "DiceRoIHeads saw no sampled proposals or mask logits in this training forward; a mask_predictor "
                "replaced after building has no logits hook: build a new model for new classes instead"
            )
        proposals, matched_idxs, labels = self._samples
        logits = self._mask_logits
        size = logits.shape[-1]
        mask_targets, gt_labels = [], []
        for boxes, matched, sampled_labels, target in zip(proposals, matched_idxs, labels, targets):
            pos = torch.where(sampled_labels > 0)[0]
            mask_targets.append(project_masks_on_boxes(target["masks"], boxes[pos], matched[pos], size))
            gt_labels.append(target["labels"][matched[pos]])
        cls = torch.cat(gt_labels)
        return soft_dice_loss(logits[torch.arange(len(cls), device=cls.device), cls], torch.cat(mask_targets))
