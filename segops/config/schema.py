"""Workflow specs: pydantic v2 models, frozen, unknown keys rejected.

A workflow is a name, tracking and cluster settings, and an ordered list of steps. Every
polymorphic part (step, source, labels, model, intensity) is a discriminated union on a
literal tag, so an unknown tag is reported as ``'<tag>' is not one of <known tags>``.

The specs live by concern (:mod:`~segops.config.sources`, :mod:`~segops.config.models`,
:mod:`~segops.config.preprocess`, :mod:`~segops.config.steps`); this module holds the workflow
itself and re-exports every spec, so ``from segops.config.schema import …`` reaches them all.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from segops.config.contour_labels import LidcLabels
from segops.config.models import BACKBONE_MODULES, DynUNetSpec, MaskRCNNSpec, ModelSpec, SmpSpec, UNetSpec
from segops.config.preprocess import (
    AugmentSpec,
    ElasticAugment,
    IntensityAugment,
    IntensitySpec,
    PercentileIntensity,
    PreprocessSpec,
    RotateAugment,
    WindowIntensity,
    ZoomAugment,
    ZScoreIntensity,
)
from segops.config.sources import (
    CocoLabels,
    CvatLabels,
    DatasetSource,
    DicomSegLabels,
    DicomSource,
    ImageScopeLabels,
    ImageSource,
    InstancePngLabels,
    LabelmeLabels,
    LabelsSpec,
    LabelStudioLabels,
    MaskFolderLabels,
    MaskPngLabels,
    RleCsvLabels,
    RtstructLabels,
    SegmentSourceSpec,
    SourceSpec,
    SuperviselyLabels,
    ViaLabels,
    VolumeLabels,
    VolumeSource,
    YoloLabels,
)
from segops.config.spec import Spec
from segops.config.steps import (
    ActorPoolSpec,
    CaseRegression,
    EvaluateStep,
    IngestStep,
    PromoteStep,
    PromotionGate,
    ScalingSpec,
    SegmentStep,
    SlidingWindowSpec,
    SplitSpec,
    StepSpec,
    TrainStep,
    TTASpec,
)

__all__ = [
    "BACKBONE_MODULES",
    "ActorPoolSpec",
    "AugmentSpec",
    "CaseRegression",
    "ClusterSpec",
    "CocoLabels",
    "CvatLabels",
    "LabelStudioLabels",
    "DatasetSource",
    "DicomSegLabels",
    "DicomSource",
    "DynUNetSpec",
    "ElasticAugment",
    "EvaluateStep",
    "ImageSource",
    "IngestStep",
    "InstancePngLabels",
    "LabelmeLabels",
    "ImageScopeLabels",
    "LidcLabels",
    "YoloLabels",
    "ViaLabels",
    "SuperviselyLabels",
    "MaskFolderLabels",
    "IntensityAugment",
    "IntensitySpec",
    "LabelsSpec",
    "MaskPngLabels",
    "MaskRCNNSpec",
    "ModelSpec",
    "PercentileIntensity",
    "RleCsvLabels",
    "RtstructLabels",
    "VolumeLabels",
    "VolumeSource",
    "PreprocessSpec",
    "PromoteStep",
    "PromotionGate",
    "RotateAugment",
    "ZoomAugment",
    "ScalingSpec",
    "SmpSpec",
    "SegmentSourceSpec",
    "SegmentStep",
    "SlidingWindowSpec",
    "SourceSpec",
    "Spec",
    "SplitSpec",
    "StepSpec",
    "TrackingSpec",
    "TrainStep",
    "TTASpec",
    "UNetSpec",
    "WindowIntensity",
    "WorkflowSpec",
    "ZScoreIntensity",
]


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


class WorkflowSpec(Spec):
    """A whole workflow file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    output_dir: Path = Path("runs")
    seed: int = 0
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)
    steps: list[StepSpec] = Field(min_length=1)
