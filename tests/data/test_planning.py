"""Plan rules on hand-made fingerprints: exact patch sizes, strides, batch, split, epochs."""

from dataclasses import replace

import pytest

from segops.config.schema import DynUNetSpec, SplitSpec
from segops.data.fingerprint import IntensityStats, ObjectStats
from segops.data.planning import (
    PlanSettings,
    plan_geometry,
    plan_intensity,
    plan_maskrcnn,
    plan_network,
    plan_oversample,
    plan_split,
    plan_train,
    plan_val_split,
)
from segops.errors import PlanError

from ..fingerprints import ISBI


def test_isbi_like_plan_is_exact() -> None:
    seen = {}

    def probe(plan: dict) -> float:
        seen.update(plan)
        return 0.05

    c = {k: v.value for k, v in plan_train(ISBI, 2, PlanSettings(budget_minutes=10), probe).items()}
    assert c["preprocess.patch_size"] == [256, 256] and c["augment.rotate90"] == 0.75
    assert c["model.strides"] == [[1, 1]] + [[2, 2]] * 6  # 256 px → 4 px bottleneck
    assert c["model.kernels"] == [[3, 3]] * 7
    assert c["model.filters"] == [16, 32, 64, 128, 256, 256, 256]
    assert (c["patches_per_image"], c["batch_size"]) == (8, 1)  # 5 % of 30 x 512² px < 8 patches of 256²
    assert c["split.test_fraction"] == 0.2 and c["split.val_fraction"] == 0.1 and c["foreground_oversample"] == 0.33
    assert c["preprocess.intensity"] == {"kind": "percentile", "lower": 0.5, "upper": 99.5}
    assert seen == {
        "arch": "dynunet",
        "filters": c["model.filters"],
        "kernels": [[3, 3]] * 7,
        "strides": [[1, 1]] + [[2, 2]] * 6,
        "patch_size": [256, 256],
        "in_channels": 1,
        "classes": 2,
        "batch": 8,
    }
    # 30 groups: 6 test, 3 val, 21 train
    # epoch: (21 train x 8 patches + 3 val x 4 tiles / 3) x 0.05 s x 1.2 (WORKER_SLOWDOWN) / 2 workers + 1 s
    # = 6.16 s; (600 - 45) / 6.16 = 90.1
    assert c["epochs"] == 90


def test_ct_windows_on_foreground_percentiles() -> None:
    ct = replace(
        ISBI, modalities={"CT": 10}, intensity_fg=IntensityStats(40.0, 60.0, -100.04, 250.26, -1024.0, 900.0, 5000)
    )
    choice = plan_intensity(ct)
    assert choice.value == {"kind": "window", "lower": -100.0, "upper": 250.3}
    assert "5000 sampled foreground pixels" in choice.why


def test_undeclared_volumes_with_air_in_hounsfield_units_are_windowed_as_ct() -> None:
    """NIfTI CT without dataset.json (KiTS, TotalSegmentator) declares no modality; its air (-1000 HU)
    says what it is. MR (no negative values) and a declared modality are left as they are."""
    fg = IntensityStats(40.0, 60.0, -100.04, 250.26, -1024.0, 900.0, 5000)
    nifti_ct = replace(
        ISBI, modalities={"": 10}, intensity_all=IntensityStats(-400, 500, -1000, 1200, -1024, 3000, 9), intensity_fg=fg
    )
    choice = plan_intensity(nifti_ct)
    assert choice.value == {"kind": "window", "lower": -100.0, "upper": 250.3}
    assert choice.why.startswith("CT by its values (0.5th percentile -1000: air in HU)")
    mr = replace(nifti_ct, intensity_all=IntensityStats(300, 200, 0, 1500, 0, 2000, 9))
    assert plan_intensity(mr).value["kind"] == "percentile"
    assert plan_intensity(replace(nifti_ct, modalities={"MR": 10})).value["kind"] == "percentile"  # declared


@pytest.mark.parametrize(
    ("shape", "patch", "pools", "rotate90"),
    [
        ((512, 512), [256, 256], (6, 6), 0.75),
        ((81, 77), [64, 64], (4, 4), 0.75),
        ((200, 220), [192, 192], (5, 5), 0.75),
        # the short axis stops at 96 / 16 = 6 px; the long one pools on alone while >= 12 px
        ((100, 400), [96, 384], (4, 6), 0.0),
        ((400, 100), [384, 96], (6, 4), 0.0),
        ((16, 16), [16, 16], (2, 2), 0.75),
    ],
)
def test_patch_and_strides_from_the_median_shape(shape, patch, pools, rotate90) -> None:
    geo = plan_geometry(replace(ISBI, median_shape=shape), PlanSettings())
    strides, kernels = geo["strides"].value, geo["kernels"].value
    assert geo["patch_size"].value == patch and strides[0] == [1, 1] and kernels == [[3, 3]] * len(strides)
    assert tuple(sum(s[d] == 2 for s in strides) for d in range(2)) == pools
    assert all(4 <= p // 2**n < 8 for p, n in zip(patch, pools))  # the bottleneck
    assert geo["rotate90"].value == rotate90
    # the comment states the rule that made the patch: 384 px is over 256 only on an elongated image
    assert ("the long one up to 256² px in all" in geo["patch_size"].why) == (rotate90 == 0.0)
    spec = DynUNetSpec(arch="dynunet", kernels=kernels, strides=strides, filters=geo["filters"].value)
    assert all(p % d == 0 for p, d in zip(patch, spec.axis_divisors))


def test_anisotropic_spacing_pools_the_fine_axis_first_with_flat_kernels() -> None:
    """nnU-Net's rule: 3 mm rows vs 1 mm columns: columns pool alone (row kernel 1) until the
    spacings are within 2x; then both pool; rows stop at 8 px, where a lone axis needs 12."""
    geo = plan_geometry(replace(ISBI, median_shape=(256, 256), median_spacing=(3.0, 1.0)), PlanSettings())
    assert geo["strides"].value == [[1, 1], [1, 2]] + [[2, 2]] * 5
    assert geo["kernels"].value == [[1, 3]] + [[3, 3]] * 6
    assert geo["patch_size"].value == [256, 256]  # square: a multiple of the larger divisor, 64
    assert "[5, 6] poolings: [256, 256] px → [8, 4] px bottleneck" in geo["strides"].why


def test_plan_network_follows_nnunet_on_a_3d_patch() -> None:
    """A (Z, H, W) = (40, 192, 160) patch at 5 x 0.8 x 0.8 mm (a typical CT): in-plane pools
    first with 1x3x3 kernels; Z joins once its spacing is within 2x of the in-plane one."""
    kernels, strides = plan_network([40, 192, 160], (5.0, 0.8, 0.8))
    # spacing 5/0.8/0.8 → 5/1.6/1.6 → 5/3.2/3.2 (Z within 2x: kernel 3, pools too); sizes → (5, 6, 5)
    assert strides == [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert kernels == [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]


def test_a_gpu_allows_larger_patches() -> None:
    assert PlanSettings().on_gpus(0) == PlanSettings()
    geo = plan_geometry(ISBI, PlanSettings().on_gpus(1))
    assert geo["patch_size"].value == [512, 512] and geo["filters"].value == [32, 64, 128, 256, 512, 512, 512]


def test_an_epoch_on_gpus_is_spread_over_one_worker_per_gpu() -> None:
    """The train step runs one worker per GPU (segops.cluster.scaling): on one GPU an epoch is not
    shared by the two workers a CPU plan counts on, so half as many fit the budget."""

    def epochs(settings: PlanSettings) -> int:
        return plan_train(ISBI, 2, replace(settings, budget_minutes=60), lambda _: 0.5)["epochs"].value

    one, four = PlanSettings().on_gpus(1), PlanSettings().on_gpus(4)
    assert (one.workers, four.workers) == (1, 4)
    # 132, 255, 477 epochs: near proportional (each epoch also pays a fixed overhead)
    assert 1.8 * epochs(one) < epochs(replace(one, workers=2)) < 2 * epochs(one) < 3 * epochs(one) < epochs(four)


@pytest.mark.parametrize("shape", [(6, 40), (12, 12)])
def test_tiny_images_are_a_plan_error(shape) -> None:
    with pytest.raises(PlanError, match=f"median image {shape[0]}x{shape[1]} px is too small .* at least 16 px"):
        plan_geometry(replace(ISBI, median_shape=shape), PlanSettings())


def test_images_of_more_channels_than_a_network_takes_are_a_plan_error_not_a_validation_traceback() -> None:
    fp = replace(ISBI, channels={10: 24})  # e.g. 4D cine files read as 10-channel volumes

    def probe(plan: dict) -> float:
        raise AssertionError("no probe: the plan stops first")

    with pytest.raises(
        PlanError, match=r"the images have 10 channels \(channels per image: \{10: 24\}\); .* at most 4"
    ):
        plan_train(fp, 2, PlanSettings(budget_minutes=10), probe)


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


@pytest.mark.parametrize(("groups", "fraction"), [(30, 0.2), (8, 0.25), (6, 0.1667), (4, 0.25), (5000, 0.04)])
def test_split_holds_out_a_few_groups(groups: int, fraction: float) -> None:
    assert plan_split(replace(ISBI, n_groups=groups)).value == fraction


@pytest.mark.parametrize(
    ("groups", "test", "val"),
    [(30, 0.2, 0.1), (4, 0.25, 0.25), (6, 0.1667, 0.1667), (3, 0.3333, 0.3333), (5000, 0.04, 0.02)],
)
def test_validation_is_small_and_leaves_groups_to_train(groups: int, test: float, val: float) -> None:
    fp = replace(ISBI, n_groups=groups)
    assert plan_split(fp).value == test
    assert plan_val_split(fp, test).value == val


def test_two_groups_keep_no_test_set_and_one_group_is_a_plan_error() -> None:
    two = replace(ISBI, n_groups=2)
    assert (plan_split(two).value, plan_val_split(two, 0.0).value) == (0.0, 0.5)
    SplitSpec(val_fraction=0.5, test_fraction=0.0)  # what the plan writes is a valid split
    with pytest.raises(PlanError, match="one group cannot be split"):
        plan_split(replace(ISBI, n_groups=1))


def test_epochs_stay_within_bounds() -> None:
    def epochs(budget: float, seconds: float) -> int:
        return plan_train(ISBI, 2, PlanSettings(budget_minutes=budget), lambda _: seconds)["epochs"].value

    assert epochs(1, 10.0) == 1
    assert epochs(10_000, 0.0001) == 1000


@pytest.mark.parametrize(
    ("median_shape", "objects", "planned"),
    [
        ((128, 128), ObjectStats(6.0, 12, 64.0, 200.0, 900.0), (128, 128, [8, 16, 32, 64, 128], 128, 100)),
        ((600, 1000), ObjectStats(40.0, 90, 400.0, 900.0, 4000.0), (608, 1024, [16, 32, 64, 128, 256], 512, 150)),
        ((256, 256), ObjectStats(120.0, 375, 30.0, 60.0, 200.0), (256, 256, [8, 16, 32, 64, 128], 512, 600)),
        ((512, 512), ObjectStats(900.0, 2400, 30.0, 60.0, 200.0), (512, 512, [8, 16, 32, 64, 128], 512, 1000)),
    ],
)
def test_mask_rcnn_sizes_and_anchors_from_objects(
    median_shape: tuple[int, int], objects: ObjectStats, planned: tuple[int, int, list[int], int, int]
) -> None:
    """``planned``: min_size, max_size, anchor_sizes, box_batch_size_per_image, detections_per_image
    (dense images: DSB's up to 375 nuclei, LIVECell's thousands of cells), and nothing else."""
    fp = replace(ISBI, task="instance", median_shape=median_shape, objects=objects)
    keys = ("min_size", "max_size", "anchor_sizes", "box_batch_size_per_image", "detections_per_image")
    assert {k: v.value for k, v in plan_maskrcnn(fp).items()} == dict(zip(keys, planned))


def test_mask_rcnn_trains_on_whole_images_two_at_a_time() -> None:
    small = replace(ISBI, task="instance", median_shape=(128, 128), objects=ObjectStats(6.0, 12, 64.0, 200.0, 900.0))
    planned = plan_train(small, 2, PlanSettings(), lambda plan: 0.5)
    assert planned["batch_size"].value == 2 and "preprocess.patch_size" not in planned


@pytest.mark.parametrize(("channels", "expected"), [({1: 30}, 1), ({3: 20, 1: 10}, 3), ({2: 30}, 2), ({1: 5, 3: 5}, 1)])
def test_in_channels_are_the_most_common_channel_count(channels: dict[int, int], expected: int) -> None:
    # nnU-Net datasets with two modalities (_0000, _0001) are 2-channel cases; ties go to the fewer channels
    plan = plan_train(replace(ISBI, channels=channels), 2, PlanSettings(budget_minutes=10), lambda plan: 0.05)
    assert plan["model.in_channels"].value == expected


@pytest.mark.parametrize("weights", [None, "imagenet", "coco"])
def test_mask_rcnn_starts_from_published_weights_when_the_cache_has_them(weights: str | None) -> None:
    photos = replace(ISBI, task="instance", median_shape=(128, 128), objects=ObjectStats(6.0, 12, 64.0, 200.0, 900.0))
    timed: list[dict] = []
    settings = PlanSettings(maskrcnn_weights=weights, weights_cache="/cache/hub/checkpoints")
    plan = plan_train(photos, 2, settings, lambda p: timed.append(p) or 0.5)
    values = {k: v.value for k, v in plan.items()}
    assert "weights" not in timed[0] and "backbone_weights" not in timed[0]  # the probe times the network only
    if weights is None:
        assert values["model.backbone"] == "resnet18_fpn" and "model.weights" not in values
        assert "no published weights in /cache/hub/checkpoints" in plan["model.backbone"].why
        assert values["preprocess.intensity"]["kind"] == "percentile" and "learning_rate" not in values
        assert values["warmup_epochs"] == 2  # untrained heads: warmed up
    elif weights == "imagenet":
        assert (values["model.backbone"], values["model.backbone_weights"]) == ("resnet18_fpn", "imagenet")
        assert values["model.anchor_sizes"][0] in (8, 16)  # the RPN trains from scratch: the data's anchors
        assert values["warmup_epochs"] == 2
        assert values["preprocess.intensity"] == {"kind": "window", "lower": 0, "upper": 255}
    else:
        assert (values["model.backbone"], values["model.weights"]) == ("resnet50_fpn", "coco")
        assert values["model.anchor_sizes"] == [32, 64, 128, 256, 512] and timed[0]["backbone"] == "resnet50_fpn"
        assert (values["learning_rate"], values["warmup_epochs"]) == (1e-4, 1)
        assert values["preprocess.intensity"] == {"kind": "window", "lower": 0, "upper": 255}
    sixteen_bit = replace(photos, intensity_all=IntensityStats(900.0, 40.0, 20.0, 4000.0, 0.0, 4095.0, 1000))
    kept = plan_train(sixteen_bit, 2, settings, lambda p: 0.5)["preprocess.intensity"].value
    assert kept["kind"] == "percentile"  # 12-bit data is not squeezed into a 0-255 window


def test_a_large_archive_draws_images_per_epoch_so_the_budget_holds() -> None:
    big = replace(ISBI, n_images=3000, n_labelled=3000, n_groups=3000)
    c = {k: v.value for k, v in plan_train(big, 2, PlanSettings(budget_minutes=10), lambda _: 0.05).items()}
    # 200 test, 100 val, 2700 train groups; batch 1 x 8 patches of 256² at 0.05 s x 1.2 (WORKER_SLOWDOWN) / 2
    # workers: a pass = 2700 x 8 x 0.03 = 648 s + 100 val x 4 tiles / 3 x 0.03 + 1 s = 653 s: 1 epoch in (600 - 45) s.
    # 5 epochs (MIN_EPOCHS) need (111 - 5) / 648 of the images: 441 per epoch, 110.8 s each
    assert c["samples_per_epoch"] == 441 and c["epochs"] == 5
    assert 5 * (648 * 441 / 2700 + 5) <= 600 - 45


def test_a_small_dataset_trains_on_every_image_each_epoch() -> None:
    assert "samples_per_epoch" not in plan_train(ISBI, 2, PlanSettings(budget_minutes=10), lambda _: 0.05)


def test_large_photos_of_large_structures_are_planned_smaller() -> None:
    photos = replace(
        ISBI, median_shape=(3000, 4000), channels={3: 30}, objects=ObjectStats(1.0, 1, 1_000_000.0, 2e6, 4e6)
    )
    c = plan_train(photos, 2, PlanSettings(budget_minutes=10), lambda _: 0.05)
    # shorter side to 2 x 256 px: 512 / 3000 = 0.171; the smallest lesions (1000 px across) stay 171 px
    assert c["preprocess.scale"].value == 0.171 and "513x684 px" in c["preprocess.scale"].why
    assert c["preprocess.patch_size"].value == [256, 256]
    assert c["patches_per_image"].value == 11  # ceil(2 x 513 x 684 / 256²), not the 16 of the full image


def test_small_objects_or_small_images_keep_full_resolution() -> None:
    scratches = replace(ISBI, median_shape=(3000, 4000), objects=ObjectStats(1.0, 1, 300.0, 900.0, 4000.0))
    assert "preprocess.scale" not in plan_train(scratches, 2, PlanSettings(), lambda _: 0.05)  # 17 px across
    cells = replace(ISBI, median_shape=(3000, 4000), objects=ObjectStats(1.0, 1, 2500.0, 9000.0, 40_000.0))
    # 50 px across: 16 / 50 = 0.32 is as far as the images may shrink, above the 0.171 the size asks for
    assert plan_train(cells, 2, PlanSettings(), lambda _: 0.05)["preprocess.scale"].value == 0.32
    assert "preprocess.scale" not in plan_train(ISBI, 2, PlanSettings(), lambda _: 0.05)  # 512 px: 1.0


def test_images_of_varied_known_spacing_are_planned_at_the_median_spacing() -> None:
    from segops.data.planning import plan_spacing

    # CT from several scanners: 0.6-1.0 mm pixels, every spacing known
    spread = [0.6 + 0.4 * i / 29 for i in range(30)]
    samples = {"spacing_y": spread, "spacing_x": spread}
    ct = replace(ISBI, modalities={"CT": 30}, image_samples=samples, spacing_known=30, median_spacing=(0.8, 0.8))
    choice = plan_spacing(ct)
    assert choice.value == (0.8, 0.8) and "0.64-0.96 mm (10th-90th percentile)" in choice.why
    planned = plan_train(ct, 2, PlanSettings(budget_minutes=10), lambda plan: 0.05)
    assert planned["preprocess.spacing"].value == (0.8, 0.8)
    assert plan_spacing(replace(ct, image_samples={"spacing_y": [0.8] * 30, "spacing_x": [0.8] * 30})).value is None
    assert plan_spacing(replace(ct, spacing_known=20)).value is None  # a third of the images: spacing unknown
    assert "preprocess.spacing" not in plan_train(ISBI, 2, PlanSettings(budget_minutes=10), lambda plan: 0.05)
