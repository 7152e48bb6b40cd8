"""``segops plan DIR``: look at the files, fingerprint the archive, apply the plan rules, write a workflow.

1. :func:`segops.data.pairing.detect` guesses the source (images or DICOM, how masks pair,
   what they hold) from names and a sample of files; for images, the split's groups
   (:func:`folder_groups`), for volume files, the plane they are cut in (:func:`slice_plane`).
2. :func:`segops.cluster.fingerprint.fingerprint_source` fingerprints every record on Ray.
3. :func:`segops.data.planning.plan_train` applies the rules; the epoch count comes from the
   time budget and a timing probe of the planned model (a few training steps, in this process).
4. The workflow YAML (ingest → train → segment) is written with a comment on each planned
   value, and ``fingerprint.json`` beside it.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError

from segops.config.schema import (
    ClusterSpec,
    ImageSource,
    ModelSpec,
    SegmentStep,
    SlidingWindowSpec,
    SourceSpec,
    VolumeSource,
)
from segops.data.decode import list_source_files
from segops.data.detection import Detection, PlanOverrides
from segops.data.fingerprint import Fingerprint
from segops.data.laterality import side_pairs
from segops.data.pairing import detect
from segops.data.planning import Choice, PlanSettings, plan_train
from segops.data.splits import folder_units, name_units
from segops.data.volume_layout import planned_slice_plane
from segops.errors import PlanError
from segops.outputs.atomic import atomic_write_text

log = logging.getLogger(__name__)

PROBE_STEPS = 5
PROBE_WARMUP = 2


@dataclass(frozen=True)
class PlanResult:
    """What ``segops plan`` wrote and decided."""

    workflow: Path
    fingerprint_file: Path
    fingerprint: Fingerprint
    detection: Detection
    choices: dict[str, Choice]


def plan_workflow(
    root: Path,
    output: Path,
    overrides: PlanOverrides | None = None,
    settings: PlanSettings | None = None,
    name: str | None = None,
    num_cpus: int | None = None,
) -> PlanResult:
    """Detect, fingerprint (on a local Ray, or ``RAY_ADDRESS``), plan, and write ``output`` + ``fingerprint.json``.

    Raises:
        PlanError: the files do not say what to train on (the message names the option to give).
    """
    from segops.cluster.fingerprint import FINGERPRINT_FILE, fingerprint_source
    from segops.cluster.runtime import ensure_ray

    overrides, settings = overrides or PlanOverrides(), settings or PlanSettings()
    detection = detect(Path(root), overrides)
    try:
        source = TypeAdapter(SourceSpec).validate_python(detection.source)
    except ValidationError as exc:
        raise PlanError(f"the planned source {detection.source} is not a valid source spec: {exc}") from exc
    detection, source = folder_groups(detection, source)
    detection, source = slice_plane(detection, source)
    ensure_ray(ClusterSpec(num_cpus=num_cpus))
    fp = fingerprint_source(source, detection.task, labelled_only=True)  # what training will see
    if fp.n_labelled == 0:
        raise PlanError(
            f"no image under {detection.source['path']} decoded with a label; check --labels and --pattern"
            + (f". {left_out_paragraph(fp)}" if fp.left_out else "")
        )
    if fp.left_out:
        log.warning("%s", left_out_paragraph(fp))
    detection = classes_in_census(detection, fp)
    settings = settings.on_gpus(_gpus())
    if detection.task == "instance":
        weights, cache = cached_maskrcnn_weights()
        settings = replace(settings, maskrcnn_weights=weights, weights_cache=cache)
    choices = plan_train(fp, detection.classes, settings, probe_seconds) | mirroring_choices(detection.class_names)
    output = Path(output)
    fp_file = atomic_write_text(output.parent / FINGERPRINT_FILE, fp.to_json())
    text = workflow_yaml(name or _name(Path(root)), Path(root), detection, fp, choices)
    atomic_write_text(output, text)
    log.info("wrote %s and %s", output, fp_file)
    return PlanResult(output, Path(fp_file), fp, detection, choices)


def folder_groups(detection: Detection, source: Any) -> tuple[Detection, Any]:
    """An image source whose folders are units (:func:`segops.data.splits.folder_units`) with
    ``group_by: folder``, or whose file names' ids are (:func:`~segops.data.splits.name_units`) with
    that regular expression, before the fingerprint counts the split's groups; others as they are."""
    if not isinstance(source, ImageSource) or "group_by" in detection.source:
        return detection, source
    rel_paths = [f["rel_path"] for f in list_source_files(source)]
    why, rule = folder_units(rel_paths), "folder"
    if why is None and (by_name := name_units(rel_paths)) is not None:
        rule, why = by_name
    if why is None:
        return detection, source
    log.info("group_by: %s: %s", rule, why)
    planned = detection.source | {"group_by": rule}
    detection = replace(detection, source=planned, notes=detection.notes | {"group_by": why})
    return detection, source.model_copy(update={"group_by": rule})


def slice_plane(detection: Detection, source: Any) -> tuple[Detection, Any]:
    """A volume source whose files are not all cut across the archive's coarsest axis by their third
    axis (KiTS' (slices, rows, columns) files) with the ``slice_plane`` that is
    (:func:`segops.data.volume_layout.planned_slice_plane`), before the fingerprint reads its slices;
    others as they are."""
    if not isinstance(source, VolumeSource) or "slice_plane" in detection.source:
        return detection, source
    found = planned_slice_plane([f["path"] for f in list_source_files(source)])
    if found is None:
        return detection, source
    plane, why = found
    log.info("slice_plane: %s: %s", plane, why)
    planned = detection.source | {"slice_plane": plane}
    detection = replace(detection, source=planned, notes=detection.notes | {"slice_plane": why})
    return detection, source.model_copy(update={"slice_plane": plane})


def classes_in_census(detection: Detection, fp: Fingerprint) -> Detection:
    """A semantic plan whose labels hold classes the sampled masks did not show, with those classes.

    What masks hold is guessed from at most 300 of them; the fingerprint's label census reads every
    labelled image as the planned labels spec reads it. A class value that only unsampled masks
    hold (one defect type in 1 of 420 masks) would stop the planned run at ingest (``model.classes``
    too small), so the plan takes ``classes`` from the census where it is larger, and says so.
    """
    unseen = [v for v in fp.label_census if v >= detection.classes]
    if detection.task != "semantic" or not unseen:
        return detection
    classes = max(unseen) + 1
    images = sum(fp.label_census[v][0] for v in unseen)
    note = (
        f"{detection.notes.get('labels', '')}; the label census of every mask also holds value(s) {unseen} "
        f"({images} image(s), not among the sampled masks): {classes} classes"
    ).lstrip("; ")
    log.warning("labels: %s", note)
    return replace(detection, classes=classes, mask_kind="multi-class", notes=detection.notes | {"labels": note})


def mirroring_choices(names: Mapping[int, str]) -> dict[str, Choice]:
    """``augment.flip`` and ``augment.rotate90`` off where the class names hold a left/right pair
    (:func:`segops.data.laterality.side_pairs`); else nothing."""
    pairs = side_pairs(names)
    if not pairs:
        return {}
    shown = ", ".join(f"{a} / {b}" for a, b in pairs[:3]) + (f" and {len(pairs) - 3} more" if len(pairs) > 3 else "")
    why = f"{shown}: told apart by side, which mirroring swaps (as TotalSegmentator, no mirroring)"
    return {"augment.flip": Choice(0.0, why), "augment.rotate90": Choice(0.0, "a 180° turn mirrors both axes")}


def left_out_paragraph(fp: Fingerprint) -> str:
    """What the fingerprint could not read, by file and reason, and what to do about it."""
    shown = "; ".join(f"{rel}: {why}" for rel, why in fp.left_out_examples.items())
    more = f" (and {fp.left_out - len(fp.left_out_examples)} more)" if fp.left_out > len(fp.left_out_examples) else ""
    return (
        f"{fp.left_out} file(s) could not be read with their label and are left out of the plan{more} — {shown}. "
        "Ingest lists them in quarantine.csv with the same reason and trains on the rest (a readable image is "
        "still segmented); fix their masks (the image's size, one channel) or list them under the source's `exclude`"
    )


def cached_maskrcnn_weights() -> tuple[str | None, str]:
    """(``coco`` | ``imagenet`` | None, the cache folder): published weights a planned Mask R-CNN can
    start from, found where torchvision keeps them (``$TORCH_HOME/hub/checkpoints``); never downloads."""
    from torchvision.models import ResNet18_Weights
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    from segops.models.weights import hub_checkpoint_path

    coco = hub_checkpoint_path(MaskRCNN_ResNet50_FPN_Weights.COCO_V1.url)
    if coco.is_file():
        return "coco", str(coco.parent)
    if hub_checkpoint_path(ResNet18_Weights.IMAGENET1K_V1.url).is_file():
        return "imagenet", str(coco.parent)
    return None, str(coco.parent)


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _name(root: Path) -> str:
    """The folder's name, with its parent's for generic names (``isbi2012-membrane-train``)."""
    root = root.resolve()
    name = root.name
    if name.lower() in ("train", "training", "test", "data", "images", "dataset", "all") and root.parent.name:
        name = f"{root.parent.name}-{name}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-._")[-64:].lstrip("-._") or "planned"


# --------------------------------------------------------------------------- timing probe


def probe_seconds(plan: dict[str, Any], steps: int = PROBE_STEPS) -> float:
    """Seconds per training sample of the planned model: the median of ``steps`` optimiser steps on
    random data after two warm-up steps, in this process, on one CPU thread as a Ray Train worker
    runs (two threads on a loaded 2-CPU machine ran 30x slower than one), or on the GPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _probe(plan, steps)
    finally:
        torch.set_num_threads(threads)


def _probe(plan: dict[str, Any], steps: int) -> float:
    import torch

    from segops.engine.probe import random_training_step

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = int(plan["batch"])
    # the plan is the model's fields, the batch and (a U-Net's) patch size
    spec = TypeAdapter(ModelSpec).validate_python(
        {k: v for k, v in plan.items() if k not in ("batch", "patch_size", "objects")}
    )
    # Mask R-CNN: the median image as it trains (shorter side min_size, the longer at that scale), its objects
    size = plan["patch_size"] if spec.task == "semantic" else [plan["min_size"], plan["max_size"]]
    _, step = random_training_step(spec, batch, size, device, objects=int(plan.get("objects", 1)))
    times = []
    for i in range(steps + PROBE_WARMUP):
        start = time.perf_counter()
        step()
        if i >= PROBE_WARMUP:
            times.append(time.perf_counter() - start)
    seconds = float(np.median(times)) / batch  # the median step: robust to a busy machine's hiccups
    log.info("timing probe: %.4f s per training sample (%s, batch %d)", seconds, plan["arch"], batch)
    return seconds


# --------------------------------------------------------------------------- YAML


def _flow(value: Any) -> str:
    """A value as YAML flow text (ints stay ints as mapping keys)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_flow(k)}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, indent: int, key: str, value: Any = ..., why: str = "") -> None:
        text = " " * indent + (f"{key}:" if value is ... else f"{key}: {_flow(value)}")
        self.lines.append(f"{text:<44}  # {why}" if why else text)

    def choice(self, indent: int, key: str, choice: Choice) -> None:
        self.add(indent, key, choice.value, choice.why)


def workflow_yaml(name: str, root: Path, detection: Detection, fp: Fingerprint, choices: dict[str, Choice]) -> str:
    """The planned workflow, each planned value commented with the figure that chose it."""
    y = _Lines()
    y.lines += [
        f"# Planned by `segops plan {root}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC from the files' fingerprint",
        "# (fingerprint.json beside this file). A comment names the figure that chose each value.",
    ]
    y.add(0, "name", name)
    y.add(
        0,
        "description",
        f"Planned from {fp.n_labelled} labelled of {fp.n_images} images ({detection.pairing}, "
        f"{detection.mask_kind} masks).",
    )
    y.add(0, "seed", 0)
    y.add(0, "output_dir", "runs")
    y.add(0, "tracking", {"uri": "sqlite:///mlruns.db", "experiment": name})
    y.add(0, "steps")
    _ingest(y, detection)
    _train(y, detection, fp, choices)
    _segment(y, detection, fp, choices)
    return "\n".join(y.lines) + "\n"


def _ingest(y: _Lines, detection: Detection) -> None:
    src = detection.source
    y.lines.append("  - step: ingest")
    if src["kind"] == "volumes":
        y.add(4, "volumes", True, "also one record per case, so segment writes one mask volume per case")
    y.add(4, "source")
    y.add(6, "kind", src["kind"], f"{detection.n_images} images")
    y.add(6, "path", src["path"], detection.notes.get("path", ""))
    for key in (k for k in src if k not in ("kind", "path", "labels")):  # include, exclude, channels
        y.add(6, key, src[key], detection.notes.get(key, ""))
    y.add(6, "labels", why=detection.notes.get("labels", ""))
    for key, value in src["labels"].items():
        y.add(8, key, value, detection.notes.get(f"labels.{key}", ""))


def _train(y: _Lines, detection: Detection, fp: Fingerprint, c: dict[str, Choice]) -> None:
    y.lines.append("  - step: train")
    y.add(4, "model")
    census = ", ".join(f"{v}: {f} images/{p} px" for v, (f, p) in list(fp.label_census.items())[:6])
    if fp.task == "instance":
        y.add(6, "arch", "maskrcnn", "instance task: " + detection.mask_kind)
        for key in ("backbone", "weights", "backbone_weights"):
            if f"model.{key}" in c:
                y.choice(6, key, c[f"model.{key}"])
        y.choice(6, "in_channels", c["model.in_channels"])
        y.add(6, "classes", detection.classes, f"background + {detection.classes - 1} class(es)")
        for key in ("min_size", "max_size", "anchor_sizes", "box_batch_size_per_image", "detections_per_image"):
            y.choice(6, key, c[f"model.{key}"])
    else:
        y.add(6, "arch", "dynunet", "nnU-Net's network")
        y.choice(6, "in_channels", c["model.in_channels"])
        y.add(6, "classes", detection.classes, f"label census {census}")
        y.choice(6, "kernels", c["model.kernels"])
        y.choice(6, "strides", c["model.strides"])
        y.choice(6, "filters", c["model.filters"])
        y.add(6, "deep_supervision", True, "nnU-Net's weights 1/2^i, the lowest output 0")
        y.add(4, "loss", "dice_ce", "Dice + cross-entropy (nnU-Net)")
    y.add(4, "preprocess")
    y.choice(6, "intensity", c["preprocess.intensity"])
    if "preprocess.patch_size" in c:
        y.choice(6, "patch_size", c["preprocess.patch_size"])
        for key in ("scale", "spacing"):
            if f"preprocess.{key}" in c:
                y.choice(6, key, c[f"preprocess.{key}"])
        y.add(4, "augment")
        y.choice(6, "flip", c.get("augment.flip", Choice(0.5, "")))
        y.choice(6, "rotate90", c["augment.rotate90"])
        y.choice(4, "foreground_oversample", c["foreground_oversample"])
        y.choice(4, "patches_per_image", c["patches_per_image"])
    elif "augment.flip" in c:  # Mask R-CNN trains on flipped whole images
        y.add(4, "augment")
        y.choice(6, "flip", c["augment.flip"])
    y.add(4, "split")
    y.choice(6, "val_fraction", c["split.val_fraction"])
    y.choice(6, "test_fraction", c["split.test_fraction"])
    y.add(6, "seed", 0)
    y.choice(4, "epochs", c["epochs"])
    if "samples_per_epoch" in c:
        y.choice(4, "samples_per_epoch", c["samples_per_epoch"])
    y.choice(4, "batch_size", c["batch_size"])
    for key in ("learning_rate", "warmup_epochs"):
        if key in c:
            y.choice(4, key, c[key])
    y.add(4, "select", "last", "no split chooses the epoch; validation chooses only the postprocessing")
    n_test, n_val = (round(c[f"split.{k}"].value * fp.n_groups) for k in ("test_fraction", "val_fraction"))
    n_train = round((fp.n_groups - n_test - n_val) * fp.n_labelled / max(fp.n_groups, 1))
    if n_train < 2:
        y.add(4, "scaling", {"workers": 1}, f"{n_train} training image(s)")


#: Pixels a planned segment batch holds at most (8 images of 1024²). An inference actor's memory grows
#: with its batch's pixels (the actor-memory probe: ~75 MiB per megapixel for a DynUNet predicting
#: whole images): 8 photos of 12 megapixels asked 11-12 GiB per actor, so one actor ran on a 24 GiB
#: machine where two fit at batch 2 (10 such photos: segment bar 48 s at batch 8, 34 s at batch 2).
SEGMENT_BATCH_PIXELS = 8 * 1024 * 1024


def _segment(y: _Lines, detection: Detection, fp: Fingerprint, c: dict[str, Choice]) -> None:
    y.lines.append("  - step: segment")
    if detection.source["kind"] == "volumes":
        y.add(4, "records", "volumes", "a mask per case on its image's grid, scored per case in 3D (nnU-Net's Dice)")
    # DICOM labels: masks come back in the labels' own format too, for the viewer or planning system;
    # instances also as COCO results (RLE masks and scores), what pycocotools and COCO tools read
    also = {"rtstruct": "rtstruct", "dicom-seg": "dicom-seg"}.get(detection.mask_kind)
    why = f"and {also}, the format of the labels" if also else ""
    if detection.task == "instance":
        also, why = "coco-rle", "and COCO results (RLE masks, scores) for the instances"
    y.add(4, "outputs", ["png", also] if also else ["png"], why)
    if detection.class_names or detection.classes > 2:
        names = {k: detection.class_names.get(k, f"class-{k}")[:64] for k in range(1, detection.classes)}
        y.add(4, "segments", names, "the labels' names" if detection.class_names else "")
    if "preprocess.patch_size" in c:
        # the training validation (and the postprocessing it chooses) predicts with the defaults: so
        # does the segment step, or validation scores a prediction the archive never gets
        window = SlidingWindowSpec()
        side = math.isqrt(window.max_pixels)
        y.add(
            4,
            "sliding_window",
            {"max_pixels": window.max_pixels, "overlap": window.overlap, "mode": window.mode},
            f"whole images up to {side}² px, as validation predicted them in training; larger ones in "
            f"{window.mode.capitalize()}-blended tiles of the patch size",
        )
    default_batch = SegmentStep.model_fields["batch_size"].default
    if detection.source["kind"] != "volumes" and len(fp.median_shape) == 2:
        h, w = fp.median_shape
        batch = max(1, min(default_batch, SEGMENT_BATCH_PIXELS // max(h * w, 1)))
        if batch < default_batch:
            y.add(
                4,
                "batch_size",
                batch,
                f"median image {h}x{w} px: at most {SEGMENT_BATCH_PIXELS // 2**20} megapixels a batch, "
                "so actors stay small",
            )
    y.add(4, "overlays", 4)
