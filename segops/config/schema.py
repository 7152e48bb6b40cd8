"""Workflow specs: pydantic v2 models, frozen, unknown keys rejected.

A workflow is a name, tracking and cluster settings, and an ordered list of steps. Every
polymorphic part (step, source, labels, model, intensity) is a discriminated union on a
literal tag, so an unknown tag is reported as ``'<tag>' is not one of <known tags>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Spec(BaseModel):
    """Base for all specs: immutable, and unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- tracking / cluster


class TrackingSpec(Spec):
    """Where MLflow records the run. Any MLflow tracking URI works (sqlite file, http server)."""

    uri: str = Field(
        default="sqlite:///mlruns.db",
        description="MLflow tracking URI; MLFLOW_TRACKING_URI in the environment wins over it.",
    )
    experiment: str = "segops"
    artifact_location: str | None = Field(
        default=None,
        description="Artifact root for a new experiment; default: 'mlartifacts' beside a sqlite file.",
    )
    registered_model: str | None = Field(
        default=None, description="Registry name for trained models; default: '<workflow name>-<arch>'."
    )


class ClusterSpec(Spec):
    """Which Ray cluster runs the work. ``RAY_ADDRESS`` in the environment wins over ``address``."""

    address: str | None = None
    num_cpus: int | None = Field(default=None, ge=1, description="Local cluster only.")
    data_memory_gb: float | None = Field(
        default=None,
        gt=0,
        description="Object-store budget of Ray Data pipelines in this driver (blocks in flight); null: segment "
        "pipelines keep 0.25 GiB per inference actor (at least 0.5 GiB), others use Ray's default.",
    )
    storage: str | None = Field(
        default=None,
        description="Where the nodes write, under <storage>/<run-id>/: Ray Train checkpoints, and segment steps' "
        "masks, DICOM SEGs, NIfTI, COCO files and result parts. A path every node sees (NFS) or a URI pyarrow.fs "
        "opens (s3://bucket/prefix, with ?endpoint_override=host:port&scheme=http for S3-compatible stores; "
        "credentials from the AWS_* environment). Default: the run folder. A multi-node cluster needs shared "
        "storage here.",
    )


# --------------------------------------------------------------------------- sources


class MaskPngLabels(Spec):
    """One mask image per input, found by the input's relative path.

    ``pattern`` is formatted with ``rel_dir``, ``stem`` and ``rel_stem`` (relative path without
    suffix) of the input, e.g. ``{rel_stem}.png`` or ``{rel_dir}/{stem}_mask.png``.
    Pixel values are class indices; a binary mask stored as 0/255 is read as 0/1. ``values``
    maps stored values to classes instead, e.g. ``{0: 1, 255: 0}`` where black marks the
    structure (ISBI 2012 membranes); then every stored value must be listed. ``threshold: T``
    binarises instead: stored value >= T is foreground (1), else 0, for anti-aliased, resized
    or JPEG-compressed masks whose edges hold values between 0 and 255.
    """

    kind: Literal["mask-png"]
    path: Path
    pattern: str = "{rel_stem}.png"
    values: dict[Annotated[int, Field(ge=0, le=65535)], Annotated[int, Field(ge=0, le=255)]] | None = None
    threshold: int | None = Field(
        default=None, ge=1, le=65535, description="Stored value >= threshold is class 1, else 0 (e.g. 128)."
    )

    @model_validator(mode="after")
    def _threshold_or_values(self) -> MaskPngLabels:
        if self.threshold is not None and self.values is not None:
            raise ValueError(
                f"threshold ({self.threshold}) and values ({self.values}) are both given; threshold binarises "
                "(stored >= threshold → 1) and values maps each stored value: keep one of them"
            )
        return self


class DicomSegLabels(Spec):
    """A folder of DICOM SEG objects; frames are matched to images by referenced SOP Instance UID.

    The label value of a pixel is its segment number (1..S), or ``segments[number]`` if given.
    """

    kind: Literal["dicom-seg"]
    path: Path
    segments: dict[int, int] | None = None


class CocoLabels(Spec):
    """A COCO JSON file of instance annotations (polygons or RLE).

    Images are matched by ``file_name`` (relative path, else base name). The class of an
    annotation is ``categories[category_id]``, by default the category's rank among the file's
    categories (1..K). Rasterised to a class map, or with ``instances: true`` to an instance
    label map (see :mod:`segops.data.instances`) for instance models.
    """

    kind: Literal["coco"]
    path: Path
    categories: dict[int, Annotated[int, Field(ge=0, le=255)]] | None = None
    instances: bool = Field(default=False, description="Keep instances apart (for arch: maskrcnn).")


class InstancePngLabels(Spec):
    """Instance-id mask images (0 = background, k = instance k), found by ``pattern`` as in mask-png.

    Every instance has class ``class_id``; with ``classes_pattern``, a class-index mask found
    by that pattern gives each instance the most frequent class under its pixels.
    """

    kind: Literal["instance-png"]
    path: Path
    pattern: str = "{rel_stem}.png"
    classes_pattern: str | None = None
    class_id: int = Field(default=1, ge=1, le=255)


LabelsSpec = Annotated[MaskPngLabels | DicomSegLabels | CocoLabels | InstancePngLabels, Field(discriminator="kind")]


_INCLUDE_HELP = (
    "Glob patterns on the path relative to the source folder (POSIX; '*' and '?' within one folder name, "
    "'**' for any number of folders, e.g. 'good/**', '**/*.jpg'); when given, only matching files are read."
)
_EXCLUDE_HELP = "Glob patterns as for include; a matching file is never read (e.g. '**/README*', '**/DICOMDIR')."


def _check_globs(include: tuple[str, ...], exclude: tuple[str, ...]) -> None:
    for name, patterns in (("include", include), ("exclude", exclude)):
        for pattern in patterns:
            if not pattern or pattern.startswith("/") or "\\" in pattern:
                raise ValueError(
                    f"{name} pattern {pattern!r} is not a relative POSIX glob; patterns match paths relative to the "
                    "source folder with '/' between folders, e.g. 'good/**' or '**/README*'"
                )


class _FileSelection(Spec):
    """``include`` / ``exclude`` globs of a folder source (see :mod:`segops.data.globs`)."""

    include: tuple[str, ...] = Field(default=(), description=_INCLUDE_HELP)
    exclude: tuple[str, ...] = Field(default=(), description=_EXCLUDE_HELP)

    @model_validator(mode="after")
    def _globs_relative(self) -> _FileSelection:
        _check_globs(self.include, self.exclude)
        return self


class DicomSource(_FileSelection):
    """A folder of DICOM files (any depth). Files need not end in ``.dcm``.

    A file is read when its suffix is in ``extensions``, it matches an ``include`` pattern (when
    any are given) and no ``exclude`` pattern; hidden files and folders are never read.
    """

    kind: Literal["dicom"]
    path: Path
    labels: LabelsSpec | None = None
    extensions: tuple[str, ...] = (".dcm", "")


class ImageSource(_FileSelection):
    """A folder of inspection images (PNG, TIFF, JPEG, BMP), any depth.

    Files are selected as for :class:`DicomSource`. Mask images stored beside their images
    (``labels`` of kind mask-png / instance-png whose folder is the source folder or inside it)
    are never read as images: a file that ``labels.pattern`` names for another listed image is
    left out of the listing.
    """

    kind: Literal["images"]
    path: Path
    labels: LabelsSpec | None = None
    extensions: tuple[str, ...] = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


class DatasetSource(Spec):
    """The Parquet dataset an ingest step wrote (``runs/<run>/dataset``): decoded once, read many times."""

    kind: Literal["dataset"]
    path: Path


SourceSpec = Annotated[DicomSource | ImageSource, Field(discriminator="kind")]
SegmentSourceSpec = Annotated[DicomSource | ImageSource | DatasetSource, Field(discriminator="kind")]


# --------------------------------------------------------------------------- models


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


# --------------------------------------------------------------------------- preprocessing


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


class RotateAugment(Spec):
    """Rotation by a random angle in [-degrees, degrees] (bilinear image, nearest label, reflected borders)."""

    prob: float = Field(default=0.5, ge=0.0, le=1.0)
    degrees: float = Field(default=180.0, gt=0.0, le=180.0)


class ElasticAugment(Spec):
    """Elastic deformation as in the U-Net paper: random displacements on a coarse grid of
    control points (``spacing`` px apart, Gaussian with a standard deviation drawn from
    ``magnitude`` px), interpolated bicubically to a smooth per-pixel field."""

    prob: float = Field(default=0.5, ge=0.0, le=1.0)
    spacing: int = Field(default=96, ge=4, description="Distance between control points, px.")
    magnitude: tuple[float, float] = Field(default=(0.0, 10.0), description="Range of the displacement std, px.")

    @model_validator(mode="after")
    def _ordered(self) -> ElasticAugment:
        low, high = self.magnitude
        if not 0 <= low <= high:
            raise ValueError(f"magnitude must be [low, high] with 0 <= low <= high, got {list(self.magnitude)}")
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
        low, high = self.gamma
        if not 0 < low <= high:
            raise ValueError(f"gamma must be [low, high] with 0 < low <= high, got {list(self.gamma)}")
        return self


class AugmentSpec(Spec):
    """Random augmentation of U-Net training patches.

    MONAI dictionary transforms, so image and label move together; applied in the Ray Train
    workers after patch sampling and seeded from the workflow seed and the worker's rank.
    ``flip`` and ``rotate90`` are on by default (lossless); ``rotate``, ``elastic`` and
    ``intensity`` are off unless given (e.g. ``elastic: {}`` for the defaults).
    """

    flip: float = Field(default=0.5, ge=0.0, le=1.0, description="Probability of a flip, per axis.")
    rotate90: float = Field(default=0.75, ge=0.0, le=1.0, description="Probability of a 90/180/270° rotation.")
    rotate: RotateAugment | None = None
    elastic: ElasticAugment | None = None
    intensity: IntensityAugment | None = None


# --------------------------------------------------------------------------- steps


class ScalingSpec(Spec):
    """Ray Train workers. ``use_gpu: auto`` uses GPUs when the cluster has them."""

    workers: int = Field(default=2, ge=1)
    use_gpu: bool | Literal["auto"] = "auto"
    cpus_per_worker: float | None = Field(
        default=None, gt=0, description="Default: sized from the cluster, leaving a CPU for Ray Data."
    )


class SplitSpec(Spec):
    """Train/validation split by group (DICOM series, or image file), deterministic by seed."""

    val_fraction: float = Field(default=0.25, gt=0.0, lt=1.0)
    seed: int = 0


class IngestStep(Spec):
    """Decode a source into an Arrow/Parquet dataset of records, with a quarantine table.

    ``volumes: true`` also writes a dataset of 3D volume records, one per DICOM series whose
    geometry is regular (ordered along the slice normal, no gaps); 2D slice records are always
    written. 2D models train on the slice records, 3D models (``spatial_dims: 3``) on the volumes.
    """

    step: Literal["ingest"]
    source: SourceSpec
    volumes: bool = False


class TrainStep(Spec):
    """Train a model on the dataset of the nearest ingest step before it, with Ray Train.

    A 3D model (``model.spatial_dims: 3``) trains on that step's volume records (it needs
    ``volumes: true``); ``batch_size`` then counts volumes, each giving ``patches_per_image`` patches.
    """

    step: Literal["train"]
    model: ModelSpec
    loss: Literal["dice_ce", "dice"] = "dice_ce"
    preprocess: PreprocessSpec = Field(default_factory=PreprocessSpec)
    split: SplitSpec = Field(default_factory=SplitSpec)
    epochs: int = Field(default=20, ge=1)
    batch_size: int = Field(default=8, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-5, ge=0)
    patches_per_image: int = Field(default=1, ge=1, le=64, description="Random patches per image per epoch.")
    foreground_oversample: float = Field(
        default=0.33,
        ge=0.0,
        le=1.0,
        description="At least this share of each batch's patches is centred on a foreground pixel, drawn from "
        "foreground-bearing images (recent ones kept by the worker when the batch has none), as nnU-Net's "
        "oversample_foreground_percent. 0 disables it.",
    )
    batch_dice: bool = Field(
        default=False,
        description="One soft Dice over the whole batch (nnU-Net's batch_dice) instead of one per patch. Per "
        "patch, patches without foreground add a constant and dilute the Dice gradient of the others; on "
        "rare-defect photos it nevertheless raised false positives (README), so it is off by default.",
    )
    dice_include_background: bool = Field(
        default=True,
        description="Average the background channel's Dice into the loss too (nnU-Net: do_bg=False). Off "
        "strengthens the foreground gradient; on rare-defect photos it raised false positives.",
    )
    augment: AugmentSpec = Field(default_factory=AugmentSpec)
    select: Literal["best", "last"] = Field(
        default="best",
        description="Which epoch's model is kept: best by validation score (U-Net: foreground-case Dice when "
        "more than half the validation cases are empty, else Dice; Mask R-CNN: mask AP), or the last one "
        "(then the validation cases play no part in choosing the model and are a true held-out set).",
    )
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    amp: bool = Field(default=True, description="bfloat16 autocast on GPU workers (no effect on CPU).")
    init_from: str | None = Field(
        default=None,
        description="Warm start: a model URI (models:/name@champion) or checkpoint folder of the same architecture.",
    )
    extra_datasets: tuple[Path, ...] = Field(
        default=(), description="Parquet datasets of earlier ingests (old labels) trained on with this run's."
    )
    max_failures: int = Field(default=1, ge=0, description="Ray Train restarts after a worker failure.")
    register_model: bool = Field(default=True, description="Log and register the model in MLflow.")

    @model_validator(mode="after")
    def _augment_fits_model(self) -> TrainStep:
        aug = self.augment
        if self.model.task == "instance" and (aug.rotate or aug.elastic or aug.intensity):
            raise ValueError(
                "augment.rotate/elastic/intensity apply to U-Net patches; Mask R-CNN trains on flipped whole images"
            )
        if self.model.spatial_dims == 3 and aug.elastic is not None:
            raise ValueError(
                "augment.elastic deforms 2D images (a control-point grid in the image plane); it is not "
                "available for model.spatial_dims: 3 (remove it; flip, rotate90, rotate and intensity are)"
            )
        return self

    @model_validator(mode="after")
    def _patch_fits_model(self) -> TrainStep:
        dims = self.model.spatial_dims
        if len(self.preprocess.patch_size) != dims:
            axes = "(H, W)" if dims == 2 else "(Z, H, W)"
            raise ValueError(
                f"preprocess.patch_size {list(self.preprocess.patch_size)} has {len(self.preprocess.patch_size)} "
                f"sizes but model.spatial_dims is {dims}: give {dims} sizes {axes}"
            )
        div = self.model.size_divisor
        bad = [s for s in self.preprocess.patch_size if s % div]
        if bad:
            raise ValueError(
                f"preprocess.patch_size {list(self.preprocess.patch_size)} must be multiples of "
                f"{div} (the product of model.strides)"
            )
        height, width = self.preprocess.patch_size[-2:]
        if self.model.task != "instance" and self.augment.rotate90 > 0 and height != width:
            raise ValueError(
                "augment.rotate90 turns patches by 90° and needs square ones (patch_size "
                f"{list(self.preprocess.patch_size)}); "
                "use a square patch or set augment.rotate90: 0"
            )
        return self


class ActorPoolSpec(Spec):
    """Inference actor pool. ``None`` values are sized from the cluster's resources."""

    min_actors: int | None = Field(default=None, ge=1)
    max_actors: int | None = Field(default=None, ge=1)
    cpus_per_actor: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> ActorPoolSpec:
        if self.min_actors and self.max_actors and self.min_actors > self.max_actors:
            raise ValueError(f"min_actors ({self.min_actors}) > max_actors ({self.max_actors})")
        return self


class SlidingWindowSpec(Spec):
    """MONAI sliding-window inference for images larger than ``max_pixels``, and for every
    volume a 3D model segments.

    Tiles of ``roi_size`` (default: the training patch size; 2 sizes for 2D models, 3 for 3D
    ones) overlap by ``overlap`` and are blended with Gaussian weights; ``tile_batch`` tiles go
    through the network at once, which bounds an actor's memory whatever the image size.
    """

    max_pixels: int = Field(
        default=1024 * 1024, ge=1, description="Whole-image inference up to this many pixels (2D models)."
    )
    roi_size: tuple[Annotated[int, Field(ge=1)], ...] | None = Field(default=None, min_length=2, max_length=3)
    overlap: float = Field(default=0.25, ge=0.0, lt=1.0)
    mode: Literal["gaussian", "constant"] = "gaussian"
    tile_batch: int = Field(default=4, ge=1)


class SegmentStep(Spec):
    """Batch inference on an actor pool: one mask per input and a per-case Dice/IoU report.

    ``model`` is a checkpoint directory or an MLflow model URI (``models:/name@alias``); when
    omitted, the model of the nearest train step before this one is used. ``source`` defaults
    to the dataset of the nearest ingest step before this one.
    """

    step: Literal["segment"]
    model: str | None = None
    source: SegmentSourceSpec | None = None
    records: Literal["slices", "volumes"] = Field(
        default="slices",
        description="volumes: segment the ingest step's volume records (slice by slice with a 2D model, "
        "with a 3D sliding window with a 3D one); one NIfTI (and one multi-frame DICOM SEG) per series.",
    )
    outputs: tuple[Literal["png", "dicom-seg", "coco-rle"], ...] = Field(
        default=("png",),
        description="png: class mask (and, for instance models, an instance-id map); dicom-seg: for "
        "DICOM inputs; coco-rle: per image COCO results with RLE masks (instance models).",
    )
    layout: Literal["mirror", "dicom-tags"] = Field(
        default="mirror",
        description=(
            "mirror: outputs mirror input paths; dicom-tags: <PatientID>/<StudyUID>/<SeriesUID>/<SOPUID> (sanitised)."
        ),
    )
    segments: dict[int, str] = Field(default_factory=lambda: {1: "foreground"}, description="Class → DICOM SEG label.")
    batch_size: int = Field(default=8, ge=1)
    actors: ActorPoolSpec = Field(default_factory=ActorPoolSpec)
    sliding_window: SlidingWindowSpec = Field(default_factory=lambda: SlidingWindowSpec())
    amp: bool = Field(default=True, description="bfloat16 autocast on GPU (no effect on CPU).")
    overlays: int = Field(default=4, ge=0, description="Mask-overlay PNGs logged to MLflow.")
    boundary_class: int | None = Field(
        default=None,
        ge=1,
        description="Class index of boundaries (e.g. cell membranes): adds the ISBI 2012 Rand error per "
        "case, over the regions that boundaries separate (see segops.metrics.rand_error).",
    )


class EvaluateStep(Spec):
    """Champion vs challenger on the same frozen held-out cases, in this run.

    ``source`` is the held-out set: labelled, never trained on (a fixed folder or Parquet
    dataset; its content digest is logged). ``challenger`` defaults to the model of the train
    step before this one; ``champion`` to the registered model's ``champion`` alias (none yet:
    the challenger is evaluated alone and the promote step's gate passes on "no champion").
    """

    step: Literal["evaluate"]
    source: SegmentSourceSpec
    champion: str | None = Field(
        default=None, description="Model URI or checkpoint; default models:/<registered>@champion."
    )
    challenger: str | None = Field(
        default=None, description="Model URI or checkpoint; default: the train step's model."
    )
    subgroups: tuple[str, ...] = Field(default=("modality",), description="Case columns to break deltas down by.")
    bootstrap: int = Field(
        default=2000, ge=100, description="Paired bootstrap resamples for the CI of the mean difference."
    )
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    batch_size: int = Field(default=8, ge=1)
    actors: ActorPoolSpec = Field(default_factory=ActorPoolSpec)


class CaseRegression(Spec):
    """At most ``fraction`` of cases may lose more than ``dice_drop`` Dice."""

    dice_drop: float = Field(default=0.05, ge=0.0, le=1.0)
    fraction: float = Field(default=0.1, ge=0.0, le=1.0)


class PromotionGate(Spec):
    """What a challenger must show on the held-out set to replace the champion."""

    min_mean_dice_gain: float = Field(
        default=0.0, description="Challenger mean Dice − champion mean Dice must be ≥ this."
    )
    require_ci_above: float | None = Field(
        default=None, description="If set, the lower end of the bootstrap CI of the gain must exceed this."
    )
    max_case_regression: CaseRegression = Field(default_factory=CaseRegression)
    per_class_max_drop: float | None = Field(
        default=0.0, ge=0.0, description="No class's mean Dice may drop by more than this (null: not checked)."
    )


class PromoteStep(Spec):
    """Apply the gate to the evaluate step's comparison; on pass move ``alias`` to the challenger
    and ``previous_alias`` to the old champion; on failure tag the challenger ``rejected`` with
    the reasons. The decision and its evidence are logged either way."""

    step: Literal["promote"]
    gate: PromotionGate = Field(default_factory=PromotionGate)
    alias: str = Field(default="champion", pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
    previous_alias: str = Field(default="previous", pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


StepSpec = Annotated[IngestStep | TrainStep | SegmentStep | EvaluateStep | PromoteStep, Field(discriminator="step")]


class WorkflowSpec(Spec):
    """A whole workflow file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    output_dir: Path = Path("runs")
    seed: int = 0
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)
    steps: list[StepSpec] = Field(min_length=1)
