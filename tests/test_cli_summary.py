"""The run summary: held-out (test) figures, then validation, then all cases, foreground Dice first in
each; "no test set" when nothing was held out; a warning when the model predicted no foreground."""

from dataclasses import replace
from pathlib import Path

import pytest

from segops.cli import NO_TEST_SET, _print_summary
from segops.steps.results import SegmentResult, TrainResult
from segops.workflows import RunResult


def _result(
    metrics: dict[str, float], test_groups: frozenset[str] | None = None, selected_by: str = "val_dice"
) -> RunResult:
    """A run of one segment step, after a train step that held out ``test_groups`` (None: no train step)."""
    root = Path("runs/r1")
    segment = SegmentResult(root / "outputs.parquet", root / "report.parquet", "d1", root, str(root), metrics)
    steps: tuple = (segment,)
    if test_groups is not None:
        train = TrainResult(root / "model", frozenset({"v"}), 3, selected_by, {}, test_groups=test_groups)
        steps = (train, segment)
    return RunResult("r1", root, "m1", "sqlite:///mlruns.db", [s.to_manifest() for s in steps], steps)


def _rows(text: str) -> list[list[str]]:
    """The summary table's rows as their cells."""
    return [[cell.strip() for cell in line.strip("│┃ ").split("│")] for line in text.splitlines()]


def test_summary_leads_with_foreground_dice_and_warns_on_empty_predictions(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = {
        "segment_heldout_cases": 20.0,
        "segment_heldout_dice_mean": 0.72,
        "segment_heldout_fg_dice_mean": 0.0,
        "segment_val_cases": 1.0,
        "segment_val_dice_mean": 0.75,
        "segment_val_fg_dice_mean": 0.0,
        "segment_labelled_cases": 30.0,
        "segment_fg_dice_mean": 0.0,
        "segment_dice_mean": 0.7,
        "segment_empty_prediction_fraction": 1.0,
    }
    _print_summary(_result(metrics, frozenset(f"t{i}" for i in range(20))))
    text = capsys.readouterr().out
    rows = _rows(text)
    firsts = [r[0] for r in rows]
    held, val = firsts.index("held-out (test)"), firsts.index("validation")
    assert firsts[held : held + 3] == ["held-out (test)", "heldout_fg_dice_mean", "heldout_dice_mean"]
    assert firsts[val : val + 3] == ["validation", "val_fg_dice_mean", "val_dice_mean"]
    assert firsts[val + 3 : val + 6] == ["all labelled", "fg_dice_mean", "dice_mean"]
    assert rows[held][1] == "20 cases; touched by nothing before this step"  # a group a case: no count
    assert rows[val][1] == "1 case; chose the checkpoint: flatters the model"
    assert rows[val + 3][1] == "30 cases; train, validation and test together"
    assert NO_TEST_SET not in text
    assert "predicted no foreground on any segmented image" in text
    _print_summary(_result(metrics | {"segment_empty_prediction_fraction": 0.7}))
    assert "predicted no foreground" not in capsys.readouterr().out


def test_summary_warns_when_most_clean_cases_got_a_mask(capsys: pytest.CaptureFixture[str]) -> None:
    """A rare-defect model with fine foreground Dice that marks every clean part: the held-out
    figure decides; validation speaks only where nothing was held out."""
    metrics = {"segment_heldout_cases": 12.0, "segment_heldout_fg_dice_mean": 0.6, "segment_heldout_empty_flagged": 1.0}
    _print_summary(_result(metrics | {"segment_val_empty_flagged": 0.0}, frozenset({"t"})))
    said = " ".join(capsys.readouterr().out.split())
    assert "100% of the held-out cases with nothing to segment (clean parts) got a mask" in said
    _print_summary(_result(metrics | {"segment_heldout_empty_flagged": 0.2, "segment_val_empty_flagged": 1.0}))
    assert "got a mask" not in capsys.readouterr().out  # the held-out figure is below the line
    _print_summary(_result({"segment_val_cases": 4.0, "segment_val_empty_flagged": 0.75}, frozenset()))
    assert "75% of the validation cases" in " ".join(capsys.readouterr().out.split())


def test_summary_says_in_words_when_no_test_set_was_held_out(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = {"segment_heldout_cases": 0.0, "segment_val_cases": 4.0, "segment_val_dice_mean": 0.8}
    _print_summary(_result(metrics, frozenset()))
    text = capsys.readouterr().out
    assert ["held-out (test)", NO_TEST_SET] in _rows(text)
    assert NO_TEST_SET == "no test set (split.test_fraction: 0 or too few groups): no held-out figures"
    assert (
        "heldout_" not in text
        and "4 cases of 1 group (few: varies with split.seed; train.folds scores every group); chose the checkpoint"
        in " ".join(text.split())
    )
    _print_summary(_result(metrics, frozenset(), selected_by="none (select: last)"))
    text = " ".join(capsys.readouterr().out.split())
    assert "group); chose the postprocessing, not the epoch" in text and "flatters" not in text
    _print_summary(_result(metrics | {"segment_val_cases": 0.0}))  # no train step: a model from elsewhere
    text = capsys.readouterr().out
    assert "held-out (test)" not in text and "validation" not in text


def test_summary_gives_the_out_of_fold_figure_with_folds(capsys: pytest.CaptureFixture[str]) -> None:
    root = Path("runs/r1")
    metrics = {"segment_heldout_cases": 3.0, "segment_heldout_dice_mean": 0.7, "segment_val_cases": 0.0}
    segment = SegmentResult(root / "outputs.parquet", root / "report.parquet", "d1", root, str(root), metrics)
    best = {"cv_dice_mean": 0.81, "cv_fg_dice_mean": 0.62}
    test = frozenset({"t1", "t2", "t3"})
    train = TrainResult(root / "model", frozenset(), -1, "val_dice", best, test_groups=test, folds=5)
    steps = (train, segment)
    _print_summary(RunResult("r1", root, "m1", "sqlite:///mlruns.db", [s.to_manifest() for s in steps], steps))
    rows = _rows(capsys.readouterr().out)
    assert ["cross-validation", "5 folds, out-of-fold Dice 0.8100, foreground Dice 0.6200"] in rows
    assert ["held-out (test)", "3 cases; touched by nothing before this step"] in rows  # 3 groups of one case


def test_summary_counts_the_groups_a_part_rests_on_and_says_when_they_are_few(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Held-out slices of 3 series (or views of 3 parts): a figure that moves with the split seed."""
    metrics = {"segment_heldout_cases": 24.0, "segment_heldout_fg_dice_mean": 0.58, "segment_val_cases": 16.0}
    _print_summary(_result(metrics, frozenset({"part03", "part07", "part11"})))
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "24 cases of 3 groups (few: varies with split.seed; train.folds scores every group); touched by nothing "
        "before this step" in text
    )
    assert "16 cases of 1 group (few: varies with split.seed" in text
    _print_summary(_result(metrics, frozenset(f"part{i:02d}" for i in range(6))))
    text = " ".join(capsys.readouterr().out.split())
    assert "24 cases of 6 groups; touched by nothing before this step" in text


def test_summary_says_the_review_queue_is_off_and_a_resumed_run_reloads_no_queue(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = Path("runs/r1")
    metrics = {"segment_outputs": 4.0}
    segment = SegmentResult(
        root / "outputs.parquet", root / "report.parquet", "d1", root, str(root), metrics, risk=False
    )
    reloaded = SegmentResult.from_manifest(segment.to_manifest())  # what a resumed run sees
    assert reloaded == segment and (reloaded.review, reloaded.review_page, reloaded.flagged) == (None, None, None)
    _print_summary(RunResult("r1", root, "m1", "sqlite:///mlruns.db", [segment.to_manifest()], (reloaded,)))
    assert ["review queue", "off: no risk computed (segment.review.enabled: false)"] in _rows(capsys.readouterr().out)
    on = replace(segment, review=root / "review.parquet", metrics=metrics | {"segment_flagged_cases": 2.0}, risk=True)
    assert SegmentResult.from_manifest(on.to_manifest()) == on
    _print_summary(RunResult("r1", root, "m1", "sqlite:///mlruns.db", [on.to_manifest()], (on,)))
    assert ["review queue", "2 case(s) flagged: runs/r1/review.parquet"] in _rows(capsys.readouterr().out)


def test_summary_names_each_class_dice_and_warns_of_a_class_never_found(capsys: pytest.CaptureFixture[str]) -> None:
    """Four organs with a held-out mean of 0.72 over classes: the cord scores 0 and the summary names it."""
    per_class = {"segment_heldout_class_1_dice_mean": 0.96, "segment_heldout_class_1_cases": 24.0}
    per_class |= {"segment_heldout_class_2_dice_mean": 0.0, "segment_heldout_class_2_cases": 42.0}
    metrics = {"segment_heldout_cases": 42.0, "segment_heldout_fg_dice_mean": 0.72} | per_class
    metrics |= {"segment_val_class_1_dice_mean": 0.5, "segment_val_class_1_cases": 3.0}
    result = _result(metrics, frozenset({"t"}))
    named = replace(result.results[-1], class_names={1: "Heart", 2: "SpinalCord"})
    _print_summary(replace(result, results=(*result.results[:-1], named)))
    rows = {r[0]: r[1] for r in _rows(capsys.readouterr().out) if len(r) > 1}
    assert rows["held-out Dice per class"].startswith("Heart 0.9600 (24) · SpinalCord 0.0000 (42)")
    assert "SpinalCord: held-out Dice below 0.1" in rows["warning"]
    _print_summary(_result({k: v for k, v in metrics.items() if "heldout_class" not in k}))
    rows = {r[0]: r[1] for r in _rows(capsys.readouterr().out) if len(r) > 1}
    assert rows["validation Dice per class"].startswith("class 1 0.5000 (3)") and "warning" not in rows


def test_a_summary_of_many_classes_names_the_lowest_twelve(capsys: pytest.CaptureFixture[str]) -> None:
    """117 structures (TotalSegmentator): one line, the twelve lowest, and how many more there are."""
    metrics = {"segment_heldout_cases": 3.0}
    for c in range(1, 118):
        metrics |= {f"segment_heldout_class_{c}_dice_mean": 0.5 + c / 1000, f"segment_heldout_class_{c}_cases": 3.0}
    _print_summary(_result(metrics, frozenset({"t"})))
    rows = _rows(capsys.readouterr().out)
    start = [r[0] for r in rows].index("held-out Dice per class")
    cell = [rows[start][1]]
    for row in rows[start + 1 :]:
        if len(row) > 1 or row[0].startswith("└"):
            break
        cell.append(row[0])  # a wrapped cell goes on in lines whose first column is empty
    said = " ".join(" ".join(cell).split())
    assert said.startswith("class 1 0.5010 (3) · class 2 0.5020 (3)")
    assert "class 12 0.5120 (3) · and 105 more above" in said and "class 13 " not in said
    assert "warning" not in [r[0] for r in rows]
