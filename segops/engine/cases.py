"""Per-case inference without Ray: predict a batch, then turn each prediction into a typed case result.

The inference actor (:mod:`segops.cluster.infer`) loads a model once, feeds batches through
:func:`predict_batch`, gives each case's prediction to :func:`case_result` and hands the
:class:`CaseResult` to the writers in :mod:`segops.outputs`. Everything a case's row says about its
mask and scores is decided here, from frozen :class:`InferenceSettings`, so this path is tested
without Ray.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from segops.config.schema import SegmentStep, SlidingWindowSpec, TTASpec
from segops.data.instances import class_map
from segops.engine.checkpoint import LoadedModel
from segops.engine.detect import InstancePrediction, instance_label_map, predict_instances
from segops.engine.instance_eval import evaluate_instances
from segops.engine.postprocess import postprocessing_from_meta
from segops.engine.predict import class_indices, class_probabilities, predict, probability_class_map
from segops.errors import StepError
from segops.instance_metrics import coco_results
from segops.metrics import case_scores, rand_error


@dataclass(frozen=True)
class SemanticPrediction:
    """A semantic model's output for one case.

    Attributes:
        class_map: (H, W) or (Z, H, W) uint8 class map, 0 = background.
        probabilities: (classes, *class_map.shape) float32 softmax when
            :attr:`InferenceSettings.probabilities` is set (``class_map`` is then its argmax, before
            the model's postprocessing); else None.
    """

    class_map: np.ndarray
    probabilities: np.ndarray | None = None


#: A model's output for one case: a semantic prediction, or an image's instances.
Prediction = SemanticPrediction | InstancePrediction
#: Matched-instance scores (IoU ≥ 0.5, class-aware) of a labelled instance case, in row order.
MATCH_SCORES = ("tp", "fp", "fn", "matched_dice", "matched_iou")


@dataclass(frozen=True)
class InferenceSettings:
    """How cases are segmented and scored; built once on the driver, shipped to actors as is.

    Attributes:
        amp: bfloat16 autocast on CUDA (no effect on CPU).
        sliding: MONAI sliding-window settings (large 2D images, every 3D volume).
        boundary_class: class index of boundaries; set, labelled cases get the ISBI 2012 Rand error.
        tta: test-time mirroring (semantic models): the mean softmax over the mirrors decides.
        probabilities: keep each case's softmax (:attr:`CaseResult.probabilities`); off, none is
            computed, as a volume's costs classes × its size in float32.
        postprocess: apply the postprocessing stored with the model (:mod:`segops.engine.postprocess`)
            to each class map; the probabilities are left as the model gave them.
    """

    amp: bool = True
    sliding: SlidingWindowSpec = field(default_factory=SlidingWindowSpec)
    boundary_class: int | None = None
    tta: TTASpec = field(default_factory=TTASpec)
    probabilities: bool = False
    postprocess: bool = True

    @classmethod
    def from_step(cls, step: SegmentStep) -> InferenceSettings:
        """The settings a ``segment`` step asks for."""
        return cls(
            amp=step.amp,
            sliding=step.sliding_window,
            boundary_class=step.boundary_class,
            tta=step.tta,
            probabilities="probabilities" in step.outputs,
            postprocess=step.postprocess,
        )

    def check_model(self, model_spec: Any, step: str) -> None:
        """Refuse, before any actor starts, settings that ``model_spec``'s model cannot honour.

        Args:
            step: the step's name in messages (``segment``, ``evaluate``).

        Raises:
            StepError: mirroring or probabilities asked of an instance model, or a flip axis the
                model's images do not have.
        """
        axes = list(self.tta.flip_axes)
        if model_spec.task == "instance" and axes:
            raise StepError(
                f"{step}.tta.flip_axes {axes}: test-time mirroring is for semantic models; this model is "
                f"{model_spec.arch!r} (Mask R-CNN), so remove {step}.tta"
            )
        if model_spec.task == "instance" and self.probabilities:
            raise StepError(
                f"{step}.outputs: probabilities needs a semantic model; this model is {model_spec.arch!r} "
                "(Mask R-CNN), whose outputs are png and coco-rle"
            )
        dims = getattr(model_spec, "spatial_dims", 2)  # Mask R-CNN specs have none: 2D
        if any(a >= dims for a in axes):
            names = "Z, H, W" if dims == 3 else "H, W"
            raise StepError(
                f"{step}.tta.flip_axes {axes}: this is a {dims}D model, whose images have spatial axes "
                f"0..{dims - 1} ({names}); use axes below {dims}"
            )


@dataclass(frozen=True)
class CaseScores:
    """Semantic scores of one labelled case against its class-map truth (means over foreground classes)."""

    label_fg_fraction: float
    dice: float
    iou: float
    dice_per_class: dict[int, float]  # class 1..classes-1 → Dice
    pixel_error: float
    rand_error: float | None  # None unless InferenceSettings.boundary_class is set


@dataclass(frozen=True)
class CaseResult:
    """Everything about one segmented case except where its files go.

    Attributes:
        class_map: (H, W) or (Z, H, W) uint8 class map, 0 = background.
        label_map: (H, W) int32 instance label map (class * 1000 + k) of an instance model; else None.
        detections: an instance case's COCO results (RLE masks, no ``image_id``); empty otherwise.
        probabilities: (classes, *class_map.shape) float16 softmax when
            :attr:`InferenceSettings.probabilities` is set; else None.
        fg_fraction: share of ``class_map`` pixels that are foreground.
        scores: semantic scores; None for an unlabelled case.
        matched: :data:`MATCH_SCORES` of a labelled instance case; empty otherwise.
        eval_entry: a labelled instance case's ground truth and detections as COCO RLE (image id
            0; the driver renumbers) for mask AP over the whole set; None otherwise.
    """

    class_map: np.ndarray
    label_map: np.ndarray | None = None
    detections: tuple[dict[str, Any], ...] = ()
    fg_fraction: float = float("nan")
    scores: CaseScores | None = None
    matched: dict[str, float] = field(default_factory=dict)
    eval_entry: dict[str, Any] | None = None
    probabilities: np.ndarray | None = None

    def row_fields(self) -> dict[str, Any]:
        """The case's score columns of the result row (:data:`segops.outputs.reports.RESULT_SCHEMA`)."""
        row: dict[str, Any] = {"fg_fraction": self.fg_fraction}
        if self.label_map is not None:
            row["n_instances"] = float(len(self.detections))
        if self.scores is not None:
            s = self.scores
            row |= {
                "label_fg_fraction": s.label_fg_fraction,
                "dice": s.dice,
                "iou": s.iou,
                "dice_per_class": json.dumps(s.dice_per_class),
                "pixel_error": s.pixel_error,
            }
            if s.rand_error is not None:
                row["rand_error"] = s.rand_error
        row |= self.matched
        if self.eval_entry is not None:
            row["eval_json"] = json.dumps(self.eval_entry, separators=(",", ":"))
        return row


@dataclass(frozen=True)
class CaseFailure:
    """Why one case of a batch has no result: the stage (``segment``: prediction, ``score``) and the error."""

    stage: str
    error: BaseException


def segment_cases(
    loaded: LoadedModel,
    images: list[np.ndarray],
    labels: list[np.ndarray | None],
    settings: InferenceSettings,
    device: torch.device | None = None,
) -> list[CaseResult | CaseFailure]:
    """Predict a batch and score each case: one result or failure per image, same order.

    The batch goes through the model at once; if that fails, case by case, so one bad case
    (e.g. an image the network cannot take) fails alone. A case whose label does not fit its
    prediction fails at ``score``; the others are unaffected.

    Args:
        labels: each case's truth (see :func:`case_result`), None when it has none.
    """
    try:
        predictions: list[Prediction | CaseFailure] = list(predict_batch(loaded, images, settings, device))
    except Exception:  # find the culprit(s): retry one by one
        predictions = []
        for image in images:
            try:
                predictions.append(predict_batch(loaded, [image], settings, device)[0])
            except Exception as exc:
                predictions.append(CaseFailure("segment", exc))
    results: list[CaseResult | CaseFailure] = []
    for prediction, label in zip(predictions, labels):
        if isinstance(prediction, CaseFailure):
            results.append(prediction)
            continue
        try:
            results.append(case_result(prediction, label, settings, loaded.model_spec.classes))
        except Exception as exc:
            results.append(CaseFailure("score", exc))
    return results


def predict_batch(
    loaded: LoadedModel,
    images: list[np.ndarray],
    settings: InferenceSettings,
    device: torch.device | None = None,
) -> list[Prediction]:
    """One prediction per image, same order.

    Args:
        images: (C, H, W) images or (C, Z, H, W) volumes, float32 as decoded. A volume goes whole
            through the 3D sliding window with a 3D model, slice by slice with a 2D one.
        device: where the model is; default the device of its parameters.

    Returns:
        :class:`SemanticPrediction` s ((H, W) class maps, (Z, H, W) per volume), or
        :class:`InstancePrediction` s from an instance model.
    """
    if device is None:
        device = next(loaded.model.parameters()).device
    if loaded.model_spec.task == "instance":
        return list(predict_instances(loaded, images, device, settings.amp))
    if settings.probabilities:
        probabilities = _per_case(class_probabilities, loaded, images, settings, device)
        predictions = [SemanticPrediction(probability_class_map(p), p) for p in probabilities]
    else:
        predictions = [SemanticPrediction(m) for m in _per_case(class_indices, loaded, images, settings, device)]
    post = postprocessing_from_meta(loaded.meta) if settings.postprocess else None
    if post is None:
        return predictions
    return [replace(p, class_map=post.apply(p.class_map)) for p in predictions]


def _per_case(
    head: Callable[[torch.Tensor], torch.Tensor],
    loaded: LoadedModel,
    images: list[np.ndarray],
    settings: InferenceSettings,
    device: torch.device,
) -> list[np.ndarray]:
    """:func:`predict` with ``head`` (class maps or probabilities) per case: a volume with a 2D model
    slice by slice, the slices' outputs stacked on the Z axis (third from last)."""
    args = (device, settings.amp, settings.sliding, settings.tta.flip_axes, head)
    if not images or images[0].ndim == 3 or loaded.model_spec.spatial_dims == 3:
        return predict(loaded, images, *args)
    return [np.stack(predict(loaded, [v[:, z] for z in range(v.shape[1])], *args), axis=-3) for v in images]


def case_result(
    prediction: Prediction, label: np.ndarray | None, settings: InferenceSettings, classes: int
) -> CaseResult:
    """Class map, encodings and scores of one case.

    Args:
        prediction: from :func:`predict_batch`.
        label: the case's truth, None when it has none: a class map of ``prediction``'s shape, or
            an (H, W) instance label map for an instance prediction.
        classes: the model's number of classes, background included.
    """
    if isinstance(prediction, InstancePrediction):
        return _instance_result(prediction, label, settings, classes)
    mask, probabilities = prediction.class_map, prediction.probabilities
    return CaseResult(
        class_map=mask,
        fg_fraction=float((mask > 0).mean()),
        scores=None if label is None else _scores(mask, label, settings, classes),
        probabilities=None if probabilities is None else probabilities.astype(np.float16),
    )


def _instance_result(
    pred: InstancePrediction, label: np.ndarray | None, settings: InferenceSettings, classes: int
) -> CaseResult:
    """An instance case: its detections are COCO-encoded once, for its outputs and for mask AP."""
    label_map = instance_label_map(pred, pred.masks.shape[-2:])  # masks are (N, H, W), N may be 0
    mask = class_map(label_map)
    if label is None:
        dt = coco_results(0, pred.masks, pred.scores, pred.classes)
        entry, matched = None, {}
    else:
        # image id given by the driver
        entry, scores = evaluate_instances(0, pred.masks, pred.scores, pred.classes, label)
        dt = entry["dt"]
        matched = {k: float(scores[k]) for k in MATCH_SCORES}
    return CaseResult(
        class_map=mask,
        label_map=label_map,
        detections=tuple({k: v for k, v in r.items() if k != "image_id"} for r in dt),
        fg_fraction=float((mask > 0).mean()),
        scores=None if label is None else _scores(mask, class_map(label), settings, classes),
        matched=matched,
        eval_entry=entry,
    )


def _scores(mask: np.ndarray, truth: np.ndarray, settings: InferenceSettings, classes: int) -> CaseScores:
    scores = case_scores(mask, truth, classes)
    return CaseScores(
        label_fg_fraction=float((truth > 0).mean()),
        dice=scores["dice"],
        iou=scores["iou"],
        dice_per_class={c: scores[f"dice_{c}"] for c in range(1, classes)},
        pixel_error=scores["pixel_error"],
        rand_error=None if settings.boundary_class is None else rand_error(mask, truth, settings.boundary_class),
    )
