"""The planner's timing probe: one training step on seeded random data shaped like the planned run's."""

import numpy as np
import torch

from segops.config.schema import MaskRCNNSpec
from segops.engine.probe import _grid_objects, random_training_step


def test_grid_objects_are_disjoint_boxes_matching_their_masks() -> None:
    target = _grid_objects(224, 288, 5)
    masks, boxes = target["masks"].numpy().astype(bool), target["boxes"].numpy()
    assert masks.shape == (5, 224, 288) and target["labels"].tolist() == [1] * 5
    assert masks.sum(axis=0).max() == 1  # no pixel in two objects
    for mask, (x0, y0, x1, y1) in zip(masks, boxes):
        ys, xs = np.nonzero(mask)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)


def test_a_mask_rcnn_step_trains_on_the_planned_image_shape_and_objects() -> None:
    """The probe times the median image as Mask R-CNN trains on it (64x96 here, not 64x64) with its
    objects: the step sees exactly those images and targets."""
    spec = MaskRCNNSpec(arch="maskrcnn", min_size=64, max_size=96, anchor_sizes=(8, 16, 32, 64, 128))
    torch.manual_seed(0)
    model, step = random_training_step(spec, 2, (64, 96), torch.device("cpu"), objects=3)
    seen = []
    hook = model.transform.register_forward_hook(lambda _m, _i, out: seen.append(out))
    step()
    hook.remove()
    images, targets = seen[0]
    assert tuple(images.tensors.shape) == (2, 3, 64, 96)
    assert [len(t["boxes"]) for t in targets] == [3, 3]
