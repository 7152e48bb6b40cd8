"""Training and prediction for instance models (Mask R-CNN); plain torch, no Ray.

The detection counterpart of :mod:`segops.engine.train` and :mod:`segops.engine.predict`:
records carry an instance label map (:mod:`segops.data.instances`), which becomes
torchvision's per-image target dict here, and predictions become a label map again.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from segops.config.schema import PreprocessSpec
from segops.data.instances import split_instances, stack_instances
from segops.data.transforms import prepare_image
from segops.engine.checkpoint import LoadedModel
from segops.engine.optim import check_progress, clipped_step
from segops.engine.precision import autocast
from segops.errors import ShapeError, StepError

#: Mask R-CNN from scratch has large early mask-head gradients (BCE starts far above 1).
MAX_GRAD_NORM = 10.0


def detection_target(label: np.ndarray) -> dict[str, torch.Tensor]:
    """Instance label map → torchvision Mask R-CNN target.

    Args:
        label: (H, W) integer instance label map (``class * 65536 + k``, 0 = background).

    Returns:
        ``boxes`` (N, 4) float32 xyxy with exclusive x2, y2 (a one-pixel instance at (x, y)
        is ``[x, y, x + 1, y + 1]``); ``labels`` (N,) int64 classes; ``masks`` (N, H, W) uint8.
        N = 0 gives empty tensors of those shapes (an image of negatives only).
    """
    if label.ndim != 2:
        raise ShapeError(f"expected an (H, W) instance label map, got shape {label.shape}")
    masks, classes = split_instances(label)
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for i, mask in enumerate(masks):
        ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        boxes[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return {
        "boxes": torch.from_numpy(boxes),
        "labels": torch.from_numpy(classes.astype(np.int64)),
        "masks": torch.from_numpy(masks.astype(np.uint8)),
    }


def detection_batch(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    preprocess: PreprocessSpec,
    in_channels: int,
    rng: np.random.Generator,
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """(raw image, instance label map) pairs → Mask R-CNN inputs, randomly flipped.

    Whole images, not patches: the model resizes them to its own ``min_size``. Each image is
    flipped left-right and up-down with probability 1/2 each, its label alike.

    Args:
        pairs: image (C, H, W) float32 as decoded, label (H, W) instance label map.

    Returns:
        images: (in_channels, H, W) float32 each; targets: :func:`detection_target` of each label.
    """
    images, targets = [], []
    for image, label in pairs:
        x = prepare_image(image, preprocess.intensity, in_channels)
        if x.shape[1:] != label.shape:
            raise ShapeError(f"image of shape {image.shape} has a label of shape {label.shape}; expected (H, W) equal")
        for axis in (2, 1):  # left-right, then up-down
            if rng.random() < 0.5:
                x, label = np.flip(x, axis), np.flip(label, axis - 1)
        images.append(torch.from_numpy(np.ascontiguousarray(x)))
        targets.append(detection_target(np.ascontiguousarray(label)))
    return images, targets


def detection_train_steps(
    model: nn.Module,
    batches: Iterable[tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    amp: bool = False,
    max_grad_norm: float = MAX_GRAD_NORM,
) -> dict[str, float]:
    """One optimisation step per batch on the sum of Mask R-CNN's losses (gradient norm clipped; a
    non-finite step skipped, and an epoch of only those an error: :mod:`segops.engine.optim`).

    ``model`` may be wrapped in DistributedDataParallel; it is called as ``model(images, targets)``.

    Returns:
        Per-image-weighted sums: ``loss`` (the total) and each component the model reports
        (``loss_classifier``, ``loss_box_reg``, ``loss_mask``, ``loss_mask_dice`` when its weight
        is > 0, ``loss_objectness``, ``loss_rpn_box_reg``), plus ``images``, the count; divide
        by ``images`` (after summing across workers) for means.
    """
    model.train()
    sums: dict[str, float] = defaultdict(float)
    count, steps, taken = 0, 0, 0
    for images, targets in batches:
        images = [x.to(device) for x in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            losses = model(images, targets)
        loss = sum(losses.values())
        loss.backward()
        steps += 1
        if not clipped_step(model, optimizer, max_grad_norm) or not math.isfinite(float(loss.detach())):
            continue  # a non-finite gradient: no update, and the step is left out of the sums
        taken += 1
        n = len(images)
        for name, value in (("loss", loss), *losses.items()):
            sums[name] += float(value.detach()) * n
        count += n
    check_progress(taken, steps)
    return {**sums, "images": count}


@dataclass(frozen=True)
class InstancePrediction:
    """Instances found in one image, at the input image's size.

    masks: (N, H, W) bool; scores: (N,) float32 in [0, 1]; classes: (N,) int64, 1..classes-1.
    """

    masks: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


def predict_instances(
    loaded: LoadedModel,
    images: list[np.ndarray],
    device: str | torch.device = "cpu",
    amp: bool = False,
) -> list[InstancePrediction]:
    """Detect and segment instances in raw record images (one forward for the whole list).

    Args:
        images: each (C, H, W) float32 as decoded (before intensity normalisation).
        amp: autocast to bfloat16 on CUDA (ignored on CPU).

    Returns:
        One prediction per image, same order; detections scoring below ``score_threshold``
        are dropped and masks are mask probability >= ``mask_threshold``.
    """
    spec = loaded.model_spec
    if spec.task != "instance":
        raise StepError(f"predict_instances needs an instance model (arch: maskrcnn), got arch {spec.arch!r}")
    if not images:
        return []
    dev = torch.device(device)
    inputs = [torch.from_numpy(prepare_image(img, loaded.preprocess.intensity, spec.in_channels)) for img in images]
    loaded.model.eval()
    with torch.inference_mode(), autocast(dev, amp):
        outputs = loaded.model([x.to(dev) for x in inputs])
    predictions = []
    for out in outputs:
        scores = out["scores"].float().cpu()
        keep = scores >= spec.score_threshold
        masks = out["masks"][keep, 0].cpu()  # bool, thresholded as pasted (ChannelsTo3Transform); else probabilities
        masks = masks if masks.dtype == torch.bool else masks.float() >= spec.mask_threshold
        pred = InstancePrediction(
            masks=masks.numpy(),
            scores=scores[keep].numpy().astype(np.float32),
            classes=out["labels"][keep].cpu().numpy().astype(np.int64),
        )
        predictions.append(mask_nms(pred, spec.mask_nms_threshold) if spec.mask_nms_threshold < 1 else pred)
    return predictions


def mask_nms(pred: InstancePrediction, threshold: float) -> InstancePrediction:
    """Drop detections whose mask overlaps a higher-scoring detection's mask by IoU > ``threshold``.

    Class-agnostic, on masks rather than boxes: torchvision's box NMS is per class and lets
    through partial masks of one object (fragments, or the same object as two classes), which
    are false positives for every instance metric. Touching objects overlap little and survive.
    """
    if len(pred.scores) < 2:
        return pred
    order = np.argsort(-pred.scores, kind="stable")
    masks = pred.masks
    areas = masks.reshape(len(masks), -1).sum(1)
    rows, cols = masks.any(axis=2), masks.any(axis=1)  # each mask's box: overlaps are counted inside boxes only
    y0, y1 = rows.argmax(1), rows.shape[1] - rows[:, ::-1].argmax(1)
    x0, x1 = cols.argmax(1), cols.shape[1] - cols[:, ::-1].argmax(1)
    kept: list[int] = []
    for i in order:
        k = np.asarray(kept, dtype=np.intp)
        boxed = (areas[k] > 0) & (y0[k] < y1[i]) & (y0[i] < y1[k]) & (x0[k] < x1[i]) & (x0[i] < x1[k])
        for n in k[boxed] if areas[i] else k[:0]:
            ys, xs = slice(max(y0[i], y0[n]), min(y1[i], y1[n])), slice(max(x0[i], x0[n]), min(x1[i], x1[n]))
            inter = np.count_nonzero(masks[i, ys, xs] & masks[n, ys, xs])
            if inter / max(areas[i] + areas[n] - inter, 1) > threshold:
                break
        else:
            kept.append(int(i))
    kept.sort()
    return InstancePrediction(pred.masks[kept], pred.scores[kept], pred.classes[kept])


def instance_label_map(pred: InstancePrediction, shape: tuple[int, int]) -> np.ndarray:
    """Prediction → (H, W) int32 instance label map; where masks overlap, the higher score wins.

    Instances whose mask is empty, or covered entirely by higher-scoring ones, are absent.
    """
    if pred.masks.shape[1:] != tuple(shape):
        raise ShapeError(f"prediction masks have shape {pred.masks.shape}; expected (N, {shape[0]}, {shape[1]})")
    order = np.argsort(pred.scores, kind="stable")  # ascending: later (higher) ones are painted on top
    return stack_instances([pred.masks[i] for i in order], [int(pred.classes[i]) for i in order], tuple(shape))
