"""Planning rules for Mask R-CNN (see :mod:`segops.data.planning`): its image size, anchors and
detection limits from the fingerprint's objects, and where it starts (published weights when the
torch hub cache holds them, else from scratch with a warm-up)."""

from __future__ import annotations

import math

from segops.data.fingerprint import Fingerprint
from segops.data.planning_choices import Choice, PlanSettings

#: The most detections per image a plan asks Mask R-CNN for (each is a full-size mask at inference).
MAX_DETECTIONS = 1000


def plan_maskrcnn(fp: Fingerprint) -> dict[str, Choice]:
    """Mask R-CNN image sizes, anchors and detections per image from the median image and the objects."""
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
        "detections_per_image": _detections(objects.count_max if objects else 0),
    }


def _detections(most: int) -> Choice:
    """torchvision's 100 detections per image, or 1.5 × ``most`` objects in an image, rounded up to 50."""
    wanted = min(MAX_DETECTIONS, 50 * math.ceil(1.5 * most / 50))
    if wanted <= 100:
        return Choice(100, f"at most {most} objects in an image")
    return Choice(wanted, f"up to {most} objects in an image (1.5x, found objects are not capped at 100)")


#: The anchors torchvision's COCO Mask R-CNN learnt with: a pretrained RPN keeps what it learnt.
COCO_ANCHORS = [32, 64, 128, 256, 512]


_SCRATCH_WARMUP = "linear warm-up: untrained heads' first steps blow the losses up (CVPPP probe: epoch 1 loss 86 → 9)"


def plan_maskrcnn_start(fp: Fingerprint, settings: PlanSettings) -> dict[str, Choice]:
    """Where a Mask R-CNN starts: published weights when the cache holds them (a from-scratch
    Mask R-CNN learns little in a CPU budget; torchvision's fine-tuning tutorial starts from COCO).

    ``coco``: ResNet-50 FPN with COCO's weights and anchors, AdamW at 1e-4 with a one-epoch
    warm-up; ``imagenet``: ResNet-18 FPN on an ImageNet backbone. Either way 8-bit images keep
    their 0-255 scale (``window`` 0..255 → [0, 1], then ImageNet's mean and std, as the weights
    saw them), not per-image percentiles. Keys: ``model.*`` fields, ``preprocess.intensity``, and
    step fields (``learning_rate``, ``warmup_epochs``).
    """
    weights = settings.maskrcnn_weights
    if weights is None:
        where = f" in {settings.weights_cache}" if settings.weights_cache else ""
        return {
            "model.backbone": Choice(
                "resnet18_fpn",
                f"from scratch: no published weights{where} "
                "(maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth there gives a COCO start)",
            ),
            "warmup_epochs": Choice(2, _SCRATCH_WARMUP),
        }
    stats = fp.intensity_all
    eight_bit = stats is not None and stats.p00_5 >= 0 and stats.p99_5 <= 255
    out: dict[str, Choice] = {}
    if eight_bit:
        out["preprocess.intensity"] = Choice(
            {"kind": "window", "lower": 0, "upper": 255}, "8-bit images: 0-255 → [0, 1], as the pretrained weights saw"
        )
    if weights == "coco":
        return out | {
            "model.backbone": Choice("resnet50_fpn", "COCO's Mask R-CNN is cached"),
            "model.weights": Choice("coco", "box and mask predictors replaced for the classes"),
            "model.anchor_sizes": Choice(COCO_ANCHORS, "COCO's anchors: the pretrained RPN keeps what it learnt"),
            "learning_rate": Choice(1e-4, "fine-tuning pretrained weights"),
            "warmup_epochs": Choice(1, "linear warm-up of the new heads' first epoch"),
        }
    return out | {
        "model.backbone": Choice("resnet18_fpn", "ImageNet ResNet-18 is cached (no COCO Mask R-CNN)"),
        "model.backbone_weights": Choice("imagenet", "the heads train from scratch on a pretrained backbone"),
        "warmup_epochs": Choice(2, _SCRATCH_WARMUP),
    }
