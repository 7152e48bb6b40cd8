"""Plan rules on hand-made fingerprints: exact patch sizes, strides, batch, split, epochs."""

from dataclasses import replace

import pytest

from segops.data.fingerprint import Fingerprint, IntensityStats, ObjectStats
from segops.data.planning import (
    PlanSettings,
    plan_geometry,
    plan_intensity,
    plan_maskrcnn,
    plan_oversample,
    plan_split,
    plan_train,
)
from segops.errors import PlanError

ISBI = Fingerprint(
    task="semantic",
    n_images=30,
    n_labelled=30,
    n_groups=30,
    modalities={"OT": 30},
    channels={1: 30},
    shapes=[[512, 512, 30]],
    median_shape=(512, 512),
    median_spacing=(1.0, 1.0),
    intensity_all=IntensityStats(120.0, 40.0, 20.0, 230.0, 0.0, 255.0, 300_000),
    intensity_fg=IntensityStats(90.0, 30.0, 25.0, 180.0, 0.0, 255.0, 300_000),
    label_census={0: (30, 6_137_070), 1: (30, 1_727_250)},
    class_fractions={0: 0.78, 1: 0.22},
    foreground_image_fraction=1.0,
    objects=ObjectStats(1.0, 3, 100.0, 5000.0, 90000.0),
)


def test_isbi_like_plan_is_exact() -> None:
    seen = {}

    def probe(plan: dict) -> float:
        seen.update(plan)
        return 0.05

    c = {k: v.value for k, v in plan_train(ISBI, 2, PlanSettings(budget_minutes=10), probe).items()}
    assert c["preprocess.patch_size"] == [256, 256] and c["augment.rotate90"] == 0.75
    assert c["model.strides"] == [2] * 6  # 256 px → 4 px bottleneck
    assert c["model.channels"] == [16, 32, 64, 128, 256, 256, 256]
    assert (c["patches_per_image"], c["batch_size"]) == (8, 1)  # 5 % of 30 x 512² px < 8 patches of 256²
    assert c["split.val_fraction"] == 0.2 and c["foreground_oversample"] == 0.33
    assert c["preprocess.intensity"] == {"kind": "percentile", "lower": 0.5, "upper": 99.5}
    assert seen == {
        "arch": "unet",
        "channels": c["model.channels"],
        "strides": [2] * 6,
        "patch_size": [256, 256],
        "in_channels": 1,
        "classes": 2,
        "batch": 8,
    }
    # epoch: (24 train x 8 patches + 6 val x 4 tiles / 3) x 0.05 s / 2 workers + 1 s = 6 s; (600 - 45) / 6 = 92.5
    assert c["epochs"] == 92


def test_ct_windows_on_foreground_percentiles() -> None:
    ct = replace(
        ISBI, modalities={"CT": 10}, intensity_fg=IntensityStats(40.0, 60.0, -100.04, 250.26, -1024.0, 900.0, 5000)
    )
    choice = plan_intensity(ct)
    assert choice.value == {"kind": "window", "lower": -100.0, "upper": 250.3}
    assert "5000 sampled foreground pixels" in choice.why


@pytest.mark.parametrize(
    ("shape", "patch", "strides", "rotate90"),
    [
        ((512, 512), [256, 256], 6, 0.75),
        ((81, 77), [64, 64], 4, 0.75),
        ((200, 220), [192, 192], 5, 0.75),
        ((100, 400), [96, 400], 4, 0.0),
        ((400, 100), [400, 96], 4, 0.0),
        ((12, 12), [12, 12], 1, 0.75),
    ],
)
def test_patch_and_strides_from_the_median_shape(shape, patch, strides, rotate90) -> None:
    geo = plan_geometry(replace(ISBI, median_shape=shape), PlanSettings())
    assert geo["patch_size"].value == patch and len(geo["strides"].value) == strides
    assert 4 <= min(patch) // 2**strides < 8  # the bottleneck
    assert geo["rotate90"].value == rotate90


def test_a_gpu_allows_larger_patches() -> None:
    geo = plan_geometry(ISBI, PlanSettings(max_patch_side=512, base_channels=32, max_channels=512))
    assert geo["patch_size"].value == [512, 512] and geo["channels"].value == [32, 64, 128, 256, 512, 512, 512, 512][:7]


def test_tiny_images_are_a_plan_error() -> None:
    with pytest.raises(PlanError, match="median image 6x40 px is too small"):
        plan_geometry(replace(ISBI, median_shape=(6, 40)), PlanSettings())


@pytest.mark.parametrize(
    ("fractions", "with_fg", "expected"),
    [
        ({0: 0.78, 1: 0.22}, 1.0, 0.33),
        ({0: 0.98, 1: 0.02}, 0.8, 0.5),
        ({0: 0.997, 1: 0.003}, 0.9, 0.66),
        ({0: 0.8, 1: 0.2}, 0.3, 0.66),
        ({0: 0.9, 1: 0.09, 2: 0.01}, 1.0, 0.5),
    ],
)
def test_foreground_oversample_rises_for_rare_foreground(fractions, with_fg, expected) -> None:
    assert (
        plan_oversample(replace(ISBI, class_fractions=fractions, foreground_image_fraction=with_fg)).value == expected
    )


@pytest.mark.parametrize(("groups", "fraction"), [(30, 0.2), (8, 0.375), (4, 0.5), (5000, 0.04)])
def test_split_holds_out_a_few_groups(groups: int, fraction: float) -> None:
    assert plan_split(replace(ISBI, n_groups=groups)).value == fraction


def test_epochs_stay_within_bounds() -> None:
    def epochs(budget: float, seconds: float) -> int:
        return plan_train(ISBI, 2, PlanSettings(budget_minutes=budget), lambda _: seconds)["epochs"].value

    assert epochs(1, 10.0) == 1
    assert epochs(10_000, 0.0001) == 1000


def test_mask_rcnn_sizes_and_anchors_from_objects() -> None:
    small = replace(ISBI, task="instance", median_shape=(128, 128), objects=ObjectStats(6.0, 12, 64.0, 200.0, 900.0))
    c = {k: v.value for k, v in plan_maskrcnn(small).items()}
    assert c == {
        "min_size": 128,
        "max_size": 128,
        "anchor_sizes": [8, 16, 32, 64, 128],
        "box_batch_size_per_image": 128,
    }
    wide = replace(small, median_shape=(600, 1000), objects=ObjectStats(40.0, 90, 400.0, 900.0, 4000.0))
    c = {k: v.value for k, v in plan_maskrcnn(wide).items()}
    assert c == {
        "min_size": 608,
        "max_size": 1024,
        "anchor_sizes": [16, 32, 64, 128, 256],
        "box_batch_size_per_image": 512,
    }
    planned = plan_train(small, 2, PlanSettings(), lambda plan: 0.5)
    assert planned["batch_size"].value == 2 and "preprocess.patch_size" not in planned
