"""The segment step's mask AP per part of the split (no Ray: scored from hand-made result rows)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from segops.engine.instance_eval import eval_entry
from segops.outputs.reports import SplitGroups
from segops.steps.segment import mask_ap_metrics


def _row(group: str, hit: bool) -> dict[str, str]:
    """One labelled image with one true object (class 1), predicted exactly (``hit``) or elsewhere."""
    label = np.zeros((16, 16), np.int32)
    label[2:8, 2:8] = 1001
    pred = np.zeros((1, 16, 16), bool)
    pred[0, 2:8, 2:8] = hit
    pred[0, 10:14, 10:14] = not hit
    entry = eval_entry(0, pred, np.array([0.9 if hit else 0.8]), np.array([1]), label)
    return {"group_id": group, "eval_json": json.dumps(entry)}


def test_mask_ap_is_scored_per_part_and_a_missing_test_set_gives_no_heldout_ap() -> None:
    results = pd.DataFrame([_row("t1", True), _row("v1", False), {"group_id": "t1", "eval_json": ""}])
    split = SplitGroups(val=frozenset({"v1"}), test=frozenset({"t1"}))
    metrics = mask_ap_metrics(results, split, classes=2)
    assert metrics["heldout_mask_ap50"] == pytest.approx(1.0) and metrics["heldout_mask_ap"] == pytest.approx(1.0)
    assert metrics["val_mask_ap50"] == 0.0
    # both images: one hit (score 0.9), one miss (0.8) → precision 1 up to recall 0.5: 51 of COCO's 101 recall points
    assert metrics["mask_ap50"] == pytest.approx(51 / 101)
    no_test = mask_ap_metrics(results, SplitGroups(val=frozenset({"v1", "t1"})), classes=2)
    assert sorted(no_test) == ["mask_ap", "mask_ap50", "mask_ap75", "val_mask_ap", "val_mask_ap50", "val_mask_ap75"]
    assert no_test["val_mask_ap50"] == pytest.approx(51 / 101)
