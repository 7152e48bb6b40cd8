"""``preprocess.spacing``: images of known pixel spacing go through the network at the target
spacing (nnU-Net's resampling), and masks come back at each input's size."""

import numpy as np
import pytest
import torch

from segops.config.schema import PreprocessSpec, TrainStep, UNetSpec
from segops.data.transforms import image_scale
from segops.engine.cases import InferenceSettings, segment_cases
from segops.engine.checkpoint import LoadedModel
from segops.engine.predict import predict, predict_label_maps
from segops.engine.train import validation_sums

from .test_scale import WINDOW, _Counting, _disc


def _loaded(spacing: tuple[float, float] | None) -> tuple[LoadedModel, _Counting]:
    net = _Counting()
    spec = UNetSpec(arch="unet", classes=2, channels=(4, 8), strides=(2,))
    return LoadedModel(net, spec, PreprocessSpec(intensity=WINDOW, patch_size=(32, 32), spacing=spacing), {}), net


def _dice(pred: np.ndarray, mask: np.ndarray) -> float:
    return 2 * np.logical_and(pred == 1, mask == 1).sum() / (pred.sum() + mask.sum())


def test_image_scale_is_the_spacing_over_the_target_per_axis() -> None:
    target = PreprocessSpec(spacing=(1.0, 2.0))
    assert image_scale(target, (0.5, 1.0)) == (0.5, 0.5)
    assert image_scale(target, (3.0, 0.5, 1.0)) == (0.5, 0.5)  # a volume's (Z, row, column): the last two
    assert image_scale(target, (1.0, 2.0)) == 1.0 and image_scale(target, None) == 1.0  # at the target; unknown
    assert image_scale(target, (1.0, float("nan"))) == 1.0  # a spacing that is no number: unknown
    assert image_scale(target, (float("nan"), 0.5, 1.0)) == (0.5, 0.5)  # a volume's unknown Z is not read
    assert image_scale(PreprocessSpec(scale=0.5), (0.3, 0.3)) == 0.5  # no target: preprocess.scale
    with pytest.raises(ValueError, match="preprocess.spacing and preprocess.scale both resize images"):
        PreprocessSpec(spacing=(1.0, 1.0), scale=0.5)


def test_an_image_at_half_the_target_spacing_is_predicted_at_half_size_and_returned_whole() -> None:
    image, mask = _disc((200, 160), 50)
    loaded, net = _loaded((1.0, 1.0))
    (pred,) = predict(loaded, [image], scales=[image_scale(loaded.preprocess, (0.5, 0.25))])
    assert net.seen == [(100, 40)]  # 100 x 40 px at 1 mm (even sizes: the divisor is 2; the patch 32 px)
    assert pred.shape == (200, 160) and _dice(pred, mask) > 0.97
    (same,) = predict(loaded, [image])  # no spacings: taken as it is
    assert net.seen[-1] == (200, 160) and _dice(same, mask) > 0.99


def test_segment_cases_resize_each_image_and_each_slice_of_a_volume_by_its_spacing() -> None:
    image, mask = _disc((96, 96), 30)
    loaded, net = _loaded((0.8, 0.8))
    settings = InferenceSettings(measure=False, risk=False)
    volume = np.stack([image, image], axis=1)  # (C, Z, H, W)
    spacings = [(0.4, 0.4), (2.5, 1.6, 1.6)]
    results = segment_cases(loaded, [image, volume], [mask, None], settings, torch.device("cpu"), spacings)
    assert results[0].class_map.shape == (96, 96) and results[1].class_map.shape == (2, 96, 96)
    assert sorted(set(net.seen)) == [(48, 48), (192, 192)]  # the image halved, the volume's slices doubled
    assert _dice(results[0].class_map, mask) > 0.97 and _dice(results[1].class_map[1], mask) > 0.97
    assert predict_label_maps(loaded, [image], spacing=(1.6, 1.6))[0].shape == (96, 96)  # the pyfunc's path
    assert net.seen[-1] == (192, 192)


def test_validation_predicts_each_case_at_its_scale_and_scores_it_at_full_size() -> None:
    image, mask = _disc((96, 96), 30)
    loaded, net = _loaded((1.0, 1.0))
    sums = validation_sums(loaded, [(image, mask, (0.5, 0.5)), (image, mask)], "cpu")
    assert net.seen == [(48, 48), (96, 96)] and sums.cases == 2 and sums.dice_sum > 1.94


def test_spacing_is_refused_for_mask_rcnn_and_3d_models() -> None:
    base = {"step": "train", "preprocess": {"patch_size": [16, 16], "spacing": [0.8, 0.8]}}
    TrainStep.model_validate(base | {"model": {"arch": "unet", "classes": 2}})
    with pytest.raises(ValueError, match="preprocess.spacing resizes 2D images"):
        TrainStep.model_validate(base | {"model": {"arch": "maskrcnn", "classes": 2}})
