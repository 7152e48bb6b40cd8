"""Instance-model engine without Ray: targets from label maps, training, prediction, checkpoints."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from segops.config.schema import MaskRCNNSpec, PreprocessSpec, UNetSpec, WindowIntensity
from segops.data.instances import INSTANCE_STRIDE, split_instances, stack_instances
from segops.engine.checkpoint import LoadedModel, load_checkpoint, save_checkpoint
from segops.engine.detect import (
    InstancePrediction,
    detection_batch,
    detection_target,
    detection_train_steps,
    instance_label_map,
    predict_instances,
)
from segops.errors import ShapeError, StepError
from segops.models import build_model

SPEC = MaskRCNNSpec(arch="maskrcnn", min_size=64, max_size=64, anchor_sizes=(8, 16, 32, 64, 128))
PRE = PreprocessSpec(intensity=WindowIntensity(kind="window", lower=0, upper=255))
CPU = torch.device("cpu")


def _squares(n: int, seed: int, shape: tuple[int, int] = (64, 64)) -> list[tuple[np.ndarray, np.ndarray]]:
    """Bright squares (one instance of class 1 each) on noise."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        image = rng.normal(40, 10, (1, *shape)).astype(np.float32)
        y, x, s = rng.integers(2, shape[0] - 26), rng.integers(2, shape[1] - 26), rng.integers(12, 24)
        mask = np.zeros(shape, bool)
        mask[y : y + s, x : x + s] = True
        image[0][mask] += 150
        pairs.append((image, stack_instances([mask], [1], shape)))
    return pairs


def _tiny_model(spec: MaskRCNNSpec = SPEC) -> torch.nn.Module:
    """64 sampled RoIs per image instead of 512: the box head's FC layers dominate CPU time."""
    model = build_model(spec)
    model.roi_heads.fg_bg_sampler.batch_size_per_image = 64
    return model


def test_detection_target_boxes_classes_and_masks() -> None:
    label = np.zeros((10, 12), np.int32)
    label[2:5, 3:9] = 1 * INSTANCE_STRIDE + 1  # rows 2-4, columns 3-8
    label[7, 11] = 2 * INSTANCE_STRIDE + 3  # one pixel at x=11, y=7 (instance 3, class 2)
    label[6:8, 0:2] = 1 * INSTANCE_STRIDE + 2
    target = detection_target(label)
    torch.testing.assert_close(
        target["boxes"], torch.tensor([[3.0, 2.0, 9.0, 5.0], [0.0, 6.0, 2.0, 8.0], [11.0, 7.0, 12.0, 8.0]])
    )
    assert target["labels"].tolist() == [1, 1, 2] and target["labels"].dtype == torch.int64
    assert target["masks"].dtype == torch.uint8 and target["masks"].shape == (3, 10, 12)
    assert target["masks"].sum((1, 2)).tolist() == [18, 4, 1]

    empty = detection_target(np.zeros((10, 12), np.int32))
    assert empty["boxes"].shape == (0, 4) and empty["boxes"].dtype == torch.float32
    assert empty["labels"].shape == (0,) and empty["masks"].shape == (0, 10, 12)
    with pytest.raises(ShapeError, match=r"expected an \(H, W\) instance label map, got shape \(1, 10, 12\)"):
        detection_target(label[None])


def test_detection_batch_flips_image_and_label_together() -> None:
    label = np.zeros((20, 30), np.int32)
    label[1:4, 2:10] = INSTANCE_STRIDE + 1
    image = (label > 0).astype(np.float32)[None] * 255  # the image is the mask: flips must keep them equal
    seen, rng = set(), np.random.default_rng(0)
    for _ in range(40):
        images, targets = detection_batch([(image, label)], PRE, 1, rng)
        x, target = images[0], targets[0]
        assert x.shape == (1, 20, 30) and x.dtype == torch.float32
        torch.testing.assert_close(x[0], target["masks"][0].float())
        seen.add(tuple(target["boxes"][0].tolist()))
    assert seen == {(2.0, 1.0, 10.0, 4.0), (20.0, 1.0, 28.0, 4.0), (2.0, 16.0, 10.0, 19.0), (20.0, 16.0, 28.0, 19.0)}
    first, second = (detection_batch([(image, label)] * 4, PRE, 1, np.random.default_rng(5)) for _ in range(2))
    for a, b in zip(first[1], second[1]):  # seeded
        torch.testing.assert_close(a["boxes"], b["boxes"])


def test_training_steps_decrease_the_loss_and_report_components() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = _tiny_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    data = _squares(2, 1)
    data.append((data[0][0] * 0 + 40, np.zeros((64, 64), np.int32)))  # an image of negatives only
    losses = []
    for _ in range(8):
        sums = detection_train_steps(model, [detection_batch(data, PRE, 1, rng)], optimizer, CPU)
        losses.append(sums["loss"] / sums["images"])
    assert sums["images"] == 3
    parts = {"loss_classifier", "loss_box_reg", "loss_mask", "loss_mask_dice", "loss_objectness", "loss_rpn_box_reg"}
    assert set(sums) == parts | {"loss", "images"}
    assert np.isclose(sum(sums[k] for k in parts), sums["loss"], rtol=1e-5)
    assert all(np.isfinite(losses)) and np.mean(losses[-3:]) < 0.6 * losses[0]


def test_training_step_through_distributed_data_parallel(tmp_path: Path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = DistributedDataParallel(_tiny_model())
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        batch = detection_batch(_squares(2, 3), PRE, 1, np.random.default_rng(0))
        sums = detection_train_steps(model, [batch], optimizer, CPU)
        assert sums["images"] == 2 and np.isfinite(sums["loss"]) and "loss_mask_dice" in sums
    finally:
        dist.destroy_process_group()


def test_predict_instances_at_input_size_and_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = SPEC.model_copy(update={"score_threshold": 0.0, "detections_per_image": 5, "mask_threshold": 0.4})
    model = _tiny_model(spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    detection_train_steps(model, [detection_batch(_squares(2, 2), PRE, 1, np.random.default_rng(0))], optimizer, CPU)
    loaded = LoadedModel(model.eval(), spec, PRE, {})
    images = [img for img, _ in _squares(1, 4, shape=(48, 80))] + [np.zeros((3, 40, 40), np.float32)]
    before = predict_instances(loaded, images)
    assert len(before) == 2 and any(len(p.scores) for p in before)
    for pred, shape in zip(before, [(48, 80), (40, 40)]):
        assert pred.masks.dtype == bool and pred.masks.shape == (len(pred.scores), *shape)
        assert pred.scores.dtype == np.float32 and pred.classes.dtype == np.int64
        assert np.all(pred.scores >= 0.0) and set(pred.classes.tolist()) <= {1}
        assert instance_label_map(pred, shape).shape == shape

    save_checkpoint(tmp_path / "ckpt", model, spec, PRE, extra={"epoch": 1})
    reloaded = load_checkpoint(tmp_path / "ckpt")
    assert reloaded.model_spec == spec and reloaded.meta["epoch"] == 1
    for a, b in zip(before, predict_instances(reloaded, images)):
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)
        np.testing.assert_array_equal(a.classes, b.classes)

    unet = UNetSpec(arch="unet", channels=(4, 8), strides=(2,))
    with pytest.raises(StepError, match="needs an instance model \\(arch: maskrcnn\\), got arch 'unet'"):
        predict_instances(LoadedModel(build_model(unet), unet, PRE, {}), images)


def test_instance_label_map_paints_higher_scores_on_top() -> None:
    masks = np.zeros((3, 6, 6), bool)
    masks[0, 0:4, 0:4] = True  # score 0.9, class 2
    masks[1, 2:6, 2:6] = True  # score 0.5, class 1: loses the overlap
    masks[2, 0:2, 0:2] = True  # score 0.1, covered entirely: absent
    pred = InstancePrediction(masks, np.array([0.9, 0.5, 0.1], np.float32), np.array([2, 1, 1], np.int64))
    label = instance_label_map(pred, (6, 6))
    _, classes = split_instances(label)
    assert sorted(classes.tolist()) == [1, 2]
    np.testing.assert_array_equal(label // INSTANCE_STRIDE == 2, masks[0])
    np.testing.assert_array_equal(label // INSTANCE_STRIDE == 1, masks[1] & ~masks[0])
    empty = InstancePrediction(np.zeros((0, 6, 6), bool), np.zeros(0, np.float32), np.zeros(0, np.int64))
    assert not instance_label_map(empty, (6, 6)).any()
    with pytest.raises(ShapeError, match=r"expected \(N, 5, 6\)"):
        instance_label_map(pred, (5, 6))


def test_mask_nms_drops_fragments_of_a_higher_scoring_instance_and_keeps_touching_ones() -> None:
    from segops.engine.detect import InstancePrediction, mask_nms

    a, fragment, touching = np.zeros((3, 10, 10), bool)
    a[2:8, 2:6] = True  # 24 px
    fragment[2:8, 2:4] = True  # inside a: IoU 0.5
    fragment[2:3, 1:2] = True  # one pixel outside: IoU 12/25 = 0.48
    touching[2:8, 6:9] = True  # shares an edge with a, IoU 0
    pred = InstancePrediction(
        np.stack([fragment, touching, a]), np.array([0.8, 0.7, 0.9], np.float32), np.array([2, 1, 1])
    )
    kept = mask_nms(pred, 0.45)
    assert kept.scores.tolist() == pytest.approx([0.7, 0.9]) and kept.classes.tolist() == [1, 1]
    assert np.array_equal(kept.masks, np.stack([touching, a]))
    assert len(mask_nms(pred, 0.5).scores) == 3  # 0.48 is not above 0.5
    empty = InstancePrediction(np.zeros((0, 10, 10), bool), np.zeros(0, np.float32), np.zeros(0, np.int64))
    assert mask_nms(empty, 0.5).masks.shape == (0, 10, 10)


def _mask_nms_reference(masks: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """The rule written plainly: highest score first, dropped where its IoU with a kept mask passes."""
    kept: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        ious = [
            (masks[i] & masks[k]).sum() / max((masks[i] | masks[k]).sum(), 1) for k in kept
        ]  # full-image IoU, no boxes
        if not ious or max(ious) <= threshold:
            kept.append(int(i))
    return sorted(kept)


def test_mask_nms_within_boxes_equals_the_full_image_rule() -> None:
    """mask_nms counts overlaps inside the masks' boxes only (an image of hundreds of nuclei held no
    float copy of every mask): the same detections as the IoU over the whole image, empty masks kept."""
    from segops.engine.detect import mask_nms

    rng = np.random.default_rng(3)
    for trial in range(5):
        n, masks = 40, np.zeros((40, 48, 64), bool)
        for j in range(n - 2):  # overlapping rectangles of many sizes; two empty masks
            y, x = rng.integers(0, 40), rng.integers(0, 56)
            masks[j, y : y + rng.integers(2, 16), x : x + rng.integers(2, 16)] = True
        scores = rng.random(n).astype(np.float32)
        pred = InstancePrediction(masks, scores, np.ones(n, np.int64))
        for threshold in (0.1, 0.5):
            kept = mask_nms(pred, threshold)
            expected = _mask_nms_reference(masks, scores, threshold)
            np.testing.assert_array_equal(kept.scores, scores[expected], err_msg=f"trial {trial}, {threshold}")


def test_the_model_pastes_masks_as_bool_equal_to_torchvision_thresholded() -> None:
    """Masks come out of the model pasted and thresholded in chunks (bool, a byte a pixel), equal to
    torchvision's float paste thresholded at once."""
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    from segops.models.maskrcnn import ChannelsTo3Transform

    transform = ChannelsTo3Transform(1, 64, 64, mask_threshold=0.4)
    transform.PASTE_CHUNK = 3  # several chunks for 8 detections
    transform.eval()
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(8, 1, 28, 28, generator=gen)
    boxes = torch.tensor([[4.0 * i, 2.0 * i, 4.0 * i + 20, 2.0 * i + 30] for i in range(8)])
    result = transform.postprocess([{"boxes": boxes.clone(), "masks": probs}], [(64, 64)], [(96, 128)])
    scaled = boxes * torch.tensor([2.0, 1.5, 2.0, 1.5])  # back to the 128 x 96 input
    torch.testing.assert_close(result[0]["boxes"], scaled)
    expected = paste_masks_in_image(probs, scaled, (96, 128)) >= 0.4
    assert result[0]["masks"].dtype == torch.bool and result[0]["masks"].shape == (8, 1, 96, 128)
    assert torch.equal(result[0]["masks"], expected)
    empty = transform.postprocess([{"boxes": boxes[:0], "masks": probs[:0]}], [(64, 64)], [(96, 128)])
    assert empty[0]["masks"].shape == (0, 1, 96, 128) and empty[0]["masks"].dtype == torch.bool
