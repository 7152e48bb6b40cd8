"""Model specs, a discriminated union on ``arch``; :mod:`segops.models` builds the networks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from segops.config.spec import Spec

#: Input channels a U-Net, DynUNet or smp network takes (gray, RGB, RGBA, or a volume case's channel files).
MAX_IN_CHANNELS = 4


class _SemanticSpec(Spec):
    """What every semantic (class map) model spec shares."""

    @property
    def supervised_outputs(self) -> int:
        """Outputs of the training-mode network (no deep supervision: 1)."""
        return 1

    @property
    def task(self) -> Literal["semantic", "instance"]:
        return "semantic"


class UNetSpec(_SemanticSpec):
    """MONAI ``UNet`` for semantic segmentation. ``classes`` counts background.

    ``spatial_dims: 3`` builds a 3D U-Net that trains on random (Z, H, W) patches of the
    ingest step's volume records and segments whole volumes with a 3D sliding window.
    Checkpoints written before this field existed load as 2D.
    """

    arch: Literal["unet"]
    spatial_dims: Literal[2, 3] = Field(default=2, description="2: slices/images; 3: volumes (C, Z, H, W).")
    in_channels: int = Field(default=1, ge=1, le=MAX_IN_CHANNELS)
    classes: int = Field(default=2, ge=2, le=255)  # 255 marks ignored pixels
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = Field(default=2, ge=0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    weights_path: Path | None = Field(
        default=None,
        description="Initial weights: a segops checkpoint (folder or model.pt), a torchvision or plain state_dict "
        "file; loaded non-strictly before training, with a report of missing, unexpected and mismatched keys.",
    )

    @model_validator(mode="after")
    def _strides_fit_channels(self) -> UNetSpec:
        if len(self.strides) != len(self.channels) - 1:
            raise ValueError(
                f"strides has {len(self.strides)} entries but channels has {len(self.channels)}; "
                "UNet needs len(strides) == len(channels) - 1"
            )
        return self

    @property
    def size_divisor(self) -> int:
        """Every spatial input size (height, width; depth in 3D) must be a multiple of this."""
        d = 1
        for s in self.strides:
            d *= s
        return d


_DYNUNET_DEFAULTS: dict[int, tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...]]] = {
    2: (((3, 3),) * 5, ((1, 1),) + ((2, 2),) * 4),
    3: (((3, 3, 3),) * 4, ((1, 1, 1),) + ((2, 2, 2),) * 3),
}
"""(kernels, strides) per ``spatial_dims`` when a workflow gives neither: 16 px / 8 voxel divisors."""


class DynUNetSpec(_SemanticSpec):
    """MONAI ``DynUNet`` (nnU-Net's network) for semantic segmentation. ``classes`` counts background.

    One ``kernels`` and one ``strides`` entry per level, each with one size per spatial axis
    (``(H, W)``, or ``(Z, H, W)`` with ``spatial_dims: 3``); the first stride is usually all 1,
    the others 1 or 2 per axis, so anisotropic data can pool along some axes only (as nnU-Net
    plans it). Without ``kernels`` and ``strides``, 2D has 5 levels of 3x3 kernels (patch sides
    multiples of 16) and 3D 4 levels of 3x3x3 (multiples of 8). ``filters`` (one per level)
    default to MONAI's ``min(32 * 2**i, 512)`` in 2D and ``min(32 * 2**i, 320)`` in 3D (nnU-Net).
    Instance norm and leaky ReLU, as in nnU-Net.

    With ``deep_supervision`` the network returns, in training mode only, the full-resolution
    logits and ``deep_supr_num`` upsampled lower-resolution ones stacked as (N, S, C, *spatial);
    the loss weights them as nnU-Net does (:class:`segops.losses.DeepSupervisionLoss`). In eval
    mode it returns plain (N, C, *spatial) logits. ``deep_supr_num`` defaults to levels - 2,
    the most MONAI allows (nnU-Net supervises every decoder level but the lowest).
    """

    arch: Literal["dynunet"]
    spatial_dims: Literal[2, 3] = Field(default=2, description="2: slices/images; 3: volumes (C, Z, H, W).")
    in_channels: int = Field(default=1, ge=1, le=MAX_IN_CHANNELS)
    classes: int = Field(default=2, ge=2, le=255)  # 255 marks ignored pixels
    kernels: tuple[tuple[Annotated[int, Field(ge=1)], ...], ...]
    strides: tuple[tuple[Literal[1, 2], ...], ...]
    filters: tuple[Annotated[int, Field(ge=1)], ...] | None = None
    deep_supervision: bool = True
    deep_supr_num: int = Field(ge=1)
    res_block: bool = False
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    weights_path: Path | None = Field(
        default=None,
        description="Initial weights: a segops checkpoint (folder or model.pt), a torchvision or plain state_dict "
        "file; loaded non-strictly before training, with a report of missing, unexpected and mismatched keys.",
    )

    @model_validator(mode="before")
    @classmethod
    def _defaults_for_dims(cls, data: Any) -> Any:
        """Fill ``kernels``/``strides`` for ``spatial_dims`` and ``deep_supr_num`` from the levels."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        dims = data.get("spatial_dims", 2)
        if dims in _DYNUNET_DEFAULTS and data.get("kernels") is None and data.get("strides") is None:
            data["kernels"], data["strides"] = _DYNUNET_DEFAULTS[dims]
        elif data.get("kernels") is None and isinstance(data.get("strides"), list | tuple):
            data["kernels"] = [[3] * len(s) if isinstance(s, list | tuple) else s for s in data["strides"]]
        if data.get("deep_supr_num") is None:
            levels = len(data.get("strides") or data.get("kernels") or ())
            data["deep_supr_num"] = max(1, levels - 2)
        return data

    @model_validator(mode="after")
    def _levels_fit(self) -> DynUNetSpec:
        levels, dims = len(self.strides), self.spatial_dims
        if len(self.kernels) != levels:
            raise ValueError(
                f"kernels has {len(self.kernels)} levels but strides has {levels}; "
                "give one kernel and one stride per level"
            )
        if levels < 3:
            raise ValueError(f"strides has {levels} levels; DynUNet needs at least 3 (input, one down, bottleneck)")
        for name, table in (("strides", self.strides), ("kernels", self.kernels)):
            for i, entry in enumerate(table):
                if len(entry) != dims:
                    raise ValueError(
                        f"{name}[{i}] {list(entry)} has {len(entry)} sizes but spatial_dims is {dims}: "
                        f"give {dims} per level ({'H, W' if dims == 2 else 'Z, H, W'})"
                    )
        even = [list(k) for k in self.kernels if any(s % 2 == 0 for s in k)]
        if even:
            raise ValueError(f"kernels {even} have even sizes; use odd kernel sizes (1, 3, 5)")
        if self.filters is not None and len(self.filters) != levels:
            raise ValueError(
                f"filters has {len(self.filters)} entries but there are {levels} levels; give one per level"
            )
        if self.deep_supervision and self.deep_supr_num > levels - 2:
            raise ValueError(
                f"deep_supr_num {self.deep_supr_num} is too large for {levels} levels: at most {levels - 2}"
            )
        return self

    @property
    def axis_divisors(self) -> tuple[int, ...]:
        """Per spatial axis, the product of that axis's strides: each input size must be a multiple."""
        return tuple(math.prod(s[axis] for s in self.strides) for axis in range(self.spatial_dims))

    @property
    def size_divisor(self) -> int:
        """A size that is a multiple of every axis divisor (strides are 1 or 2, so the largest)."""
        return max(self.axis_divisors)

    @property
    def supervised_outputs(self) -> int:
        """Outputs the training-mode network stacks on axis 1 (1 without deep supervision)."""
        return 1 + self.deep_supr_num if self.deep_supervision else 1


class MaskRCNNSpec(Spec):
    """torchvision Mask R-CNN for instance segmentation.

    ``classes`` counts background (torchvision's ``num_classes``). Grayscale inputs are
    repeated to the 3 channels the backbone expects. ``resnet18_fpn`` trains on a CPU; the
    ResNet-50 variants are torchvision's ``maskrcnn_resnet50_fpn`` / ``_v2``. Images are resized
    so the short side is ``min_size`` (long side at most ``max_size``). ``mask_dice_weight``
    adds a soft Dice term on positive RoIs' masks to the BCE mask loss (0: torchvision's loss).

    Starting weights (at most one; nothing is ever downloaded, see :mod:`segops.models.weights`):
    ``weights: coco`` (torchvision's COCO weights of the ResNet-50 variants, box and mask
    predictors replaced for ``classes``), ``backbone_weights: imagenet`` (torchvision's ImageNet
    ResNet-18/50), or ``weights_path`` (any local checkpoint or state dict). With ``weights`` or
    ``backbone_weights`` the network is built as torchvision builds a pretrained one: frozen
    batch norm (ResNet-50 v2: batch norm), inputs normalised with ImageNet statistics
    (``image_stats: imagenet``), ``trainable_backbone_layers`` 3 unless given.
    """

    arch: Literal["maskrcnn"]
    backbone: Literal["resnet18_fpn", "resnet50_fpn", "resnet50_fpn_v2"] = "resnet18_fpn"
    in_channels: int = Field(default=1, ge=1, le=3)
    # class maps are uint8, and an instance map's class << 16 | k stays exact in float32
    classes: int = Field(default=2, ge=2, le=255)
    min_size: int = Field(default=256, ge=32)
    max_size: int = Field(default=512, ge=32)
    anchor_sizes: tuple[int, int, int, int, int] = Field(
        default=(16, 32, 64, 128, 256), description="One anchor size per FPN level (5 levels)."
    )
    aspect_ratios: tuple[float, ...] = Field(default=(0.5, 1.0, 2.0), min_length=1)
    box_batch_size_per_image: int = Field(
        default=512,
        ge=16,
        description="RoIs sampled per image for the box and mask heads in training (torchvision: 512); "
        "fewer is much cheaper on a CPU when images hold few objects.",
    )
    score_threshold: float = Field(default=0.5, ge=0.0, le=1.0, description="Detections below are dropped.")
    mask_threshold: float = Field(default=0.5, gt=0.0, lt=1.0, description="Mask probability → binary mask.")
    mask_nms_threshold: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="Class-agnostic NMS on masks after torchvision's per-class box NMS: a detection "
        "whose mask has IoU above this with a higher-scoring one is dropped (1: off).",
    )
    detections_per_image: int = Field(default=100, ge=1)
    mask_dice_weight: float = Field(default=1.0, ge=0.0)
    weights: Literal["coco"] | None = Field(
        default=None, description="coco: torchvision's DEFAULT COCO weights (resnet50_fpn, resnet50_fpn_v2)."
    )
    backbone_weights: Literal["imagenet"] | None = Field(
        default=None, description="imagenet: torchvision's ImageNet weights of the ResNet backbone only."
    )
    weights_path: Path | None = Field(
        default=None,
        description="Initial weights: a torchvision, segops (folder or model.pt) or plain state_dict checkpoint, "
        "loaded non-strictly with a report of missing, unexpected and shape-mismatched keys.",
    )
    trainable_backbone_layers: int | None = Field(
        default=None,
        ge=0,
        le=5,
        description="ResNet stages trained, from the last (torchvision's): 5 all, 0 none; default 3 with "
        "weights/backbone_weights, else 5.",
    )
    image_stats: Literal["unit", "imagenet"] = Field(
        description="Input normalisation after the intensity step: unit (mean 0.5, std 0.25) or ImageNet's "
        "mean and std (what COCO and ImageNet weights expect); default imagenet with weights/backbone_weights."
    )

    @model_validator(mode="before")
    @classmethod
    def _default_image_stats(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("image_stats") is None:
            pretrained = data.get("weights") is not None or data.get("backbone_weights") is not None
            data = dict(data) | {"image_stats": "imagenet" if pretrained else "unit"}
        return data

    @model_validator(mode="after")
    def _sizes_ordered(self) -> MaskRCNNSpec:
        if self.max_size < self.min_size:
            raise ValueError(f"max_size ({self.max_size}) must be at least min_size ({self.min_size})")
        return self

    @model_validator(mode="after")
    def _one_weights_source(self) -> MaskRCNNSpec:
        given = [n for n in ("weights", "backbone_weights", "weights_path") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(given)} are both set; give one source of starting weights")
        if self.weights == "coco" and self.backbone == "resnet18_fpn":
            raise ValueError(
                "weights: coco exists for backbone resnet50_fpn and resnet50_fpn_v2 (torchvision publishes no COCO "
                "Mask R-CNN with ResNet-18); for resnet18_fpn use backbone_weights: imagenet"
            )
        return self

    @property
    def pretrained(self) -> bool:
        """Published weights (COCO or an ImageNet backbone) are loaded before training."""
        return self.weights is not None or self.backbone_weights is not None

    @property
    def size_divisor(self) -> int:
        return 1  # torchvision pads batches to its own divisor

    @property
    def spatial_dims(self) -> Literal[2]:
        return 2

    @property
    def task(self) -> Literal["semantic", "instance"]:
        return "instance"


class SmpSpec(_SemanticSpec):
    """segmentation_models_pytorch encoder–decoder for 2D semantic segmentation. ``classes`` counts background.

    ``decoder`` picks smp's ``Unet``, ``UnetPlusPlus``, ``FPN`` or ``DeepLabV3Plus``; ``encoder`` a
    ResNet. ``encoder_weights: imagenet`` starts the encoder from torchvision's ImageNet weights
    (from the local torch hub cache or smp's Hugging Face cache; nothing is downloaded, see
    :mod:`segops.models.weights`); ``weights_path`` starts the whole network from a local file
    instead. Other channel counts than 3 adapt the first convolution as smp does (1 channel: the
    sum of the RGB filters). Inputs (in about [0, 1] after the intensity step) are normalised
    with ImageNet statistics inside the network. Height and width must be multiples of 32.
    """

    arch: Literal["smp"]
    decoder: Literal["unet", "unetplusplus", "fpn", "deeplabv3plus"] = "unet"
    encoder: Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"] = "resnet34"
    encoder_weights: Literal["imagenet"] | None = None
    weights_path: Path | None = Field(
        default=None,
        description="Initial weights for the whole network (an smp, segops or plain state_dict file), loaded "
        "non-strictly with a report of missing, unexpected and shape-mismatched keys.",
    )
    in_channels: int = Field(default=1, ge=1, le=MAX_IN_CHANNELS)
    classes: int = Field(default=2, ge=2, le=255)  # 255 marks ignored pixels
    spatial_dims: int = Field(default=2, description="2 only: smp networks are 2D.")

    @model_validator(mode="after")
    def _two_d_one_source(self) -> SmpSpec:
        if self.spatial_dims != 2:
            raise ValueError(
                f"spatial_dims {self.spatial_dims}: arch smp is 2D only; for volumes use arch unet or dynunet "
                "with spatial_dims: 3 (a 2D smp model segments volume records slice by slice)"
            )
        if self.encoder_weights is not None and self.weights_path is not None:
            raise ValueError("encoder_weights and weights_path are both set; give one source of starting weights")
        return self

    @property
    def size_divisor(self) -> int:
        """Height and width must be multiples of the encoder's output stride."""
        return 32


ModelSpec = Annotated[UNetSpec | DynUNetSpec | MaskRCNNSpec | SmpSpec, Field(discriminator="arch")]

#: Where each arch keeps the part fine-tuning treats as the backbone (``train.freeze_backbone_epochs``,
#: ``train.backbone_lr_mult``); archs not listed have none.
BACKBONE_MODULES: dict[str, str] = {"maskrcnn": "backbone", "smp": "encoder"}
