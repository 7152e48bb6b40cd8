"""Step specs, a discriminated union on ``step``: ingest, train, segment, evaluate, promote."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from segops.config.models import BACKBONE_MODULES, ModelSpec
from segops.config.preprocess import AugmentSpec, PreprocessSpec
from segops.config.sources import SegmentSourceSpec, SourceSpec
from segops.config.spec import Spec


class ScalingSpec(Spec):
    """Ray Train workers. ``use_gpu: auto`` uses GPUs when the cluster has them."""

    workers: int = Field(default=2, ge=1)
    use_gpu: bool | Literal["auto"] = "auto"
    cpus_per_worker: float | None = Field(
        default=None, gt=0, description="Default: sized from the cluster, leaving a CPU for Ray Data."
    )


class SplitSpec(Spec):
    """Train / validation / test split by group (DICOM series or patient; for images the source's ``group_by``:
    an image file, a folder, or what a pattern captures), deterministic by seed.

    The test groups are drawn first and touched by nothing until the segment step, which reports
    them as held-out; the validation groups choose the checkpoint and the postprocessing and are
    reported as validation. ``test_fraction: 0`` keeps no test set (then nothing is reported as
    held-out). With ``train.folds: k`` the groups outside the test set are cut into k folds, each
    validating one model, and ``val_fraction`` is not used.
    """

    val_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    test_fraction: float = Field(
        default=0.2, ge=0.0, lt=1.0, description="Groups held out for the segment step's held-out report (0: none)."
    )
    seed: int = 0

    @model_validator(mode="after")
    def _leaves_training(self) -> SplitSpec:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"val_fraction ({self.val_fraction}) + test_fraction ({self.test_fraction}) must be below 1: "
                "nothing would be left to train on"
            )
        return self


class TTASpec(Spec):
    """Test-time mirroring: the softmax of the prediction on the image and on its mirror images
    along ``flip_axes`` (every subset of them, as nnU-Net does) is averaged before the argmax.

    Axes count spatial dimensions: 0, 1 are (H, W) for 2D models; 0, 1, 2 are (Z, H, W) for 3D.
    ``flip_axes: [0, 1]`` costs 4 forward passes per image (2^axes).
    """

    flip_axes: tuple[Annotated[int, Field(ge=0, le=2)], ...] = Field(default=(), max_length=3)

    @model_validator(mode="after")
    def _distinct(self) -> TTASpec:
        if len(set(self.flip_axes)) != len(self.flip_axes):
            raise ValueError(f"flip_axes {list(self.flip_axes)} repeats an axis")
        return self


class ReviewSpec(Spec):
    """The segment step's review queue (``review.parquet``/``.csv`` and ``review/index.html``).

    Every case gets a ``risk`` score (:mod:`segops.engine.risk_rule`); a case is *flagged* when its
    risk is at least ``flag_risk``. Unset, the model decides: a model calibrated on its validation
    cases flags from the 90th percentile of their risks; one without a calibration (k-fold
    ensembles, older models) at 1.0 (one raised flag, or several uncertain signals together).
    ``enabled: false`` computes no risk at all (no risk columns in ``outputs.parquet``) and writes no
    queue: what the risk costs is in ``benchmarks/segment.py --risk-cost``.
    """

    enabled: bool = Field(
        default=True, description="Compute each case's risk and write the review queue; false skips both."
    )
    top: int = Field(default=50, ge=0, description="Riskiest cases shown on review/index.html (0: no page).")
    flag_risk: float | None = Field(
        default=None,
        gt=0.0,
        description="Risk at or above which a case is flagged; unset: the model's calibrated threshold (or 1.0).",
    )


class DriftSpec(Spec):
    """The segment step's drift check: before any actor starts, a sample of the input is fingerprinted
    and compared with the training fingerprint stored with the model (:mod:`segops.data.drift`).

    A feature *moved* when its distance passes its threshold: PSI of the intensity histogram above
    ``max_psi``; a KS statistic (image mean intensity, height, width, spacing) above ``max_ks``,
    significant (p < 0.01), with a share above ``max_unseen`` of the images outside the training
    range; a share above ``max_unseen`` of the sampled images with a channel count,
    modality, transfer syntax or photometric interpretation the training images never had; the
    median encoder-embedding distance above ``max_embedding`` times the training cases' 95th
    percentile. ``warn`` logs the table of what moved and segments; ``stop`` fails the step with it
    before any actor starts; ``off`` skips the check.
    """

    action: Literal["warn", "stop", "off"] = "warn"
    max_psi: float = Field(default=0.25, gt=0.0, description="PSI above this: the intensity histogram moved.")
    max_ks: float = Field(default=0.3, gt=0.0, le=1.0, description="KS statistic above this (and p < 0.01): moved.")
    max_unseen: float = Field(
        default=0.05,
        ge=0.0,
        lt=1.0,
        description="Share of images with a census value training never had (or a scalar outside its range).",
    )
    max_embedding: float = Field(
        default=1.0, gt=0.0, description="Median embedding distance / the training cases' 95th percentile."
    )
    sample: int = Field(default=200, ge=1, description="Input images fingerprinted (the first ones read).")


class IngestStep(Spec):
    """Decode a source into an Arrow/Parquet dataset of records, with a quarantine table.

    ``volumes: true`` also writes a dataset of 3D volume records: one per DICOM series whose
    geometry is regular (ordered along the slice normal, no gaps) and one per volume file case
    (NIfTI, NRRD, MHA; its voxels in file order); 2D slice records are always written. 2D models
    train on the slice records, 3D models (``spatial_dims: 3``) on the volumes.
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
    folds: int = Field(
        default=1,
        ge=1,
        le=10,
        description="k > 1: k-fold cross-validation by group over the non-test groups; k models, one after "
        "another, registered as one ensemble model version that averages their softmax.",
    )
    epochs: int = Field(default=20, ge=1)
    batch_size: int = Field(default=8, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-5, ge=0)
    patches_per_image: int = Field(default=1, ge=1, le=64, description="Random patches per image per epoch.")
    samples_per_epoch: int | None = Field(
        default=None,
        ge=1,
        description="Training images (3D: volumes) drawn at random, without repeats, for each epoch, each giving "
        "patches_per_image patches; none: every training image once. An epoch of a large archive then stays "
        "short (nnU-Net fixes an epoch at 250 steps whatever the dataset's size), so a time budget holds and "
        "validation, checkpoints and the learning-rate schedule keep their rhythm. Seeded per epoch and rank.",
    )
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
    amp: bool = Field(
        default=True,
        description="bfloat16 autocast on GPU workers; on a CPU, validation's inference only, where the CPU has "
        "bfloat16 in hardware (AMX, AVX512-BF16); training on a CPU stays float32.",
    )
    init_from: str | None = Field(
        default=None,
        description="Warm start: a model URI (models:/name@champion) or checkpoint folder of the same architecture.",
    )
    extra_datasets: tuple[Path, ...] = Field(
        default=(), description="Parquet datasets of earlier ingests (old labels) trained on with this run's."
    )
    max_failures: int = Field(default=1, ge=0, description="Ray Train restarts after a worker failure.")
    register_model: bool = Field(default=True, description="Log and register the model in MLflow.")
    freeze_backbone_epochs: int = Field(
        default=0,
        ge=0,
        description="Fine-tuning: the backbone (Mask R-CNN: model.backbone; smp: model.encoder) is not updated "
        "in the first N epochs (its learning rate is 0), so the new heads settle first.",
    )
    backbone_lr_mult: float = Field(
        default=1.0, ge=0.0, description="Fine-tuning: the backbone's learning rate is learning_rate times this."
    )
    warmup_epochs: int = Field(
        default=0,
        ge=0,
        description="Linear learning-rate warm-up: epoch e < N trains at (e + 1) / (N + 1) of the scheduled rate.",
    )

    @property
    def samples_per_step(self) -> int:
        """Samples one optimiser step sees: ``batch_size`` images of ``patches_per_image`` patches each
        (Mask R-CNN trains on whole images, one per image)."""
        return self.batch_size * (self.patches_per_image if self.model.task == "semantic" else 1)

    @model_validator(mode="after")
    def _augment_fits_model(self) -> TrainStep:
        resize = "scale" if self.preprocess.scale != 1 else "spacing" if self.preprocess.spacing else None
        if resize and (self.model.task == "instance" or self.model.spatial_dims == 3):
            raise ValueError(
                f"preprocess.{resize} resizes 2D images for semantic models; Mask R-CNN resizes by model.min_size / "
                f"max_size, and a 3D model takes volumes at their spacing (remove {resize})"
            )
        aug = self.augment
        if self.model.task == "instance" and (aug.rotate or aug.zoom or aug.elastic or aug.intensity):
            raise ValueError(
                "augment.rotate/zoom/elastic/intensity apply to U-Net patches; Mask R-CNN trains on flipped whole "
                "images"
            )
        if self.model.spatial_dims == 3 and aug.elastic is not None:
            raise ValueError(
                "augment.elastic deforms 2D images (a control-point grid in the image plane); it is not "
                "available for model.spatial_dims: 3 (remove it; flip, rotate90, rotate, zoom and intensity are)"
            )
        return self

    @model_validator(mode="after")
    def _fine_tuning_fits_model(self) -> TrainStep:
        if self.model.arch not in BACKBONE_MODULES and (self.freeze_backbone_epochs or self.backbone_lr_mult != 1):
            archs = ", ".join(f"{a} (model.{m})" for a, m in BACKBONE_MODULES.items())
            raise ValueError(
                f"freeze_backbone_epochs / backbone_lr_mult apply to models with a pretrained backbone: {archs}; "
                f"arch {self.model.arch} has none (remove them)"
            )
        if self.freeze_backbone_epochs > self.epochs:
            raise ValueError(f"freeze_backbone_epochs ({self.freeze_backbone_epochs}) exceeds epochs ({self.epochs})")
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
        divs = getattr(self.model, "axis_divisors", None) or (self.model.size_divisor,) * dims
        if any(s % d for s, d in zip(self.preprocess.patch_size, divs)):
            div = divs[0] if len(set(divs)) == 1 else list(divs)
            raise ValueError(
                f"preprocess.patch_size {list(self.preprocess.patch_size)} must be multiples of "
                f"{div} ("
                + (
                    f"the product of model.strides{' per axis' if isinstance(div, list) else ''})"
                    if hasattr(self.model, "strides")
                    else f"the output stride of arch {self.model.arch})"
                )
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
    outputs: tuple[Literal["png", "dicom-seg", "rtstruct", "coco-rle", "probabilities"], ...] = Field(
        default=("png",),
        description="png: class mask (and, for instance models, an instance-id map); dicom-seg: for "
        "DICOM inputs; rtstruct: one RTSTRUCT per DICOM series, a ROI per class (``segments`` names), contours "
        "in patient coordinates; coco-rle: per image COCO results with RLE masks (instance models); probabilities: "
        "float16 softmax (classes, *spatial) as .npz per case (per series for volumes; semantic models).",
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
    tta: TTASpec = Field(default_factory=TTASpec, description="Test-time mirroring (semantic models).")
    postprocess: bool = Field(
        default=True,
        description="Apply the postprocessing stored with the model (chosen on its out-of-fold or validation "
        "predictions at training time: see the train step); false: the plain argmax.",
    )
    amp: bool = Field(
        default=True,
        description="bfloat16 autocast on GPU, and for semantic models on a CPU with bfloat16 in hardware (AMX, "
        "AVX512-BF16: 1.9-2.4x faster networks, masks equal but for pixels the two classes nearly tie on); "
        "false: float32.",
    )
    overlays: int = Field(default=4, ge=0, description="Mask-overlay PNGs logged to MLflow.")
    boundary_class: int | None = Field(
        default=None,
        ge=1,
        description="Class index of boundaries (e.g. cell membranes): adds the ISBI 2012 Rand error per "
        "case, over the regions that boundaries separate (see segops.metrics.rand_error).",
    )
    review: ReviewSpec = Field(
        default_factory=ReviewSpec, description="Review queue of the riskiest cases (see segops.engine.risk)."
    )
    drift: DriftSpec = Field(
        default_factory=DriftSpec, description="Drift check of the input against the training data (warn|stop|off)."
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
    tta: TTASpec = Field(default_factory=TTASpec, description="Test-time mirroring for both models (semantic).")


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
