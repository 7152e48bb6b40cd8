"""Plan rules: a :class:`~segops.data.fingerprint.Fingerprint` → train settings, each with the
fingerprint figure that chose it. Pure; ``segops plan`` (:mod:`segops.steps.plan`) applies them.

The rules (nnU-Net's, adapted to 2D images and a time budget):

- **Normalisation.** CT: ``window`` from the 0.5/99.5 percentiles of foreground intensities
  (nnU-Net's CT scheme; all pixels when no foreground). Other modalities and photos: per-image
  ``percentile`` 0.5/99.5 (intensities are not calibrated, so a global window would not hold).
- **Patch.** Side ``s0`` = the median image's shorter side, at most ``max_patch_side`` (256 on a
  CPU, 512 on a GPU). The U-Net down-samples ``n = floor(log2(s0 / 4))`` times (at most 6), so
  the bottleneck is 4–7 px (nnU-Net: feature maps down to 4); the patch is ``s0`` rounded down
  to a multiple of ``2**n``. Square, with ``augment.rotate90`` on, unless the median image is
  more than 1.5x as long as it is wide: then each side is planned alone and ``rotate90: 0``.
- **Network.** ``channels`` start at ``base_channels`` and double per level up to
  ``max_channels``; ``strides`` are all 2; ``num_res_units: 2``.
- **Sampling.** ``patches_per_image = ceil(2 * median image px / patch px)`` (1..16): each image
  is covered about twice per epoch. ``batch_size`` (images per step per worker) keeps about
  ``8 * 256**2`` patch pixels per step, and a step covers at most 5 % of the dataset's pixels
  (nnU-Net's cap), at least one image.
- **Foreground oversampling.** 0.33 (nnU-Net) by default; 0.5 when the rarest foreground class
  covers < 5 % of labelled pixels; 0.66 when it covers < 0.5 % or fewer than half of the images
  hold any foreground.
- **Split.** 20 % of groups held out (nnU-Net's 5 folds), at least 3 and at most 200 groups,
  never more than half.
- **Epochs.** ``(budget − 45 s start-up) / epoch time``, 1..1000. Epoch time = (training
  patches + validation images x tiles / 3 (forward only)) x seconds per patch / ``workers``
  + 1 s overhead; seconds per patch come from a timing probe of the planned model (one CPU
  thread, as each Ray Train worker runs).
- **Mask R-CNN** (instance tasks). ``min_size`` = the median shorter side rounded to 32
  (128..800), ``max_size`` the longer side at that scale (≤ 1333); ``anchor_sizes`` start at the
  power of two nearest the 5th-percentile object diameter at that scale (8..64) and double per
  FPN level; ``box_batch_size_per_image: 128`` when images hold ≤ 32 objects (median), else 512.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from segops.data.fingerprint import Fingerprint
from segops.errors import PlanError

STARTUP_S = 45.0
EPOCH_OVERHEAD_S = 1.0
PIXELS_PER_STEP = 8 * 256 * 256


@dataclass(frozen=True)
class Choice:
    """A planned value and the fingerprint figure that chose it (a YAML comment)."""

    value: Any
    why: str


@dataclass(frozen=True)
class PlanSettings:
    """Knobs of the rules: the time budget, and what the planning machine can hold."""

    budget_minutes: float = 10.0
    max_patch_side: int = 256
    base_channels: int = 16
    max_channels: int = 256
    workers: int = 2


def plan_intensity(fp: Fingerprint) -> Choice:
    """CT: a window from foreground percentiles; otherwise per-image percentiles."""
    stats = fp.intensity_fg or fp.intensity_all
    if fp.modality == "CT" and stats is not None and stats.p99_5 > stats.p00_5:
        lo, hi = round(stats.p00_5, 1), round(stats.p99_5, 1)
        where = "foreground" if fp.intensity_fg else "all"
        return Choice(
            {"kind": "window", "lower": lo, "upper": hi},
            f"CT: 0.5/99.5 percentiles of {stats.samples} sampled {where} pixels",
        )
    return Choice(
        {"kind": "percentile", "lower": 0.5, "upper": 99.5},
        f"{fp.modality or 'uncalibrated'} intensities: per-image 0.5/99.5 percentiles",
    )


def _side(s0: int) -> tuple[int, int]:
    """(patch side, down-samplings) for a wanted side: bottleneck 4..7 px."""
    n = max(1, min(6, math.floor(math.log2(s0 / 4))))
    return (s0 // 2**n) * 2**n, n


def plan_geometry(fp: Fingerprint, settings: PlanSettings) -> dict[str, Choice]:
    """``patch_size``, ``rotate90``, ``channels`` and ``strides`` from the median image shape."""
    h, w = fp.median_shape
    if min(h, w) < 8:
        raise PlanError(
            f"median image {h}x{w} px is too small for a U-Net: it needs at least 8 px a side; "
            "check that the planned folder holds the images, not thumbnails"
        )
    cap = settings.max_patch_side
    median = f"median image {h}x{w} px"
    if max(h, w) <= 1.5 * min(h, w):
        side, n = _side(min(h, w, cap))
        patch, rotate = [side, side], Choice(0.75, f"square patches ({median})")
    else:
        short, n = _side(min(h, w, cap))
        div = 2**n
        long = max(short, (min(max(h, w), cap * cap // short) // div) * div)
        patch = [short, long] if h <= w else [long, short]
        rotate = Choice(0.0, f"{median} is elongated: no 90° turns, non-square patches")
    channels = [min(settings.base_channels * 2**i, settings.max_channels) for i in range(n + 1)]
    bottleneck = min(patch) // 2**n
    return {
        "patch_size": Choice(patch, f"{median}; at most {cap} px a side, multiple of {2**n}"),
        "rotate90": rotate,
        "channels": Choice(channels, f"{settings.base_channels} doubling to at most {settings.max_channels}"),
        "strides": Choice([2] * n, f"{n} down-samplings: {min(patch)} px → {bottleneck} px bottleneck"),
    }


def plan_sampling(fp: Fingerprint, patch: list[int]) -> dict[str, Choice]:
    """``patches_per_image`` and ``batch_size`` (see the module docstring)."""
    h, w = fp.median_shape
    patch_px = math.prod(patch)
    ppi = max(1, min(16, math.ceil(2 * h * w / patch_px)))
    dataset_px = max(fp.n_labelled, 1) * h * w
    per_step = min(PIXELS_PER_STEP, 0.05 * dataset_px)
    batch = max(1, int(per_step // (patch_px * ppi)))
    return {
        "patches_per_image": Choice(ppi, f"covers each {h}x{w} image about twice per epoch"),
        "batch_size": Choice(
            batch,
            f"{batch * ppi} patches/step: ≤ {PIXELS_PER_STEP} px and ≤ 5 % of {fp.n_labelled} labelled images' pixels",
        ),
    }


def plan_oversample(fp: Fingerprint) -> Choice:
    """Higher ``foreground_oversample`` for rare foreground."""
    fg = {c: f for c, f in fp.class_fractions.items() if c > 0}
    rarest = min(fg.values(), default=0.0)
    images = fp.foreground_image_fraction
    figure = f"rarest class {100 * rarest:.2f} % of pixels, {100 * images:.0f} % of images with foreground"
    if rarest < 0.005 or fp.foreground_image_fraction < 0.5:
        return Choice(0.66, figure)
    return Choice(0.5 if rarest < 0.05 else 0.33, figure)


def plan_split(fp: Fingerprint) -> Choice:
    """``val_fraction`` holding out 20 % of groups, 3..200 of them, at most half."""
    n = fp.n_groups
    n_val = max(1, min(max(3, round(0.2 * n)), 200, n // 2))
    return Choice(round(n_val / n, 4), f"{n_val} of {n} groups held out")


def epoch_seconds(
    fp: Fingerprint, val_fraction: float, ppi: int, patch: list[int], seconds_per_patch: float, workers: int = 1
) -> float:
    """Estimated seconds of one epoch (training patches, validation tiles, spread over ``workers``; overhead)."""
    n_val = round(val_fraction * fp.n_groups) / max(fp.n_groups, 1) * fp.n_labelled
    n_train = fp.n_labelled - n_val
    tiles = max(1.0, math.prod(fp.median_shape) / math.prod(patch))
    return (n_train * ppi + n_val * tiles / 3) * seconds_per_patch / workers + EPOCH_OVERHEAD_S


def plan_epochs(budget_minutes: float, epoch_s: float) -> Choice:
    """As many epochs as fit the budget after Ray start-up, 1..1000."""
    epochs = max(1, min(1000, int((60 * budget_minutes - STARTUP_S) // epoch_s)))
    return Choice(epochs, f"{budget_minutes:g} min budget, ~{epoch_s:.1f} s/epoch measured on this machine")


def plan_maskrcnn(fp: Fingerprint) -> dict[str, Choice]:
    """Mask R-CNN image sizes and anchors from the median image and the object sizes."""
    short, long = sorted(fp.median_shape)
    min_size = max(128, min(800, 32 * round(short / 32)))
    scale = min_size / short
    max_size = max(min_size, min(1333, 32 * round(long * scale / 32)))
    objects = fp.objects
    d05 = math.sqrt(objects.size_p05) * scale if objects and objects.size_p05 > 0 else 16.0
    a0 = int(2 ** max(3, min(6, round(math.log2(d05)))))
    count = objects.count_median if objects else 0
    return {
        "min_size": Choice(min_size, f"median image {fp.median_shape[0]}x{fp.median_shape[1]} px"),
        "max_size": Choice(max_size, f"longer side at scale {scale:.2f}"),
        "anchor_sizes": Choice(
            [a0 * 2**i for i in range(5)], f"5th-percentile object ~{d05:.0f} px across at that scale"
        ),
        "box_batch_size_per_image": Choice(128 if count <= 32 else 512, f"median {count:g} objects per image"),
    }


def plan_train(
    fp: Fingerprint, classes: int, settings: PlanSettings, seconds_per_sample: Callable[[dict[str, Any]], float]
) -> dict[str, Choice]:
    """Every planned train-step value (dotted keys, e.g. ``preprocess.patch_size``).

    ``seconds_per_sample(model_plan)`` times one training sample (a patch; a whole image for
    Mask R-CNN) of the planned model, given ``{"arch", "channels", "strides", "patch_size",
    "batch", "in_channels", "classes"}`` (or Mask R-CNN's sizes).
    """
    in_channels = Choice(
        3 if fp.channels.get(3, 0) > fp.channels.get(1, 0) else 1,
        f"channels per image: {dict(sorted(fp.channels.items()))}",
    )
    split = plan_split(fp)
    out: dict[str, Choice] = {
        "model.in_channels": in_channels,
        "split.val_fraction": split,
        "preprocess.intensity": plan_intensity(fp),
    }
    if fp.task == "instance":
        mrcnn = plan_maskrcnn(fp)
        out |= {f"model.{k}": v for k, v in mrcnn.items()}
        batch = 2
        s = seconds_per_sample(
            {"arch": "maskrcnn", "in_channels": in_channels.value, "classes": classes, "batch": batch}
            | {k: v.value for k, v in mrcnn.items()}
        )
        n_train = fp.n_labelled * (1 - split.value)
        epoch_s = (n_train + fp.n_labelled * split.value / 3) * s / settings.workers + EPOCH_OVERHEAD_S
        return out | {
            "batch_size": Choice(batch, "whole images"),
            "epochs": plan_epochs(settings.budget_minutes, epoch_s),
        }
    geo = plan_geometry(fp, settings)
    sampling = plan_sampling(fp, geo["patch_size"].value)
    s = seconds_per_sample(
        {
            "arch": "unet",
            "channels": geo["channels"].value,
            "strides": geo["strides"].value,
            "patch_size": geo["patch_size"].value,
            "in_channels": in_channels.value,
            "classes": classes,
            "batch": sampling["batch_size"].value * sampling["patches_per_image"].value,
        }
    )
    epoch_s = epoch_seconds(
        fp, split.value, sampling["patches_per_image"].value, geo["patch_size"].value, s, settings.workers
    )
    return out | {
        "model.channels": geo["channels"],
        "model.strides": geo["strides"],
        "preprocess.patch_size": geo["patch_size"],
        "augment.rotate90": geo["rotate90"],
        "foreground_oversample": plan_oversample(fp),
        "patches_per_image": sampling["patches_per_image"],
        "batch_size": sampling["batch_size"],
        "epochs": plan_epochs(settings.budget_minutes, epoch_s),
    }
