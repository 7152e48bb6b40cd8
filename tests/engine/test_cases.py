"""Per-case inference without Ray: predict_batch → case_result, scores recomputed from the class map."""

import json
import pickle

import numpy as np
import pytest
import torch

from segops.config.schema import (
    MaskRCNNSpec,
    PreprocessSpec,
    SegmentStep,
    SlidingWindowSpec,
    UNetSpec,
    WindowIntensity,
    ZScoreIntensity,
)
from segops.data.instances import INSTANCE_STRIDE, stack_instances
from segops.engine.cases import CaseResult, InferenceSettings, case_result, predict_batch, segment_cases
from segops.engine.checkpoint import LoadedModel
from segops.engine.detect import InstancePrediction
from segops.metrics import rand_error
from segops.models import build_model

PRE = PreprocessSpec(intensity=ZScoreIntensity(kind="zscore"), patch_size=(16, 16))
SETTINGS = InferenceSettings(amp=False, risk=False, measure=False)  # risk, sizes: test_risk.py, test_case_extras.py


def _unet(classes: int = 3) -> LoadedModel:
    torch.manual_seed(0)
    spec = UNetSpec(arch="unet", classes=classes, channels=(4, 8), strides=(2,), num_res_units=0)
    return LoadedModel(build_model(spec).eval(), spec, PRE, {})


def _dice(p: np.ndarray, t: np.ndarray) -> float:
    return 1.0 if p.sum() + t.sum() == 0 else 2 * (p & t).sum() / (p.sum() + t.sum())


def _iou(p: np.ndarray, t: np.ndarray) -> float:
    return 1.0 if (p | t).sum() == 0 else (p & t).sum() / (p | t).sum()


def _assert_semantic_scores(result: CaseResult, label: np.ndarray, classes: int) -> None:
    """Every score of ``result`` equals its numpy definition over ``result.class_map`` and ``label``."""
    mask, scores = result.class_map, result.scores
    dice = {c: _dice(mask == c, label == c) for c in range(1, classes)}
    iou = [_iou(mask == c, label == c) for c in range(1, classes)]
    assert result.fg_fraction == (mask > 0).sum() / mask.size
    assert scores.label_fg_fraction == (label > 0).sum() / label.size
    assert scores.dice_per_class == pytest.approx(dice, abs=1e-12)
    assert scores.dice == pytest.approx(sum(dice.values()) / len(dice), abs=1e-12)
    assert scores.iou == pytest.approx(sum(iou) / len(iou), abs=1e-12)
    assert scores.pixel_error == (mask != label).sum() / mask.size
    assert scores.label_classes == tuple(c for c in range(1, classes) if (label == c).any())


def test_settings_are_frozen_picklable_and_built_from_the_segment_step() -> None:
    step = SegmentStep(step="segment", amp=False, sliding_window={"tile_batch": 2}, boundary_class=2)
    settings = InferenceSettings.from_step(step)
    assert settings == InferenceSettings(False, SlidingWindowSpec(tile_batch=2), 2)
    assert pickle.loads(pickle.dumps(settings)) == settings
    with pytest.raises(AttributeError):
        settings.amp = True  # type: ignore[misc]
    # the evaluate step's settings: what {"amp": True, "sliding": {}} meant before
    assert InferenceSettings() == InferenceSettings(True, SlidingWindowSpec.model_validate({}), None)


def test_the_segment_steps_review_switch_turns_the_risk_on_and_off() -> None:
    assert InferenceSettings.from_step(SegmentStep(step="segment")).risk is True
    off = SegmentStep(step="segment", review={"enabled": False, "top": 3})
    assert InferenceSettings.from_step(off).risk is False


def test_a_2d_case_class_map_and_scores() -> None:
    loaded = _unet()
    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, 20, 24)).astype(np.float32)
    label = rng.integers(0, 3, (20, 24)).astype(np.uint8)
    settings = InferenceSettings(amp=False, boundary_class=2, risk=False)
    (prediction,) = predict_batch(loaded, [image], settings)
    result = case_result(prediction, label, settings, classes=3)
    mask = result.class_map
    assert mask.shape == (20, 24) and mask.dtype == np.uint8 and len(np.unique(mask)) > 1
    assert result.label_map is None and result.detections == () and result.eval_entry is None
    _assert_semantic_scores(result, label, 3)
    assert result.scores.rand_error == rand_error(mask, label, 2)
    row = result.row_fields()
    assert json.loads(row["dice_per_class"]) == {str(c): d for c, d in result.scores.dice_per_class.items()}
    assert json.loads(row["label_classes"]) == [1, 2]
    assert set(row) == {
        "fg_fraction",
        "label_fg_fraction",
        "dice",
        "iou",
        "dice_per_class",
        "label_classes",
        "pixel_error",
        "rand_error",
    }

    unlabelled = case_result(prediction, None, SETTINGS, classes=3)
    assert unlabelled.scores is None and unlabelled.row_fields() == {"fg_fraction": result.fg_fraction}
    assert "rand_error" not in case_result(prediction, label, SETTINGS, classes=3).row_fields()


def test_a_volume_goes_slice_by_slice_through_a_2d_model() -> None:
    loaded = _unet(classes=2)
    rng = np.random.default_rng(1)
    volume = rng.normal(size=(1, 3, 16, 20)).astype(np.float32)
    label = np.zeros((3, 16, 20), np.uint8)
    label[:, 4:12, 5:15] = 1
    (prediction,) = predict_batch(loaded, [volume], SETTINGS)
    slices = predict_batch(loaded, [volume[:, z] for z in range(3)], SETTINGS)
    np.testing.assert_array_equal(prediction.class_map, np.stack([s.class_map for s in slices]))
    assert prediction.probabilities is None  # not asked for
    result = case_result(prediction, label, SETTINGS, classes=2)
    assert result.class_map.shape == (3, 16, 20) and 0 < result.fg_fraction < 1
    _assert_semantic_scores(result, label, 2)  # one Dice over the whole volume, not a mean of slices


def test_an_instance_case_encodes_detections_once_and_scores_matches_and_class_map() -> None:
    shape = (12, 16)
    a, b, c = (np.zeros(shape, bool) for _ in range(3))
    a[1:5, 1:5] = True  # 16 px; truth 1:5, 1:6 (20 px): IoU 0.8
    b[7:10, 10:14] = True  # nothing true there: a false positive
    c[8:11, 2:6] = True  # a second true instance, missed
    truth_a = np.zeros(shape, bool)
    truth_a[1:5, 1:6] = True
    label = stack_instances([truth_a, c], [1, 2], shape)
    pred = InstancePrediction(np.stack([a, b]), np.array([0.9, 0.6], np.float32), np.array([1, 2], np.int64))
    result = case_result(pred, label, SETTINGS, classes=3)

    expected_map = np.zeros(shape, np.uint8)
    expected_map[a], expected_map[b] = 1, 2
    np.testing.assert_array_equal(result.class_map, expected_map)
    # painted lowest score first: b is instance 1 (class 2), a instance 2 (class 1)
    assert result.label_map[2, 2] == INSTANCE_STRIDE + 2 and result.label_map[8, 11] == 2 * INSTANCE_STRIDE + 1
    assert sorted(np.unique(result.label_map)) == [0, INSTANCE_STRIDE + 2, 2 * INSTANCE_STRIDE + 1]
    assert [d["category_id"] for d in result.detections] == [1, 2]
    assert all("image_id" not in d for d in result.detections)
    assert [{k: v for k, v in d.items() if k != "image_id"} for d in result.eval_entry["dt"]] == list(result.detections)
    assert len(result.eval_entry["gt"]) == 2 and result.eval_entry["image"] == {"id": 0, "height": 12, "width": 16}
    assert result.matched == {"tp": 1.0, "fp": 1.0, "fn": 1.0, "matched_dice": 2 * 0.8 / 1.8, "matched_iou": 0.8}
    truth = (label // INSTANCE_STRIDE).astype(np.uint8)
    _assert_semantic_scores(result, truth, 3)
    assert result.scores.dice_per_class == {1: 2 * 16 / 36, 2: 0.0}
    row = result.row_fields()
    assert row["n_instances"] == 2.0 and json.loads(row["eval_json"]) == result.eval_entry

    unlabelled = case_result(pred, None, SETTINGS, classes=3)
    assert unlabelled.detections == result.detections and unlabelled.matched == {} and unlabelled.eval_entry is None
    assert unlabelled.row_fields() == {"fg_fraction": result.fg_fraction, "n_instances": 2.0}


def test_predict_batch_with_an_instance_model_gives_instance_predictions_at_input_size() -> None:
    torch.manual_seed(0)
    spec = MaskRCNNSpec(arch="maskrcnn", min_size=64, max_size=64, anchor_sizes=(8, 16, 32, 64, 128))
    spec = spec.model_copy(update={"score_threshold": 0.0, "detections_per_image": 3})
    pre = PreprocessSpec(intensity=WindowIntensity(kind="window", lower=0, upper=255))
    loaded = LoadedModel(build_model(spec).eval(), spec, pre, {})
    image = np.random.default_rng(2).normal(40, 10, (1, 40, 48)).astype(np.float32)
    (prediction,) = predict_batch(loaded, [image], SETTINGS)
    assert isinstance(prediction, InstancePrediction) and prediction.masks.shape[1:] == (40, 48)
    result = case_result(prediction, None, SETTINGS, classes=2)
    assert result.class_map.shape == (40, 48) and len(result.detections) == len(prediction.scores)


def test_segment_cases_fails_a_bad_case_alone_at_its_stage() -> None:
    """One engine call per batch: a case the network cannot take fails at ``segment``, a label of
    the wrong size at ``score``; the other cases equal what predict_batch + case_result give alone."""
    loaded = _unet()
    rng = np.random.default_rng(3)
    good = rng.normal(size=(1, 20, 24)).astype(np.float32)
    other = rng.normal(size=(1, 20, 24)).astype(np.float32)
    two_channels = rng.normal(size=(2, 20, 24)).astype(np.float32)  # the model takes one channel
    label = rng.integers(0, 3, (20, 24)).astype(np.uint8)
    images = [good, two_channels, other, good]
    labels = [label, label, None, label[:10]]
    results = segment_cases(loaded, images, labels, SETTINGS)
    assert [type(r).__name__ for r in results] == ["CaseResult", "CaseFailure", "CaseResult", "CaseFailure"]
    assert (results[1].stage, results[3].stage) == ("segment", "score")
    for result, image, truth in ((results[0], good, label), (results[2], other, None)):
        (alone,) = predict_batch(loaded, [image], SETTINGS)
        np.testing.assert_array_equal(result.class_map, alone.class_map)
        assert result.row_fields() == case_result(alone, truth, SETTINGS, classes=3).row_fields()


def test_postprocessing_stored_with_the_model_is_applied_to_class_maps_unless_turned_off() -> None:
    from scipy import ndimage

    from segops.engine.postprocess import ClassRule, Postprocessing

    loaded = _unet(classes=2)
    image = np.random.default_rng(4).normal(size=(1, 48, 48)).astype(np.float32)
    (plain,) = predict_batch(loaded, [image], SETTINGS)
    _, n_components = ndimage.label(plain.class_map == 1, structure=np.ones((3, 3)))
    assert n_components >= 2  # an untrained net's speckle: the rule has something to remove
    rule = ClassRule(cls=1, op="largest", min_size=None, dice_before=0.5, dice_after=0.6)
    post = Postprocessing(rules=(rule,), cases=3, source="validation")
    with_post = LoadedModel(loaded.model, loaded.model_spec, PRE, {"postprocess": post.to_json()})
    (kept,) = predict_batch(with_post, [image], SETTINGS)
    np.testing.assert_array_equal(kept.class_map, post.apply(plain.class_map))
    _, n_after = ndimage.label(kept.class_map == 1, structure=np.ones((3, 3)))
    assert n_after == 1
    off = InferenceSettings(amp=False, postprocess=False)
    (raw,) = predict_batch(with_post, [image], off)
    np.testing.assert_array_equal(raw.class_map, plain.class_map)
    assert InferenceSettings.from_step(SegmentStep(step="segment", postprocess=False)).postprocess is False


def test_a_sliding_window_tile_the_network_cannot_take_is_refused_before_any_actor_starts() -> None:
    from segops.config.schema import DynUNetSpec
    from segops.errors import StepError

    unet = _unet().model_spec  # one stride of 2: sides must be even
    InferenceSettings(sliding=SlidingWindowSpec(roi_size=(16, 24))).check_model(unet, "segment")
    with pytest.raises(
        StepError, match=r"segment.sliding_window.roi_size \[15, 24\]: .* multiples of \[2, 2\]; use e.g. \[14, 24\]"
    ):
        InferenceSettings(sliding=SlidingWindowSpec(roi_size=(15, 24))).check_model(unet, "segment")
    # anisotropic 3D strides: each axis its own divisor (Z pooled once, H and W three times)
    spec = DynUNetSpec(
        arch="dynunet",
        spatial_dims=3,
        kernels=((1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)),
        strides=((1, 1, 1), (1, 2, 2), (2, 2, 2), (1, 2, 2)),
        filters=(4, 8, 16, 32),
    )
    InferenceSettings(sliding=SlidingWindowSpec(roi_size=(6, 32, 32))).check_model(spec, "evaluate")
    with pytest.raises(StepError, match=r"evaluate.sliding_window.roi_size \[6, 32, 36\].*use e.g. \[6, 32, 32\]"):
        InferenceSettings(sliding=SlidingWindowSpec(roi_size=(6, 32, 36))).check_model(spec, "evaluate")
