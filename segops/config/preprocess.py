"""How records become network input (intensity, patch size) and how training patches are augmented."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from segops.config.spec import Spec


class _Range(Spec):
    """A [lower, upper] intensity range; upper must exceed lower."""

    lower: float
    upper: float

    @model_validator(mode="after")
    def _ordered(self) -> _Range:
        if self.upper <= self.lower:
            raise ValueError(f"upper ({self.upper}) must be greater than lower ({self.lower})")
        return self


class WindowIntensity(_Range):
    """Clip to [lower, upper] (e.g. a CT window in HU) and scale to [0, 1]."""

    kind: Literal["window"]


class PercentileIntensity(_Range):
    """Per image: clip to the given percentiles and scale to [0, 1] (robust for photos, MR)."""

    kind: Literal["percentile"]
    lower: float = Field(default=0.5, ge=0, le=100)
    upper: float = Field(default=99.5, ge=0, le=100)


class ZScoreIntensity(Spec):
    """Per image: subtract the mean and divide by the standard deviation."""

    kind: Literal["zscore"]


IntensitySpec = Annotated[WindowIntensity | PercentileIntensity | ZScoreIntensity, Field(discriminator="kind")]


class PreprocessSpec(Spec):
    """How records become network input. Stored with the checkpoint so inference matches."""

    intensity: IntensitySpec = Field(default_factory=lambda: PercentileIntensity(kind="percentile"))
    patch_size: tuple[Annotated[int, Field(ge=1)], ...] = Field(
        default=(96, 96), min_length=2, max_length=3, description="(H, W) for 2D models, (Z, H, W) for 3D ones."
    )
    scale: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description="2D U-Net models: images are resized by this factor (area-averaged) before the network, in "
        "training and inference, and the class scores resized back (bilinear), so masks keep the input's size. "
        "For large photos whose structures are large: a 4000x3000 photo at 0.17 is 683x512, where a 256 px patch "
        "sees a lesion whole and an image takes 20 tiles instead of 700. Labels are resized by nearest neighbour.",
    )
    spacing: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]] | None = Field(
        default=None,
        description="2D U-Net models: the pixel spacing (row, column) in mm every image whose spacing is known is "
        "resampled to before the network, in training, validation and inference (nnU-Net's target spacing: a "
        "structure then spans the same pixels whatever scanner took it), and the class scores resized back, so "
        "masks keep the input's size; images of unknown spacing (photos) are taken as they are. Labels are "
        "resized by nearest neighbour. null: images at their own spacing.",
    )

    @model_validator(mode="after")
    def _one_resize(self) -> PreprocessSpec:
        if self.spacing is not None and self.scale != 1:
            raise ValueError("preprocess.spacing and preprocess.scale both resize images: set one of them")
        return self


class RotateAugment(Spec):
    """Rotation by a random angle in [-degrees, degrees] (bilinear image, nearest label, reflected borders)."""

    prob: float = Field(default=0.5, ge=0.0, le=1.0)
    degrees: float = Field(default=180.0, gt=0.0, le=180.0)


def _check_range(name: str, pair: tuple[float, float], zero_allowed: bool = False) -> None:
    """Raise unless ``pair`` is [low, high] with low <= high and low above 0 (or at least 0)."""
    low, high = pair
    if not (0 <= low if zero_allowed else 0 < low) or low > high:
        bound = "0 <=" if zero_allowed else "0 <"
        raise ValueError(f"{name} must be [low, high] with {bound} low <= high, got {list(pair)}")


class ElasticAugment(Spec):
    """Elastic deformation as in the U-Net paper: random displacements on a coarse grid of
    control points (``spacing`` px apart, Gaussian with a standard deviation drawn from
    ``magnitude`` px), interpolated bicubically to a smooth per-pixel field."""

    prob: float = Field(default=0.5, ge=0.0, le=1.0)
    spacing: int = Field(default=96, ge=4, description="Distance between control points, px.")
    magnitude: tuple[float, float] = Field(default=(0.0, 10.0), description="Range of the displacement std, px.")

    @model_validator(mode="after")
    def _ordered(self) -> ElasticAugment:
        _check_range("magnitude", self.magnitude, zero_allowed=True)
        return self


class ZoomAugment(Spec):
    """Scaling as nnU-Net augments: the patch's content zoomed by a random factor in ``range`` (one
    factor for every axis; above 1 magnifies), image bilinear, label nearest, borders reflected,
    the patch size kept. It teaches a network structures at sizes the training images do not show:
    the same organ under another scanner's pixel spacing, the same defect under another lens."""

    prob: float = Field(default=0.2, ge=0.0, le=1.0)
    range: tuple[float, float] = Field(default=(0.7, 1.4), description="Zoom factor range (nnU-Net's 0.7-1.4).")

    @model_validator(mode="after")
    def _range_ordered(self) -> ZoomAugment:
        _check_range("range", self.range)
        return self


class IntensityAugment(Spec):
    """Intensity jitter on the normalised image: x·(1+s), x+o and gamma, each with ``prob``."""

    prob: float = Field(default=0.5, ge=0.0, le=1.0)
    scale: float = Field(default=0.1, ge=0.0, lt=1.0, description="s ~ U(-scale, scale).")
    shift: float = Field(default=0.1, ge=0.0, description="o ~ U(-shift, shift).")
    gamma: tuple[float, float] = Field(default=(0.8, 1.25), description="Contrast gamma range (1 = off).")
    noise_std: float = Field(default=0.0, ge=0.0, description="Gaussian noise std (0 = off).")

    @model_validator(mode="after")
    def _gamma_ordered(self) -> IntensityAugment:
        _check_range("gamma", self.gamma)
        return self


class AugmentSpec(Spec):
    """Random augmentation of U-Net training patches.

    MONAI dictionary transforms, so image and label move together; applied in the Ray Train
    workers after patch sampling and seeded from the workflow seed and the worker's rank.
    ``flip`` and ``rotate90`` are on by default (lossless); ``rotate``, ``zoom``, ``elastic`` and
    ``intensity`` are off unless given (e.g. ``elastic: {}`` for the defaults).
    """

    flip: float = Field(default=0.5, ge=0.0, le=1.0, description="Probability of a flip, per axis.")
    rotate90: float = Field(default=0.75, ge=0.0, le=1.0, description="Probability of a 90/180/270° rotation.")
    rotate: RotateAugment | None = None
    zoom: ZoomAugment | None = None
    elastic: ElasticAugment | None = None
    intensity: IntensityAugment | None = None
