"""Plan rules: a :class:`~segops.data.fingerprint.Fingerprint` → train settings, each with the
fingerprint figure that chose it. Pure; ``segops plan`` (:mod:`segops.steps.plan`) applies them.

The rules (nnU-Net's, adapted to 2D images and a time budget):

- **Normalisation.** CT: ``window`` from the 0.5/99.5 percentiles of foreground intensities
  (nnU-Net's CT scheme; all pixels when no foreground). Other modalities and photos: per-image
  ``percentile`` 0.5/99.5 (intensities are not calibrated, so a global window would not hold).
- **Patch.** Side ``s0`` = the median image's shorter side, at most ``max_patch_side`` (256 on a
  CPU, 512 on a GPU). Square, with ``augment.rotate90`` on, unless the median image is more
  than 1.5x as long as it is wide: then the long side is at most ``max_patch_side**2 / s0``
  and ``rotate90: 0``. Each side is rounded down to a multiple of its axis's pooling divisor
  (a square patch: of the largest), so the bottleneck is 4–7 px.
- **Scale.** Large images whose structures are large are shrunk (``preprocess.scale``) so the
  median image's shorter side is 2 patch sides (512 px on a CPU): a 4000x3000 photo at 0.17 is
  683x512, where a 256 px patch sees a lesion whole and inference takes ~20 tiles, not ~700;
  but never so far that the 5th-percentile object (the square root of its area) is under 16 px
  across, and not at all above 0.75 or when object sizes are unknown. nnU-Net keeps 2D images at
  full resolution and lets its patch grow with GPU memory; on a CPU budget that is not possible.
  Patch, network, sampling and epochs are then planned on the scaled median image.
- **Spacing.** Where every image's pixel spacing is known (DICOM, volume files) and it varies
  (10th-90th percentile ratio ≥ 1.1 on an axis), every image is resampled to the median spacing
  (``preprocess.spacing``, nnU-Net's target spacing), so a structure spans the same pixels
  whatever scanner took it; the median image keeps its size.
- **Network.** ``arch: dynunet`` (nnU-Net's network, deep supervision on) with kernels and strides
  from nnU-Net's ``get_pool_and_conv_props`` (:func:`plan_network`): an axis is pooled while it
  stays at least 8 px (feature maps down to 4) and its spacing is less than 2x the finest
  poolable one, at most 6 times; its kernel is 3 once its spacing is within 2x of the finest,
  1 before; the bottleneck's is 3. Images need at least 16 px a side (2 poolings).
  ``filters`` start at ``base_channels`` and double per level up to ``max_channels``.
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
  thread, as each Ray Train worker runs, at the batch a worker's step holds), times
  :data:`WORKER_SLOWDOWN` for what the probe leaves out. When a pass over every training image leaves fewer
  than :data:`MIN_EPOCHS` epochs in the budget (a large archive), an epoch is a random draw of
  ``samples_per_epoch`` training images instead, as many as let :data:`MIN_EPOCHS` epochs fit
  (nnU-Net's epoch is 250 steps whatever the dataset's size): the budget holds, and validation,
  the schedule and the progress bar keep their rhythm, where one pass would overrun the budget
  many times over and validate once.
- **Mask R-CNN** (instance tasks). ``min_size`` = the median shorter side rounded to 32
  (128..800), ``max_size`` the longer side at that scale (≤ 1333); ``anchor_sizes`` start at the
  power of two nearest the 5th-percentile object diameter at that scale (8..64) and double per
  FPN level; ``box_batch_size_per_image: 128`` when images hold ≤ 32 objects (median), else 512;
  ``detections_per_image`` (torchvision's 100) raised to 1.5 × the most objects an image holds,
  rounded up to 50 (at most :data:`MAX_DETECTIONS`), so a dense image (nuclei, cells) is not
  capped at 100 found objects.
  Published weights when the torch hub cache has them (:func:`plan_maskrcnn_start`): COCO's
  ResNet-50 Mask R-CNN (with its anchors, 1e-4, one warm-up epoch), else an ImageNet ResNet-18.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from segops.config.models import MAX_IN_CHANNELS
from segops.data.fingerprint import Fingerprint
from segops.data.planning_choices import Choice, PlanSettings
from segops.data.planning_maskrcnn import plan_maskrcnn, plan_maskrcnn_start
from segops.data.transforms import scaled_shape
from segops.errors import PlanError

STARTUP_S = 45.0
#: Fewest epochs a plan keeps within its budget before drawing ``samples_per_epoch`` images per epoch.
MIN_EPOCHS = 5
EPOCH_OVERHEAD_S = 1.0
#: A Ray Train worker's seconds per patch over the probe's (one process, random tensors): two
#: workers sharing the CPUs' caches and memory bandwidth, decoding, cropping and augmenting the
#: patches, the clipped and all-reduced gradient. Measured on the ISBI 2012 recipe (2 cores, 2
#: workers, 8 patches per step): U-Net 16.3 s per epoch against 13.9 s probed, DynUNet 103-107 s
#: against 86.8 s (benchmarks/README.md, "The epoch probe").
WORKER_SLOWDOWN = 1.2
PIXELS_PER_STEP = 8 * 256 * 256


def plan_intensity(fp: Fingerprint) -> Choice:
    """CT (declared, or undeclared with air in Hounsfield units at the 0.5th percentile, as NIfTI files
    without ``dataset.json``): a window from foreground percentiles; otherwise per-image percentiles."""
    stats, every = fp.intensity_fg or fp.intensity_all, fp.intensity_all
    hu = not fp.modality and every is not None and every.p00_5 <= -500 and every.p99_5 >= 0
    if (fp.modality == "CT" or hu) and stats is not None and stats.p99_5 > stats.p00_5:
        lo, hi = round(stats.p00_5, 1), round(stats.p99_5, 1)
        where = "foreground" if fp.intensity_fg else "all"
        ct = f"CT by its values (0.5th percentile {every.p00_5:g}: air in HU)" if hu and every else "CT"
        return Choice(
            {"kind": "window", "lower": lo, "upper": hi},
            f"{ct}: 0.5/99.5 percentiles of {stats.samples} sampled {where} pixels",
        )
    return Choice(
        {"kind": "percentile", "lower": 0.5, "upper": 99.5},
        f"{fp.modality or 'uncalibrated'} intensities: per-image 0.5/99.5 percentiles",
    )


MAX_POOLS = 6
MIN_FEATURE = 4


def plan_network(
    sizes: list[int], spacing: tuple[float, ...], max_pools: int = MAX_POOLS, min_feature: int = MIN_FEATURE
) -> tuple[list[list[int]], list[list[int]]]:
    """nnU-Net's ``get_pool_and_conv_props`` (v2) with floor halving: per-level kernels and strides.

    Args:
        sizes: the wanted patch, one size per axis (px).
        spacing: one spacing per axis (mm, or 1 when unknown).

    Returns:
        (kernels, strides), one entry per level, each with one size per axis; ``strides[0]`` is
        all 1. The product of an axis's strides is ``2**`` its poolings.
    """
    dims = len(sizes)
    size, sp = list(sizes), [float(s) for s in spacing]
    pools, kernel = [0] * dims, [1] * dims
    kernels, strides = [], [[1] * dims]
    while True:
        kernel = [3 if kernel[d] == 3 or sp[d] / min(sp) < 2 else 1 for d in range(dims)]
        kernels.append(kernel)
        valid = [d for d in range(dims) if size[d] >= 2 * min_feature and pools[d] < max_pools]
        finest = min((sp[d] for d in valid), default=0.0)
        valid = [d for d in valid if sp[d] / finest < 2]
        if len(valid) == 1 and size[valid[0]] < 3 * min_feature:  # a lone axis pools only with room left
            valid = []
        if not valid:
            break
        strides.append([2 if d in valid else 1 for d in range(dims)])
        for d in valid:
            pools[d], sp[d], size[d] = pools[d] + 1, sp[d] * 2, size[d] // 2
    kernels[-1] = [3] * dims  # the bottleneck (nnU-Net)
    return kernels, strides


#: The median image's shorter side a planned scale keeps, in patch sides.
SCALE_SIDE_PATCHES = 2
#: Pixels across (square root of the area) the 5th-percentile object keeps after scaling.
MIN_OBJECT_PX = 16
#: A scale above this is not worth resampling for.
MAX_USEFUL_SCALE = 0.75
#: Share of images with a known pixel spacing for the plan to resample to a target spacing.
KNOWN_SPACING_SHARE = 0.95
#: 90th / 10th percentile pixel spacing (on either axis) from which images are resampled to the median.
SPACING_SPREAD = 1.1


def plan_scale(fp: Fingerprint, settings: PlanSettings) -> Choice:
    """``preprocess.scale`` (see the module docstring); 1.0 for full resolution."""
    h, w = fp.median_shape
    image_scale = SCALE_SIDE_PATCHES * settings.max_patch_side / min(h, w)
    median = f"median image {h}x{w} px"
    if fp.task != "semantic" or image_scale >= MAX_USEFUL_SCALE:
        return Choice(1.0, f"{median}: full resolution")
    if fp.objects is None or fp.objects.size_p05 <= 0:
        return Choice(1.0, f"{median}, object sizes unknown: full resolution")
    across = math.sqrt(fp.objects.size_p05)
    scale = max(image_scale, MIN_OBJECT_PX / across)
    if scale >= MAX_USEFUL_SCALE:
        return Choice(1.0, f"{median}; the small objects (5th percentile ~{across:.0f} px across) need full resolution")
    scale = round(scale, 3)
    small = "x".join(str(n) for n in scaled_shape((h, w), scale))
    return Choice(
        scale,
        f"{median} → {small} px; the 5th-percentile object ~{across:.0f} px across → {across * scale:.0f} px",
    )


def plan_spacing(fp: Fingerprint) -> Choice:
    """``preprocess.spacing``: the median pixel spacing (nnU-Net's target spacing) where nearly every
    image has a known spacing and it varies (10th-90th percentile ratio at least
    :data:`SPACING_SPREAD` on an axis); None (images at their own spacing) otherwise."""
    if fp.task != "semantic" or fp.spacing_known < KNOWN_SPACING_SHARE * fp.n_images or fp.n_images == 0:
        return Choice(None, "pixel spacing not known for every image: images at their own spacing")
    spread = []
    for key in ("spacing_y", "spacing_x"):
        values = np.asarray(fp.image_samples.get(key, []), float)
        values = values[np.isfinite(values) & (values > 0)]
        spread.append(tuple(np.percentile(values, [10, 90])) if len(values) else (1.0, 1.0))
    (y10, y90), (x10, x90) = spread
    row, col = (round(float(v), 4) for v in fp.median_spacing)
    seen = f"pixel spacing {min(y10, x10):.3g}-{max(y90, x90):.3g} mm (10th-90th percentile)"
    if max(y90 / y10, x90 / x10) < SPACING_SPREAD:
        return Choice(None, f"{seen}: images at their own spacing")
    return Choice((row, col), f"{seen}: every image resampled to the median, {row:g} x {col:g} mm (nnU-Net)")


def plan_geometry(fp: Fingerprint, settings: PlanSettings) -> dict[str, Choice]:
    """``patch_size``, ``rotate90``, ``filters``, ``kernels`` and ``strides`` from the median image
    shape and spacing."""
    h, w = fp.median_shape
    if min(h, w) < 4 * MIN_FEATURE:
        raise PlanError(
            f"median image {h}x{w} px is too small for a U-Net: it needs at least {4 * MIN_FEATURE} px a side; "
            "check that the planned folder holds the images, not thumbnails"
        )
    cap = settings.max_patch_side
    median = f"median image {h}x{w} px"
    square = max(h, w) <= 1.5 * min(h, w)
    short = min(h, w, cap)
    if square:
        want = [short, short]
        rotate = Choice(0.75, f"square patches ({median})")
    else:
        long = max(short, min(max(h, w), cap * cap // short))
        want = [short, long] if h <= w else [long, short]
        rotate = Choice(0.0, f"{median} is elongated: no 90° turns, non-square patches")
    spacing = tuple(fp.median_spacing)
    kernels, strides = plan_network(want, spacing)
    divs = [math.prod(s[d] for s in strides) for d in range(2)]
    if square:
        divs = [max(divs)] * 2
    patch = [(s // d) * d for s, d in zip(want, divs)]
    levels = len(strides)
    filters = [min(settings.base_channels * 2**i, settings.max_channels) for i in range(levels)]
    pools = [sum(s[d] == 2 for s in strides) for d in range(2)]
    bottleneck = [p // 2**n for p, n in zip(patch, pools)]
    return {
        "patch_size": Choice(
            patch,
            f"{median}; at most {cap} px a side, multiples of {divs}"
            if square
            else f"{median}; the short side at most {cap} px, the long one up to {cap}² px in all, multiples of {divs}",
        ),
        "rotate90": rotate,
        "filters": Choice(filters, f"{settings.base_channels} doubling to at most {settings.max_channels}"),
        "kernels": Choice(kernels, f"spacing {[round(float(s), 4) for s in spacing]}: 3 where within 2x of the finest"),
        "strides": Choice(strides, f"{pools} poolings: {patch} px → {bottleneck} px bottleneck"),
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
    """``test_fraction`` holding out 20 % of groups, 1..200 of them: the test set the segment step
    reports as held-out, touched by nothing before it. A small archive keeps its groups to train
    on (6 patients: 1 tested, 1 validates, 4 train, where a floor of 3 tested left 2 to train).
    Two groups: none (one validates, one trains).

    Raises:
        PlanError: one group (a single stack file or series): nothing can be held out.
    """
    n = fp.n_groups
    if n < 2:
        raise PlanError(
            f"the {fp.n_labelled} labelled images all belong to one group (one DICOM series, or one image file "
            "such as a multi-page TIFF stack): segops splits train / validation / test by group so that no "
            "series or file is in two of them, and one group cannot be split; add labelled series or files "
            "(at least 2, and 3 for a held-out test set), or save a stack file's pages as one file each (as "
            "ISBI 2012's PNG export)"
        )
    if n == 2:
        return Choice(0.0, "2 groups: no test set (one validates, one trains)")
    n_test = max(1, min(round(0.2 * n), 200))
    return Choice(round(n_test / n, 4), f"{n_test} of {n} groups held out (test)")


def plan_val_split(fp: Fingerprint, test_fraction: float) -> Choice:
    """``val_fraction``: 10 % of the groups, 1..100 of them, leaving at least one to train on.
    With ``select: last`` validation only chooses the postprocessing, so it stays small."""
    n = fp.n_groups
    n_test = round(test_fraction * n)
    if n == 2:
        return Choice(0.5, "1 of 2 groups validates (choose the postprocessing)")
    n_val = max(1, min(round(0.1 * n), 100, n - n_test - 1))
    return Choice(round(n_val / n, 4), f"{n_val} of {n} groups validate (choose the postprocessing)")


@dataclass(frozen=True)
class EpochCost:
    """Estimated seconds of one epoch over every training case: ``train`` (grows with the cases
    drawn), ``fixed`` (validation and overhead, the same whatever is drawn)."""

    train: float
    fixed: float
    n_train: float

    @property
    def total(self) -> float:
        return self.train + self.fixed


def epoch_cost(
    train_samples: float, val_samples: float, seconds_per_sample: float, workers: int, n_train: float
) -> EpochCost:
    """An epoch of ``train_samples`` training samples (patches, or whole images) and ``val_samples``
    validation forward passes (tiles, or whole images; each a third of a training step), spread over
    ``workers``, at the probe's ``seconds_per_sample`` times :data:`WORKER_SLOWDOWN`, plus overhead;
    ``n_train``: the training cases behind ``train_samples``."""
    per_worker = seconds_per_sample * WORKER_SLOWDOWN / workers
    return EpochCost(train_samples * per_worker, val_samples / 3 * per_worker + EPOCH_OVERHEAD_S, n_train)


def epoch_seconds(
    fp: Fingerprint,
    fractions: tuple[float, float],
    ppi: int,
    patch: list[int],
    seconds_per_patch: float,
    workers: int = 1,
) -> EpochCost:
    """Estimated seconds of one epoch (training patches, validation tiles, spread over ``workers``;
    overhead), ``fractions`` being (val_fraction, test_fraction)."""
    n_val, n_train = _split_cases(fp, fractions)
    tiles = max(1.0, math.prod(fp.median_shape) / math.prod(patch))
    return epoch_cost(n_train * ppi, n_val * tiles, seconds_per_patch, workers, n_train)


def _split_cases(fp: Fingerprint, fractions: tuple[float, float]) -> tuple[float, float]:
    """(validation, training) cases of the split (groups converted to cases in proportion)."""
    per_group = fp.n_labelled / max(fp.n_groups, 1)
    n_val, n_test = (round(f * fp.n_groups) * per_group for f in fractions)
    return n_val, fp.n_labelled - n_val - n_test


def plan_epochs(budget_minutes: float, cost: EpochCost, least: int = 1) -> dict[str, Choice]:
    """``epochs``: as many as fit the budget after Ray start-up, 1..1000; and, when a pass over
    every training case leaves fewer than :data:`MIN_EPOCHS`, ``samples_per_epoch``: the cases
    an epoch draws so that :data:`MIN_EPOCHS` fit (at least ``least``: one step per worker)."""
    available = 60 * budget_minutes - STARTUP_S
    n_train = int(cost.n_train)
    if available // cost.total >= MIN_EPOCHS or n_train <= least or cost.train <= 0:
        epochs = max(1, min(1000, int(available // cost.total)))
        why = f"{budget_minutes:g} min budget, ~{cost.total:.1f} s/epoch measured on this machine"
        return {"epochs": Choice(epochs, why)}
    share = (available / MIN_EPOCHS - cost.fixed) / cost.train
    samples = max(least, min(n_train - 1, int(share * n_train)))
    epoch_s = cost.train * samples / n_train + cost.fixed
    epochs = max(1, min(1000, int(available // epoch_s)))
    return {
        "epochs": Choice(epochs, f"{budget_minutes:g} min budget, ~{epoch_s:.1f} s/epoch measured on this machine"),
        "samples_per_epoch": Choice(
            samples,
            f"of {n_train} training images: a pass over all takes ~{cost.total:.0f} s, "
            f"so {MIN_EPOCHS} would not fit the {available:.0f} s the budget leaves after "
            f"~{STARTUP_S:.0f} s of start-up",
        ),
    }


def plan_train(
    fp: Fingerprint, classes: int, settings: PlanSettings, seconds_per_sample: Callable[[dict[str, Any]], float]
) -> dict[str, Choice]:
    """Every planned train-step value (dotted keys, e.g. ``preprocess.patch_size``).

    ``seconds_per_sample(model_plan)`` times one training sample (a patch; a whole image for
    Mask R-CNN) of the planned model, given ``{"arch", "filters", "kernels", "strides",
    "patch_size", "batch", "in_channels", "classes"}`` (or Mask R-CNN's sizes and the median
    image's ``objects``).
    """
    in_channels = Choice(
        max(fp.channels, key=lambda c: (fp.channels[c], -c)) if fp.channels else 1,  # the most common count
        f"channels per image: {dict(sorted(fp.channels.items()))}",
    )
    if in_channels.value > MAX_IN_CHANNELS:
        raise PlanError(
            f"the images have {in_channels.value} channels ({in_channels.why}); the networks take at most "
            f"{MAX_IN_CHANNELS}: a multi-frame or 4D file (a cine or time series) is no single image; leave such files "
            "out of the folder (or the source's exclude) and plan again, or plan a folder of images of 1-4 channels"
        )
    test = plan_split(fp)
    val = plan_val_split(fp, test.value)
    fractions = (val.value, test.value)
    out: dict[str, Choice] = {
        "model.in_channels": in_channels,
        "split.val_fraction": val,
        "split.test_fraction": test,
        "preprocess.intensity": plan_intensity(fp),
    }
    if fp.task == "instance":
        mrcnn = plan_maskrcnn(fp)
        start = plan_maskrcnn_start(fp, settings)
        mrcnn |= {k[len("model.") :]: v for k, v in start.items() if k.startswith("model.")}
        out |= {f"model.{k}": v for k, v in mrcnn.items()}
        out |= {k: v for k, v in start.items() if not k.startswith("model.")}  # intensity, learning_rate, warm-up
        batch = 2
        timed = {k: v.value for k, v in mrcnn.items() if k not in ("weights", "backbone_weights")}  # speed only
        objects = max(1, round(fp.objects.count_median)) if fp.objects else 1
        s = seconds_per_sample(
            {
                "arch": "maskrcnn",
                "in_channels": in_channels.value,
                "classes": classes,
                "batch": batch,
                "objects": objects,
            }
            | timed
        )
        n_val, n_train = _split_cases(fp, fractions)
        cost = epoch_cost(n_train, n_val, s, settings.workers, n_train)
        return (
            out
            | {"batch_size": Choice(batch, "whole images")}
            | plan_epochs(settings.budget_minutes, cost, batch * settings.workers)
        )
    scale = plan_scale(fp, settings)
    if scale.value != 1:  # the network sees the scaled images: plan on them
        fp = replace(fp, median_shape=scaled_shape(fp.median_shape, scale.value))
        out["preprocess.scale"] = scale
    elif (spacing := plan_spacing(fp)).value is not None:  # at the median spacing, the median image keeps its size
        out["preprocess.spacing"] = spacing
    geo = plan_geometry(fp, settings)
    sampling = plan_sampling(fp, geo["patch_size"].value)
    s = seconds_per_sample(
        {
            "arch": "dynunet",
            "filters": geo["filters"].value,
            "kernels": geo["kernels"].value,
            "strides": geo["strides"].value,
            "patch_size": geo["patch_size"].value,
            "in_channels": in_channels.value,
            "classes": classes,
            "batch": sampling["batch_size"].value * sampling["patches_per_image"].value,
        }
    )
    cost = epoch_seconds(
        fp, fractions, sampling["patches_per_image"].value, geo["patch_size"].value, s, settings.workers
    )
    return (
        out
        | {
            "model.kernels": geo["kernels"],
            "model.strides": geo["strides"],
            "model.filters": geo["filters"],
            "preprocess.patch_size": geo["patch_size"],
            "augment.rotate90": geo["rotate90"],
            "foreground_oversample": plan_oversample(fp),
            "patches_per_image": sampling["patches_per_image"],
            "batch_size": sampling["batch_size"],
        }
        | plan_epochs(settings.budget_minutes, cost, sampling["batch_size"].value * settings.workers)
    )
