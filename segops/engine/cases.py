"""Per-case inference without Ray: predict a batch, then turn each prediction into a typed case result.

The inference actor (:mod:`segops.cluster.infer`) loads a model once, feeds batches through
:func:`predict_batch`, gives each case's prediction to :func:`case_result` and hands the
:class:`CaseResult` to the writers in :mod:`segops.outputs`. Everything a case's row says about its
mask and scores is decided here, from frozen :class:`InferenceSettings`, so this path is tested
without Ray.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from segops.config.schema import SegmentStep, SlidingWindowSpec, TTASpec
from segops.config.sources import IGNORE_LABEL
from segops.data.instances import class_map
from segops.data.transforms import image_scale
from segops.engine.case_extras import (
    Spacing,
    case_measurements,
    embedding_distances,
    embedding_tap,
    measurement_fields,
)
from segops.engine.checkpoint import LoadedModel
from segops.engine.detect import InstancePrediction, instance_label_map, predict_instances
from segops.engine.embeddings import BottleneckTap, EmbeddingReference
from segops.engine.instance_eval import evaluate_instances
from segops.engine.postprocess import postprocessing_from_meta
from segops.engine.predict import class_indices, class_probabilities, predict, probability_class_map
from segops.engine.risk import (
    CaseRisk,
    RiskReference,
    instance_risk,
    intensity_outside,
    member_network,
    risk_head,
    semantic_risk,
    split_head,
)
from segops.errors import StepError
from segops.instance_metrics import coco_results
from segops.metrics import case_scores, rand_error
from segops.metrics.measurements import CaseMeasurements


@dataclass(frozen=True)
class SemanticPrediction:
    """A semantic model's output for one case.

    Attributes:
        class_map: (H, W) or (Z, H, W) uint8 class map, 0 = background.
        probabilities: (classes, *class_map.shape) float32 softmax when
            :attr:`InferenceSettings.probabilities` is set (``class_map`` is then its argmax, before
            the model's postprocessing); else None.
        entropy: (*class_map.shape) float32 normalised softmax entropy
            (:func:`segops.engine.risk.normalised_entropy`) when :attr:`InferenceSettings.risk` is set.
        member_dice: agreement of the mirrors / folds (:func:`segops.engine.risk.pooled_member_dice`);
            NaN with one member or without risk.
        members: what the members are, for the risk's reasons ("mirrors", "folds", "folds and mirrors").
    """

    class_map: np.ndarray
    probabilities: np.ndarray | None = None
    entropy: np.ndarray | None = None
    member_dice: float = float("nan")
    members: str = "members"


#: A model's output for one case: a semantic prediction, or an image's instances.
Prediction = SemanticPrediction | InstancePrediction
#: Matched-instance scores (IoU ≥ 0.5, class-aware) of a labelled instance case, in row order.
MATCH_SCORES = ("tp", "fp", "fn", "matched_dice", "matched_iou")


@dataclass(frozen=True)
class InferenceSettings:
    """How cases are segmented and scored; built once on the driver, shipped to actors as is.

    Attributes:
        amp: bfloat16 autocast on CUDA, and for semantic models on a CPU with bfloat16 in hardware
            (:func:`segops.engine.precision.inference_autocast`).
        sliding: MONAI sliding-window settings (large 2D images, every 3D volume).
        boundary_class: class index of boundaries; set, labelled cases get the ISBI 2012 Rand error.
        tta: test-time mirroring (semantic models): the mean softmax over the mirrors decides.
        probabilities: keep each case's softmax (:attr:`CaseResult.probabilities`); off, none is
            computed, as a volume's costs classes × its size in float32.
        postprocess: apply the postprocessing stored with the model (:mod:`segops.engine.postprocess`)
            to each class map; the probabilities are left as the model gave them.
        risk: compute each case's risk (:mod:`segops.engine.risk`) in the prediction pass.
        reference: the model's training fingerprint as the risk needs it (built once, on the
            driver); the default knows nothing, so the fingerprint-based signals are NaN / off.
        measure: measure each case's objects (:mod:`segops.engine.case_extras`).
        embeddings: the training cases' encoder embeddings: each case's distance from them is
            computed (from the prediction's own encoder pass for 2D images predicted whole, else
            one extra encoder pass per batch); None: not computed.
    """

    amp: bool = True
    sliding: SlidingWindowSpec = field(default_factory=SlidingWindowSpec)
    boundary_class: int | None = None
    tta: TTASpec = field(default_factory=TTASpec)
    probabilities: bool = False
    postprocess: bool = True
    risk: bool = True
    reference: RiskReference = field(default_factory=RiskReference)
    measure: bool = True
    embeddings: EmbeddingReference | None = None

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
            risk=step.review.enabled,
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
        roi = self.sliding.roi_size
        divisors = getattr(model_spec, "axis_divisors", None) or [getattr(model_spec, "size_divisor", 1)] * 3
        if roi is not None and any(side % d for side, d in zip(roi, divisors)):
            fit = [max(d, side // d * d) for side, d in zip(roi, divisors)]
            raise StepError(
                f"{step}.sliding_window.roi_size {list(roi)}: this {model_spec.arch!r} model takes tiles whose "
                f"sides are multiples of {list(divisors[: len(roi)])}; use e.g. {fit}"
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
    label_classes: tuple[int, ...] = ()  # the foreground classes the truth holds


@dataclass(frozen=True)
class CaseResult:
    """Everything about one segmented case except where its files go.

    Attributes:
        class_map: (H, W) or (Z, H, W) uint8 class map, 0 = background.
        label_map: (H, W) int32 instance label map (class * 65536 + k) of an instance model; else None.
        detections: an instance case's COCO results (RLE masks, no ``image_id``); empty otherwise.
        probabilities: (classes, *class_map.shape) float16 softmax when
            :attr:`InferenceSettings.probabilities` is set; else None.
        fg_fraction: share of ``class_map`` pixels that are foreground.
        scores: semantic scores; None for an unlabelled case.
        matched: :data:`MATCH_SCORES` of a labelled instance case; empty otherwise.
        eval_entry: a labelled instance case's ground truth and detections as COCO RLE (image id
            0; the driver renumbers) for mask AP over the whole set; None otherwise.
        risk: the case's risk signals and score (:mod:`segops.engine.risk`); None when
            :attr:`InferenceSettings.risk` is off.
        measurements: its objects' sizes (:mod:`segops.engine.case_extras`); None when not measured.
        embedding_distance: its encoder embedding's distance from the training cases'; NaN when
            not computed.
    """

    class_map: np.ndarray
    label_map: np.ndarray | None = None
    detections: tuple[dict[str, Any], ...] = ()
    fg_fraction: float = float("nan")
    scores: CaseScores | None = None
    matched: dict[str, float] = field(default_factory=dict)
    eval_entry: dict[str, Any] | None = None
    probabilities: np.ndarray | None = None
    risk: CaseRisk | None = None
    measurements: CaseMeasurements | None = None
    embedding_distance: float = float("nan")

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
                "label_classes": json.dumps(list(s.label_classes)),
                "pixel_error": s.pixel_error,
            }
            if s.rand_error is not None:
                row["rand_error"] = s.rand_error
        row |= self.matched
        if self.eval_entry is not None:
            row["eval_json"] = json.dumps(self.eval_entry, separators=(",", ":"))
        if self.risk is not None:
            row |= self.risk.row_fields()
        if not np.isnan(self.embedding_distance):
            row["embedding_distance"] = self.embedding_distance
        return row | measurement_fields(self.measurements)


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
    spacings: Sequence[Spacing] | None = None,
) -> list[CaseResult | CaseFailure]:
    """Predict a batch and score, measure and place each case: one result or failure per image, same order.

    The batch goes through the model at once; if that fails, case by case, so one bad case
    (e.g. an image the network cannot take) fails alone. A case whose label does not fit its
    prediction fails at ``score``; the others are unaffected.

    Args:
        labels: each case's truth (see :func:`case_result`), None when it has none.
        spacings: each case's spacing in mm in its class map's axis order, None when unknown
            (objects are then measured in px only, and a model with ``preprocess.spacing`` takes
            the image as it is); default: all unknown.
    """
    spacings = list(spacings) if spacings is not None else [None] * len(images)
    outside = [_outside(image, settings) for image in images]
    with embedding_tap(loaded, images, settings.embeddings) as tap:
        try:
            predictions: list[Prediction | CaseFailure] = list(
                predict_batch(loaded, images, settings, device, tap, spacings)
            )
        except Exception:  # find the culprit(s): retry one by one
            predictions, tap = [], None  # the batch's rows are incomplete: embed() each image instead
            for image, spacing in zip(images, spacings):
                try:
                    predictions.append(predict_batch(loaded, [image], settings, device, spacings=[spacing])[0])
                except Exception as exc:
                    predictions.append(CaseFailure("segment", exc))
    distances = embedding_distances(loaded, images, settings.embeddings, _device(loaded, device), settings.amp, tap)
    results: list[CaseResult | CaseFailure] = []
    for prediction, label, out, spacing, distance in zip(predictions, labels, outside, spacings, distances):
        if isinstance(prediction, CaseFailure):
            results.append(prediction)
            continue
        try:
            result = case_result(prediction, label, settings, loaded.model_spec.classes, out)
            measured = None
            if settings.measure:
                measured = case_measurements(
                    result.class_map, result.label_map, label, spacing, loaded.model_spec.classes
                )
            results.append(replace(result, measurements=measured, embedding_distance=distance))
        except Exception as exc:
            results.append(CaseFailure("score", exc))
    return results


def _device(loaded: LoadedModel, device: torch.device | None) -> torch.device:
    """``device``, or by default the device of the model's parameters."""
    return next(loaded.model.parameters()).device if device is None else device


def _outside(image: np.ndarray, settings: InferenceSettings) -> float:
    """The risk's :func:`~segops.engine.risk.intensity_outside`; NaN without risk, or for an image
    it cannot read (which then fails at ``segment``, alone)."""
    try:
        return intensity_outside(np.asarray(image), settings.reference) if settings.risk else float("nan")
    except Exception:
        return float("nan")


def predict_batch(
    loaded: LoadedModel,
    images: list[np.ndarray],
    settings: InferenceSettings,
    device: torch.device | None = None,
    tap: BottleneckTap | None = None,
    spacings: Sequence[Spacing] | None = None,
) -> list[Prediction]:
    """One prediction per image, same order.

    Args:
        images: (C, H, W) images or (C, Z, H, W) volumes, float32 as decoded. A volume goes whole
            through the 3D sliding window with a 3D model, slice by slice with a 2D one.
        device: where the model is; default the device of its parameters.
        tap: an open :class:`~segops.engine.embeddings.BottleneckTap` that keeps the embeddings of
            the images predicted whole (images, not volumes).
        spacings: each image's spacing in mm (see :func:`segment_cases`), for a model with
            ``preprocess.spacing``.

    Returns:
        :class:`SemanticPrediction` s ((H, W) class maps, (Z, H, W) per volume), or
        :class:`InstancePrediction` s from an instance model.
    """
    device = _device(loaded, device)
    if loaded.model_spec.task == "instance":
        return list(predict_instances(loaded, images, device, settings.amp))
    if settings.risk:
        predictions = _with_risk(loaded, images, settings, device, tap, spacings)
    elif settings.probabilities:
        probabilities = _per_case(class_probabilities, loaded, images, settings, device, tap=tap, spacings=spacings)
        predictions = [SemanticPrediction(probability_class_map(p), p) for p in probabilities]
    else:
        maps = _per_case(class_indices, loaded, images, settings, device, tap=tap, spacings=spacings)
        predictions = [SemanticPrediction(m) for m in maps]
    post = postprocessing_from_meta(loaded.meta) if settings.postprocess else None
    if post is None:
        return predictions
    return [replace(p, class_map=post.apply(p.class_map)) for p in predictions]


def _with_risk(
    loaded: LoadedModel,
    images: list[np.ndarray],
    settings: InferenceSettings,
    device: torch.device,
    tap: BottleneckTap | None = None,
    spacings: Sequence[Spacing] | None = None,
) -> list[SemanticPrediction]:
    """Class maps with their entropy maps and member agreement (and softmax when asked), one pass."""
    classes = loaded.model_spec.classes
    net = member_network(loaded, settings.tta.flip_axes)
    count = 1 if net is None else net.members
    head = risk_head(classes, settings.probabilities, net is not None)
    folds = len(getattr(loaded.model, "members", ())) > 1
    members = ("folds and mirrors" if settings.tta.flip_axes else "folds") if folds else "mirrors"
    predictions = []
    for output in _per_case(head, loaded, images, settings, device, net, tap, spacings):
        class_map, entropy, probabilities, agreement = split_head(output, classes, settings.probabilities, count)
        predictions.append(SemanticPrediction(class_map, probabilities, entropy, agreement, members))
    return predictions


def _per_case(
    head: Callable[[torch.Tensor], torch.Tensor],
    loaded: LoadedModel,
    images: list[np.ndarray],
    settings: InferenceSettings,
    device: torch.device,
    net: torch.nn.Module | None = None,
    tap: BottleneckTap | None = None,
    spacings: Sequence[Spacing] | None = None,
) -> list[np.ndarray]:
    """:func:`predict` with ``head`` (class maps, probabilities, or :func:`~segops.engine.risk.risk_head`)
    per case, through ``net`` when given: a volume with a 2D model slice by slice, the slices'
    outputs stacked on the Z axis (third from last), each slice resized as its (row, column)
    spacing asks (:func:`~segops.data.transforms.image_scale`). ``tap`` sees 2D images only."""
    args = (device, settings.amp, settings.sliding, settings.tta.flip_axes, head, net)
    scales = [image_scale(loaded.preprocess, s) for s in (spacings if spacings is not None else [None] * len(images))]
    if not images or images[0].ndim == 3 or loaded.model_spec.spatial_dims == 3:
        return predict(loaded, images, *args, tap=tap, scales=scales)
    return [
        np.stack(predict(loaded, [v[:, z] for z in range(v.shape[1])], *args, scales=[f] * v.shape[1]), axis=-3)
        for v, f in zip(images, scales)
    ]


def case_result(
    prediction: Prediction,
    label: np.ndarray | None,
    settings: InferenceSettings,
    classes: int,
    outside: float = float("nan"),
) -> CaseResult:
    """Class map, encodings, scores and risk of one case.

    Args:
        prediction: from :func:`predict_batch`.
        label: the case's truth, None when it has none: a class map of ``prediction``'s shape, or
            an (H, W) instance label map for an instance prediction.
        classes: the model's number of classes, background included.
        outside: the input's :func:`~segops.engine.risk.intensity_outside` (NaN: not checked).
    """
    if isinstance(prediction, InstancePrediction):
        return _instance_result(prediction, label, settings, classes, outside)
    mask, probabilities = prediction.class_map, prediction.probabilities
    risk = None
    if settings.risk:
        risk = semantic_risk(
            mask, prediction.entropy, prediction.member_dice, outside, settings.reference, classes, prediction.members
        )
    return CaseResult(
        class_map=mask,
        fg_fraction=float((mask > 0).mean()),
        scores=None if label is None else _scores(mask, label, settings, classes),
        probabilities=None if probabilities is None else probabilities.astype(np.float16),
        risk=risk,
    )


def _instance_result(
    pred: InstancePrediction,
    label: np.ndarray | None,
    settings: InferenceSettings,
    classes: int,
    outside: float = float("nan"),
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
        risk=_instance_risk(pred, label_map, mask, outside, settings, classes) if settings.risk else None,
    )


def _instance_risk(
    pred: InstancePrediction,
    label_map: np.ndarray,
    mask: np.ndarray,
    outside: float,
    settings: InferenceSettings,
    classes: int,
) -> CaseRisk:
    """The risk of an instance case: :func:`~segops.engine.detect.instance_label_map` numbers
    instances 1..N in ascending score order, so instance k's score is the k-th smallest."""
    scores = np.sort(pred.scores, kind="stable")
    return instance_risk(label_map, mask, scores, outside, settings.reference, classes)


def _scores(mask: np.ndarray, truth: np.ndarray, settings: InferenceSettings, classes: int) -> CaseScores:
    scores = case_scores(mask, truth, classes)
    return CaseScores(
        label_fg_fraction=float(((truth > 0) & (truth != IGNORE_LABEL)).mean()),
        dice=scores["dice"],
        iou=scores["iou"],
        dice_per_class={c: scores[f"dice_{c}"] for c in range(1, classes)},
        pixel_error=scores["pixel_error"],
        rand_error=None if settings.boundary_class is None else rand_error(mask, truth, settings.boundary_class),
        label_classes=tuple(int(c) for c in np.unique(truth) if 0 < c < classes),
    )
