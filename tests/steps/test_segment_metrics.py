"""The segment step's mask AP per part of the split, and its tables without risk (no Ray: hand-made
result rows)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segops.config.schema import SegmentStep
from segops.data.instances import INSTANCE_STRIDE as S
from segops.engine.checkpoint import load_checkpoint
from segops.engine.instance_eval import eval_entry
from segops.engine.risk import RISK_COLUMNS
from segops.outputs.reports import SplitGroups, build_outputs, build_report, result_defaults
from segops.steps.segment import mask_ap_metrics, without_risk, write_review_queue

from .contexts import make_context, tiny_checkpoint


def _row(group: str, hit: bool, name: str = "", score: float | None = None) -> dict[str, object]:
    """One labelled image with one true object (class 1), predicted exactly (``hit``) or elsewhere."""
    label = np.zeros((16, 16), np.int32)
    label[2:8, 2:8] = S + 1
    pred = np.zeros((1, 16, 16), bool)
    pred[0, 2:8, 2:8] = hit
    pred[0, 10:14, 10:14] = not hit
    entry = eval_entry(0, pred, np.array([score or (0.9 if hit else 0.8)]), np.array([1]), label)
    return {"group_id": group, "eval_json": json.dumps(entry), "rel_path": name or f"{group}.png", "frame": 0}


def test_mask_ap_is_scored_per_part_and_a_missing_test_set_gives_no_heldout_ap() -> None:
    unscored = {"group_id": "t1", "eval_json": "", "rel_path": "u.png", "frame": 0}
    results = pd.DataFrame([_row("t1", True), _row("v1", False), unscored])
    split = SplitGroups(val=frozenset({"v1"}), test=frozenset({"t1"}))
    metrics = mask_ap_metrics(results, split, classes=2)
    assert metrics["heldout_mask_ap50"] == pytest.approx(1.0) and metrics["heldout_mask_ap"] == pytest.approx(1.0)
    assert metrics["val_mask_ap50"] == 0.0
    # both images: one hit (score 0.9), one miss (0.8) → precision 1 up to recall 0.5: 51 of COCO's 101 recall points
    assert metrics["mask_ap50"] == pytest.approx(51 / 101)
    no_test = mask_ap_metrics(results, SplitGroups(val=frozenset({"v1", "t1"})), classes=2)
    assert sorted(no_test) == ["mask_ap", "mask_ap50", "mask_ap75", "val_mask_ap", "val_mask_ap50", "val_mask_ap75"]
    assert no_test["val_mask_ap50"] == pytest.approx(51 / 101)


def test_mask_ap_does_not_depend_on_the_order_the_actors_finished_the_images() -> None:
    """A hit and a miss of equal score on two images: COCOeval ranks the tie by image id, so the
    images are numbered in file order, whatever order their result rows came in."""
    rows = [_row("g", True, "a.png", score=0.8), _row("g", False, "b.png", score=0.8)]
    in_order = mask_ap_metrics(pd.DataFrame(rows), None, classes=2)
    reversed_ = mask_ap_metrics(pd.DataFrame(rows[::-1]), None, classes=2)
    assert in_order == reversed_ and in_order["mask_ap50"] == pytest.approx(51 / 101)  # the hit ranks first


def test_with_review_off_the_outputs_and_report_tables_have_no_risk_columns() -> None:
    """The actor's result rows always hold the risk columns (NaN without risk); ``review.enabled:
    false`` leaves them out of ``outputs.parquet`` and ``report.parquet``."""
    ids = {"case_id": "a", "source_uri": "a.png", "rel_path": "a.png", "frame": 0, "group_id": "g", "modality": "OT"}
    rows = pd.DataFrame([result_defaults("m") | ids | {"has_label": True}])
    outputs, report = build_outputs(rows), build_report(rows, None)
    on, off = SegmentStep(step="segment"), SegmentStep(step="segment", review={"enabled": False})
    assert without_risk(outputs, on) is outputs and set(RISK_COLUMNS) <= set(outputs.columns)
    assert list(without_risk(outputs, off).columns) == [c for c in outputs.columns if c not in RISK_COLUMNS]
    assert {"risk", "risk_reasons"} <= set(report.columns)
    assert list(without_risk(report, off).columns) == [c for c in report.columns if c not in ("risk", "risk_reasons")]


def test_with_review_off_no_queue_is_written_and_with_it_on_the_queue_counts_flagged_cases(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    loaded = load_checkpoint(tiny_checkpoint(tmp_path / "model", seed=0))
    ids = [{"case_id": c, "source_uri": f"{c}.png", "rel_path": f"{c}.png", "frame": 0} for c in "ab"]
    ok = pd.DataFrame([result_defaults("m") | i | {"risk": r} for i, r in zip(ids, (1.5, 0.2))])
    off = SegmentStep(step="segment", review={"enabled": False})
    assert write_review_queue(ok, off, ctx, loaded, ctx.run_dir, "segment", 1.0) is None
    assert list(ctx.run_dir.iterdir()) == []  # nothing written
    on = SegmentStep(step="segment", review={"top": 0})  # top 0: no page, so no image is read
    queue = write_review_queue(ok, on, ctx, loaded, ctx.run_dir, "segment", 1.0)  # the model's threshold
    assert (queue.table, queue.page, queue.flagged) == (ctx.run_dir / "review.parquet", None, 1)
    assert pd.read_parquet(queue.table)["case_id"].tolist() == ["a", "b"]
    assert write_review_queue(ok, on, ctx, loaded, ctx.run_dir, "segment-low", 0.1).flagged == 2  # a lower one
    own = SegmentStep(step="segment", review={"top": 0, "flag_risk": 2.0})  # the step's overrides the model's
    assert write_review_queue(ok, own, ctx, loaded, ctx.run_dir, "segment-own", 0.1).flagged == 0
