"""Model specs, a discriminated union on ``arch``; :mod:`segops.models` builds the networks."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from segops.config.spec import Spec


class UNetSpec(Spec):
    """MONAI ``UNet`` for semantic segmentation. ``classes`` counts background.

    ``spatial_dims: 3`` builds a 3D U-Net that trains on random (Z, H, W) patches of the
    ingest step's volume records and segments whole volumes with a 3D sliding window.
    Checkpoints written before this field existed load as 2D.
    """

    arch: Literal["unet"]
    spatial_dims: Literal[2, 3] = Field(default=2, description="2: slices/images; 3: volumes (C, Z, H, W).")
    in_channels: int = Field(default=1, ge=1, le=4)
    classes: int = Field(default=2, ge=2)
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = Field(default=2, ge=0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)

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

    @property
    def task(self) -> Literal["semantic", "instance"]:
        return "semantic"


class MaskRCNNSpec(Spec):
    """torchvision Mask R-CNN for instance segmentation, built with ``weights=None``.

    ``classes`` counts background (torchvision's ``num_classes``). Grayscale inputs are
    repeated to the 3 channels the backbone expects. ``resnet18_fpn`` trains on a CPU; the
    ResNet-50 variants are torchvision's ``maskrcnn_resnet50_fpn`` / ``_v2``. Images are resized
    so the short side is ``min_size`` (long side at most ``max_size``). ``mask_dice_weight``
    adds a soft Dice term on positive RoIs' masks to the BCE mask loss (0: torchvision's loss).
    """

    arch: Literal["maskrcnn"]
    backbone: Literal["resnet18_fpn", "resnet50_fpn", "resnet50_fpn_v2"] = "resnet18_fpn"
    in_channels: int = Field(default=1, ge=1, le=3)
    classes: int = Field(default=2, ge=2)
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

    @model_validator(mode="after")
    def _sizes_ordered(self) -> MaskRCNNSpec:
        if self.max_size < self.min_size:
            raise ValueError(f"max_size ({self.max_size}) must be at least min_size ({self.min_size})")
        return self

    @property
    def size_divisor(self) -> int:
        return 1  # torchvision pads batches to its own divisor

    @property
    def spatial_dims(self) -> Literal[2]:
        return 2

    @property
    def task(self) -> Literal["semantic", "instance"]:
        return "instance"


ModelSpec = Annotated[UNetSpec | MaskRCNNSpec, Field(discriminator="arch")]
