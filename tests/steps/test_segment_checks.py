"""The segment step refuses, before any actor starts, mirroring or probabilities its model cannot give."""

import pytest
from torch import nn

from segops.config.schema import MaskRCNNSpec, PreprocessSpec, SegmentStep, UNetSpec, WindowIntensity
from segops.engine.checkpoint import LoadedModel
from segops.errors import StepError
from segops.steps import segment

PRE = PreprocessSpec(intensity=WindowIntensity(kind="window", lower=0, upper=255))


def _loaded(spec) -> LoadedModel:
    return LoadedModel(nn.Identity(), spec, PRE, {})  # the checks read the spec only


def test_a_flip_axis_beyond_the_models_dimensions_is_refused() -> None:
    step = SegmentStep(step="segment", tta={"flip_axes": [1, 2]})
    with pytest.raises(StepError, match=r"^segment.tta.flip_axes \[1, 2\]: this is a 2D model"):
        segment._check_model_fits_step(step, _loaded(UNetSpec(arch="unet")))
    volumes = step.model_copy(update={"records": "volumes"})
    segment._check_model_fits_step(volumes, _loaded(UNetSpec(arch="unet", spatial_dims=3)))


def test_an_instance_model_takes_neither_mirroring_nor_probabilities() -> None:
    maskrcnn = _loaded(MaskRCNNSpec(arch="maskrcnn"))
    with pytest.raises(StepError, match=r"^segment.tta.flip_axes \[0\]: test-time mirroring is for semantic"):
        segment._check_model_fits_step(SegmentStep(step="segment", tta={"flip_axes": [0]}), maskrcnn)
    with pytest.raises(StepError, match=r"^segment.outputs: probabilities needs a semantic model"):
        segment._check_model_fits_step(SegmentStep(step="segment", outputs=["png", "probabilities"]), maskrcnn)
    segment._check_model_fits_step(SegmentStep(step="segment", outputs=["png", "coco-rle"]), maskrcnn)


def test_mirroring_classes_told_apart_by_side_is_warned_of(caplog: pytest.LogCaptureFixture) -> None:
    sided = {1: "Lung_L", 2: "Lung_R", 3: "Heart"}
    with caplog.at_level("WARNING", logger="segops.steps.segment"):
        segment._check_model_fits_step(
            SegmentStep(step="segment", tta={"flip_axes": [1]}, segments=sided),
            _loaded(UNetSpec(arch="unet", classes=4)),
        )
    assert "classes told apart by side (Lung_L / Lung_R)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="segops.steps.segment"):
        segment._check_model_fits_step(
            SegmentStep(step="segment", segments=sided), _loaded(UNetSpec(arch="unet", classes=4))
        )
        segment._check_model_fits_step(
            SegmentStep(step="segment", tta={"flip_axes": [1]}), _loaded(UNetSpec(arch="unet"))
        )
    assert "told apart by side" not in caplog.text
