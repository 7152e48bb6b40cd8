"""The report's split column and its held-out (test) and validation figures, on hand-made frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from segops.outputs.reports import SplitGroups, build_report, class_dice, image_level, report_metrics, split_column

#: groups: t1, t2 test; v1 validation; r1 trained on; x1 a source the split never saw.
GROUPS = ["t1", "t1", "t2", "v1", "v1", "r1", "x1"]
DICE = [0.9, 1.0, 0.5, 0.6, 0.8, 0.95, 0.3]
LABEL_FG = [0.2, 0.0, 0.1, 0.3, 0.0, 0.4, 0.1]
SPLIT = SplitGroups(val=frozenset({"v1"}), test=frozenset({"t1", "t2"}), train=frozenset({"r1"}))


def _results(groups: list[str] = GROUPS, dice: list[float] = DICE, label_fg: list[float] = LABEL_FG) -> pd.DataFrame:
    n = len(groups)
    return pd.DataFrame(
        {
            "case_id": [f"c{i}" for i in range(n)],
            "group_id": groups,
            "source_uri": [f"/in/{i}.png" for i in range(n)],
            "rel_path": [f"{i}.png" for i in range(n)],
            "frame": 0,
            "modality": "XC",
            "has_label": True,
            "dice": dice,
            "iou": [d / (2 - d) for d in dice],
            "pixel_error": [1 - d for d in dice],
            "rand_error": np.nan,
            "fg_fraction": label_fg,
            "label_fg_fraction": label_fg,
            "mask_path": [f"/out/{i}.png" for i in range(n)],
        }
    )


def test_split_column_marks_test_val_train_and_unknown_groups() -> None:
    df = _results()
    assert split_column(df, SPLIT) == ["test", "test", "test", "val", "val", "train", "-"]
    # train groups unknown (a split.json without them): everything outside val and test was trained on
    assert split_column(df, SplitGroups(val=SPLIT.val, test=SPLIT.test))[-2:] == ["train", "train"]
    assert split_column(df, None) == ["-"] * 7


def test_heldout_figures_are_over_test_and_val_figures_over_validation() -> None:
    report = build_report(_results(), SPLIT)
    assert list(report["split"]) == ["test", "test", "test", "val", "val", "train", "-"]
    metrics = report_metrics(report)
    assert (metrics["labelled_cases"], metrics["heldout_cases"], metrics["val_cases"]) == (7, 3, 2)
    assert metrics["heldout_dice_mean"] == pytest.approx((0.9 + 1.0 + 0.5) / 3)
    assert metrics["heldout_dice_median"] == pytest.approx(0.9)
    assert metrics["heldout_fg_dice_mean"] == pytest.approx((0.9 + 0.5) / 2)  # c1 has an empty ground truth
    assert metrics["heldout_pixel_error_mean"] == pytest.approx((0.1 + 0.0 + 0.5) / 3)
    assert metrics["val_dice_mean"] == pytest.approx(0.7)
    assert metrics["val_fg_dice_mean"] == pytest.approx(0.6)  # c4 has an empty ground truth
    assert metrics["val_iou_mean"] == pytest.approx((0.6 / 1.4 + 0.8 / 1.2) / 2)
    assert metrics["dice_mean"] == pytest.approx(sum(DICE) / 7)
    assert metrics["fg_dice_mean"] == pytest.approx((0.9 + 0.5 + 0.6 + 0.95 + 0.3) / 5)
    assert not any(k.startswith(("heldout_rand", "val_rand", "rand")) for k in metrics)  # no boundary_class
    assert "heldout_empty_flagged" in metrics and metrics["heldout_fg_missed"] == 0.0


def test_image_level_calls_count_false_alarms_on_clean_cases_and_missed_cases() -> None:
    """Four clean parts (one given a spot) and two defective ones (one given nothing): Dice means
    would not say either."""
    df = pd.DataFrame(
        {
            "label_fg_fraction": [0.0, 0.0, 0.0, 0.0, 0.01, 0.02],
            "fg_fraction": [0.0, 0.003, 0.0, 0.0, 0.0, 0.02],
        }
    )
    assert image_level(df, "heldout_") == {"heldout_empty_flagged": 0.25, "heldout_fg_missed": 0.5}
    assert image_level(df[df["label_fg_fraction"] > 0]) == {"fg_missed": 0.5}  # no clean case: no false-alarm figure


def test_without_a_test_set_there_are_no_heldout_figures_and_val_never_stands_in() -> None:
    split = SplitGroups(val=frozenset({"v1", "t1"}), test=frozenset(), train=frozenset({"t2", "r1", "x1"}))
    metrics = report_metrics(build_report(_results(), split))
    assert metrics["heldout_cases"] == 0
    assert [k for k in metrics if k.startswith("heldout_")] == ["heldout_cases"]
    assert metrics["val_cases"] == 4 and metrics["val_dice_mean"] == pytest.approx((0.9 + 1.0 + 0.6 + 0.8) / 4)
    unsplit = report_metrics(build_report(_results(), None))  # a model from elsewhere: no split at all
    assert (unsplit["heldout_cases"], unsplit["val_cases"]) == (0, 0)
    assert not any(k.startswith(("heldout_dice", "val_dice")) for k in unsplit)
    assert unsplit["dice_mean"] == pytest.approx(sum(DICE) / 7)


def test_instance_reports_count_detections_per_part() -> None:
    results = _results().assign(
        n_instances=1.0, tp=[1, 1, 0, 2, 0, 3, 1], fp=[0, 1, 1, 0, 0, 0, 0], fn=[0, 0, 1, 1, 0, 0, 0]
    )
    results = results.assign(matched_dice=results["dice"], matched_iou=results["iou"])
    metrics = report_metrics(build_report(results, SPLIT, instances=True))
    assert (metrics["heldout_instances_tp"], metrics["heldout_instances_fp"], metrics["heldout_instances_fn"]) == (
        2.0,
        2.0,
        1.0,
    )
    assert metrics["heldout_instance_f1"] == pytest.approx(4 / 7)
    assert metrics["val_instance_precision"] == 1.0 and metrics["val_instance_recall"] == pytest.approx(2 / 3)
    assert metrics["instances_tp"] == 8.0 and metrics["val_matched_dice_mean"] == pytest.approx(0.7)


def test_each_part_says_how_well_the_risk_ranks_its_bad_masks() -> None:
    results = _results().assign(risk=[0.1, 0.2, 0.9, 0.8, 0.3, 0.0, 1.0], risk_reasons="")
    report = build_report(results, SPLIT)
    assert {"risk", "risk_reasons"} <= set(report.columns)
    metrics = report_metrics(report)
    # held out: Dice 0.9, 1.0, 0.5, none below 0.5, so the errors are those below the median (0.9):
    # the 0.5 case, which is also the riskiest
    assert metrics["heldout_risk_error_dice"] == pytest.approx(0.9) and metrics["heldout_risk_errors"] == 1
    assert metrics["heldout_risk_auroc"] == 1.0 and metrics["heldout_risk_spearman"] == pytest.approx(-0.5)
    # all cases: one below 0.5 (c6, Dice 0.3) and it has the highest risk
    assert metrics["risk_auroc"] == 1.0 and metrics["risk_top10_dice"] == pytest.approx(0.3)
    assert metrics["val_risk_cases"] == 2
    assert "risk_auroc" not in report_metrics(build_report(_results(), SPLIT))  # no risk column: no figures


def test_class_dice_counts_a_class_only_where_truth_or_prediction_holds_it() -> None:
    """Three organs: class 3 is in two truths and never found (Dice 0), which the mean over classes
    (0.67 here) hides; a case with class 2 in neither truth nor prediction (Dice 1) is not counted for
    it, one that predicts class 2 where the truth has none (Dice 0) is."""
    per_class = ['{"1": 0.9, "2": 0.8, "3": 0.0}', '{"1": 0.7, "2": 1.0, "3": 0.0}', '{"1": 0.5, "2": 0.0, "3": 1.0}']
    present = ["[1, 2, 3]", "[1, 3]", "[1]"]
    df = pd.DataFrame({"dice_per_class": per_class, "label_classes": present})
    figures = class_dice(df, "heldout_")
    assert figures["heldout_class_1_dice_mean"] == pytest.approx(0.7) and figures["heldout_class_1_cases"] == 3
    assert figures["heldout_class_2_dice_mean"] == pytest.approx(0.4) and figures["heldout_class_2_cases"] == 2
    assert figures["heldout_class_3_dice_mean"] == 0.0 and figures["heldout_class_3_cases"] == 2
    binary = pd.DataFrame({"dice_per_class": ['{"1": 0.9}'], "label_classes": ["[1]"]})
    assert class_dice(binary) == {}  # one foreground class: the foreground Dice says it already
    assert class_dice(df.drop(columns="label_classes")) == {}  # a report from before the column


def test_report_metrics_give_each_part_its_class_dice() -> None:
    results = _results().assign(dice_per_class=['{"1": 0.9, "2": 0.1}'] * 7, label_classes=["[1, 2]"] * 6 + ["[]"])
    metrics = report_metrics(build_report(results, SPLIT))
    assert metrics["heldout_class_2_dice_mean"] == pytest.approx(0.1) and metrics["heldout_class_2_cases"] == 3
    assert metrics["val_class_1_cases"] == 2 and metrics["class_1_cases"] == 7  # x1: predicted where truth is empty
