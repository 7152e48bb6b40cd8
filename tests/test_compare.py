import json

import numpy as np
import pandas as pd
import pytest

from segops.compare import (
    NO_CHAMPION,
    apply_gate,
    bootstrap_mean_diff,
    class_deltas,
    compare,
    pair_by_case,
    paired_cases,
    subgroup_deltas,
)
from segops.config.schema import CaseRegression, PromotionGate
from segops.errors import SegopsError, ShapeError, StepError


def _table(dice, per_class=None, modality=None, ids=None) -> pd.DataFrame:
    """Per-case table as the evaluate step writes it; IoU derived from Dice (IoU = D / (2 - D))."""
    dice = np.asarray(dice, dtype=float)
    table = pd.DataFrame(
        {
            "case_id": ids if ids is not None else [f"c{i:03d}" for i in range(len(dice))],
            "dice": dice,
            "iou": dice / (2 - dice),
            "dice_per_class": [json.dumps(p) if p else "" for p in per_class] if per_class else "",
        }
    )
    if modality is not None:
        table["modality"] = modality
    return table


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_covers_the_true_mean_at_about_the_nominal_rate() -> None:
    data, boot = np.random.default_rng(7), np.random.default_rng(0)
    hits = 0
    for _ in range(400):
        _, low, high = bootstrap_mean_diff(data.normal(0.02, 0.05, size=40), 500, 0.95, boot)
        hits += low < 0.02 < high
    # Percentile bootstrap covers a little under 95% for small n (about 93% here; sd of the rate ~1.2%).
    assert 0.89 <= hits / 400 <= 0.98


def test_bootstrap_ci_shrinks_with_more_cases() -> None:
    data = np.random.default_rng(1)
    widths = []
    for n in (40, 1600):
        deltas = data.normal(0.02, 0.05, size=n)
        mean, low, high = bootstrap_mean_diff(deltas, 2000, 0.95, np.random.default_rng(0))
        assert mean == pytest.approx(deltas.mean()) and low < mean < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 4  # width ~ 1/sqrt(n): 40x the cases, about 1/6.3 the width


def test_bootstrap_is_deterministic_per_seed_across_chunks() -> None:
    deltas = np.random.default_rng(1).normal(size=300)
    a = bootstrap_mean_diff(deltas, 20000, 0.9, np.random.default_rng(3))  # 6e6 indices: several chunks
    assert a == bootstrap_mean_diff(deltas, 20000, 0.9, np.random.default_rng(3))
    assert a != bootstrap_mean_diff(deltas, 20000, 0.9, np.random.default_rng(4))
    assert a[1] < a[0] < a[2]


def test_bootstrap_of_constant_deltas_is_a_point() -> None:
    mean, low, high = bootstrap_mean_diff(np.full(25, 0.03), 500, 0.95, np.random.default_rng(0))
    assert (mean, low, high) == pytest.approx((0.03, 0.03, 0.03), abs=1e-12)


def test_bootstrap_rejects_bad_input() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ShapeError, match=r"got shape \(0,\)"):
        bootstrap_mean_diff(np.array([]), 100, 0.95, rng)
    with pytest.raises(SegopsError, match="1 of 2 differences are not finite"):
        bootstrap_mean_diff(np.array([0.1, np.nan]), 100, 0.95, rng)
    with pytest.raises(SegopsError, match="confidence must be in"):
        bootstrap_mean_diff(np.array([0.1]), 100, 1.5, rng)


# --------------------------------------------------------------------------- pairing


def test_paired_cases_aligns_by_case_id_and_keeps_subgroups() -> None:
    champ = _table([0.8, 0.6, 0.9], ids=["b", "a", "c"])
    chall = _table([0.7, 0.9, 0.95], modality=["CT", "MR", "CT"], ids=["a", "c", "b"])
    chall["site"] = ["x", "y", "z"]
    paired = paired_cases(champ, chall)
    assert list(paired["case_id"]) == ["a", "b", "c"]
    assert list(paired.columns[:7]) == [
        "case_id",
        "dice_champion",
        "dice_challenger",
        "iou_champion",
        "iou_challenger",
        "delta_dice",
        "delta_iou",
    ]
    assert {"modality", "site"} <= set(paired.columns) and "dice" not in paired.columns
    np.testing.assert_allclose(paired["dice_champion"], [0.6, 0.8, 0.9])
    np.testing.assert_allclose(paired["delta_dice"], [0.1, 0.15, 0.0], atol=1e-12)
    assert list(paired["modality"]) == ["CT", "CT", "MR"]


def test_pair_by_case_keeps_shared_cases_with_suffixed_columns_and_deltas() -> None:
    a = pd.DataFrame({"case_id": ["x", "y", "z"], "dice": [0.5, 0.25, 1.0], "iou": [0.4, 0.2, 1.0], "site": "s"})
    b = pd.DataFrame({"case_id": ["z", "x"], "dice": [0.75, 0.875], "mask_path": ["z.png", "x.png"]})
    paired = pair_by_case(a, b, ("dice", "iou", "mask_path"))
    assert list(paired.columns) == ["case_id", "dice_a", "iou_a", "dice_b", "mask_path_b", "delta_dice"]
    assert list(paired["case_id"]) == ["x", "z"]  # a's order, only cases in both
    assert list(paired["delta_dice"]) == [0.375, -0.25]
    b["iou"] = [0.5, 0.75]
    paired = pair_by_case(a, b, ("iou",), ("champion", "challenger"))
    assert list(paired.columns) == [
        "case_id",
        "dice_champion",
        "iou_champion",
        "dice_challenger",
        "iou_challenger",
        "delta_dice",
        "delta_iou",
    ]
    assert list(paired["delta_iou"]) == [0.75 - 0.4, 0.5 - 1.0]


def test_paired_cases_refuses_different_case_sets() -> None:
    champ = _table([0.8] * 5, ids=["a", "b", "c", "d", "e"])
    chall = _table([0.8] * 4, ids=["a", "b", "x", "y"])
    with pytest.raises(
        StepError,
        match=r"different cases: 3 only in champion \(e.g. 'c', 'd', 'e'\), 2 only in challenger "
        r"\(e.g. 'x', 'y'\), 2 shared\. The comparison must be on the same cases",
    ):
        paired_cases(champ, chall)


def test_paired_cases_refuses_duplicates_missing_columns_and_nan() -> None:
    with pytest.raises(StepError, match=r"challenger case table repeats 1 case_id\(s\) \(e.g. 'a'\)"):
        paired_cases(_table([0.5, 0.6], ids=["a", "b"]), _table([0.5, 0.6], ids=["a", "a"]))
    with pytest.raises(StepError, match=r"champion case table lacks column\(s\) \['iou'\]"):
        paired_cases(_table([0.5]).drop(columns="iou"), _table([0.5]))
    with pytest.raises(StepError, match=r"not a finite number for 1 case\(s\) \(e.g. 'c001'\)"):
        paired_cases(_table([0.5, 0.5]), _table([0.5, np.nan]))
    with pytest.raises(StepError, match="no champion case table"):
        paired_cases(None, _table([0.5]))


# --------------------------------------------------------------------------- breakdowns


def test_class_deltas_use_cases_where_both_models_report_the_class() -> None:
    champ = _table(
        [0.7, 0.6, 0.5, 0.5],
        per_class=[{"1": 0.9, "2": 0.5}, {"1": 0.8, "2": 0.4}, {"1": 0.6}, None],
    )
    chall = _table(
        [0.8, 0.7, 0.6, 0.5],
        per_class=[{"1": 0.95, "2": 0.65}, {"1": 0.9}, {"1": 0.7, "10": 0.2}, {"1": 0.3}],
    )
    classes = class_deltas(paired_cases(champ, chall))
    assert list(classes["class"]) == ["1", "2"]  # "10" and case 3's class 1 lack a champion value
    one, two = classes.iloc[0], classes.iloc[1]
    assert one["cases"] == 3 and two["cases"] == 1
    assert one["dice_champion"] == pytest.approx((0.9 + 0.8 + 0.6) / 3)
    assert one["dice_challenger"] == pytest.approx((0.95 + 0.9 + 0.7) / 3)
    assert one["delta"] == pytest.approx(0.25 / 3)
    assert (two["dice_champion"], two["dice_challenger"], two["delta"]) == pytest.approx((0.5, 0.65, 0.15))


def test_class_deltas_without_per_class_data_and_with_bad_json() -> None:
    assert class_deltas(paired_cases(_table([0.5]), _table([0.6]))).empty
    bad = _table([0.5])
    bad["dice_per_class"] = "{1: 0.5"
    with pytest.raises(StepError, match=r"case 'c000': dice_per_class '\{1: 0.5' is not JSON"):
        class_deltas(paired_cases(_table([0.5]), bad))


def test_subgroup_deltas_per_column_and_value() -> None:
    champ = _table([0.6, 0.8, 0.5, 0.9])
    chall = _table([0.7, 0.9, 0.4, 0.9], modality=["CT", "CT", "MR", None])
    chall["site"] = ["a", "b", "a", "b"]
    table = subgroup_deltas(paired_cases(champ, chall), ("modality", "site", "scanner"))
    rows = {(r.column, r.value): r for r in table.itertuples(index=False)}
    assert set(rows) == {("modality", "CT"), ("modality", "MR"), ("modality", None), ("site", "a"), ("site", "b")}
    ct = rows[("modality", "CT")]
    assert ct.cases == 2 and (ct.dice_champion, ct.dice_challenger, ct.delta) == pytest.approx((0.7, 0.8, 0.1))
    assert rows[("modality", "MR")].delta == pytest.approx(-0.1)
    assert rows[("site", "a")].cases == 2 and rows[("site", "a")].delta == pytest.approx(0.0)


def test_compare_summary_is_json_serialisable() -> None:
    champ = _table([0.6, 0.7, 0.8], per_class=[{"1": 0.6}, {"1": 0.7}, {"1": 0.8}])
    chall = _table([0.7, 0.8, 0.9], per_class=[{"1": 0.7}, {"1": 0.8}, {"1": 0.9}], modality=["CT", "MR", "CT"])
    comp = compare(champ, chall, ("modality",), n_resamples=200, confidence=0.9, seed=1)
    summary = json.loads(json.dumps(comp.to_dict()))
    assert summary["n_cases"] == 3 and summary["dice_mean_diff"] == pytest.approx(0.1)
    assert summary["dice_diff_ci_low"] == pytest.approx(0.1) and summary["confidence"] == 0.9
    assert summary["classes"][0]["class"] == "1" and len(summary["subgroups"]) == 2
    assert comp.to_dict() == compare(champ, chall, ("modality",), 200, 0.9, seed=1).to_dict()


# --------------------------------------------------------------------------- gate


def _gate(**kw) -> PromotionGate:
    return PromotionGate(**kw)


def _failed(decision) -> list[str]:
    return [c["name"] for c in decision.checks if not c["passed"]]


def test_gate_passes_a_clearly_better_challenger() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.6, 0.8, size=60)
    champ = _table(base, per_class=[{"1": d, "2": d} for d in base])
    better = base + 0.05
    chall = _table(better, per_class=[{"1": d, "2": d} for d in better])
    decision = apply_gate(compare(champ, chall, (), 500, 0.95, 0), _gate(require_ci_above=0.0))
    assert decision.passed and decision.reasons == []
    assert [c["name"] for c in decision.checks] == [
        "mean_dice_gain",
        "ci_low",
        "case_regression",
        "class_1_dice_delta",
        "class_2_dice_delta",
    ]
    assert json.loads(json.dumps(decision.to_dict()))["passed"] is True


def test_gate_passes_identical_models_under_the_default_no_regression_rules() -> None:
    base = np.random.default_rng(2).uniform(0.5, 0.9, size=30)
    per_class = [{"1": d, "2": 1 - d / 3} for d in base]
    decision = apply_gate(compare(_table(base, per_class), _table(base, per_class), (), 200, 0.95, 0), _gate())
    assert decision.passed, decision.reasons


def test_gate_fails_a_worse_challenger_on_the_mean() -> None:
    base = np.linspace(0.6, 0.9, 20)
    decision = apply_gate(compare(_table(base), _table(base - 0.031), (), 200, 0.95, 0), _gate())
    assert not decision.passed and _failed(decision) == ["mean_dice_gain"]
    assert decision.reasons[0].startswith("mean Dice gain -0.031 < required 0.000 (95% CI -0.031 to -0.031")


def test_gate_fails_too_many_regressed_cases_while_the_mean_improves() -> None:
    base = np.full(10, 0.7)
    chall = base + np.array([0.2] * 7 + [-0.1] * 3)  # mean +0.11, but 30% of cases lose 0.1
    comp = compare(_table(base), _table(chall), (), 200, 0.95, 0)
    assert comp.mean_diff == pytest.approx(0.11)
    decision = apply_gate(comp, _gate(max_case_regression=CaseRegression(dice_drop=0.05, fraction=0.1)))
    assert not decision.passed and _failed(decision) == ["case_regression"]
    assert decision.reasons == ["3 of 10 cases (30.0%) lost more than 0.050 Dice; at most 10.0% may"]
    lenient = apply_gate(comp, _gate(max_case_regression=CaseRegression(dice_drop=0.1, fraction=0.1)))
    assert lenient.passed  # losing exactly 0.1 is not "more than 0.1"


def test_gate_fails_a_class_regression_while_the_mean_improves() -> None:
    champ = _table([0.6] * 8, per_class=[{"1": 0.5, "2": 0.7}] * 8)
    chall = _table([0.65] * 8, per_class=[{"1": 0.72, "2": 0.58}] * 8)
    decision = apply_gate(compare(champ, chall, (), 200, 0.95, 0), _gate(per_class_max_drop=0.05))
    assert not decision.passed and _failed(decision) == ["class_2_dice_delta"]
    assert decision.reasons == [
        "class 2 mean Dice fell 0.700 -> 0.580 (delta -0.120, 8 cases); at most 0.050 drop allowed"
    ]
    unchecked = apply_gate(compare(champ, chall, (), 200, 0.95, 0), _gate(per_class_max_drop=None))
    assert unchecked.passed and not any(c["name"].startswith("class_") for c in unchecked.checks)


def test_gate_fails_when_the_ci_is_not_above_the_requirement() -> None:
    deltas = np.array([0.2, -0.18] * 20)  # small mean gain (+0.01), large spread: the CI spans 0
    base = np.full(40, 0.5)
    comp = compare(_table(base), _table(base + deltas), (), 1000, 0.95, 0)
    assert comp.mean_diff > 0 > comp.ci_low
    gate = _gate(require_ci_above=0.0, max_case_regression=CaseRegression(dice_drop=0.5, fraction=0.1))
    decision = apply_gate(comp, gate)
    assert not decision.passed and _failed(decision) == ["ci_low"]
    assert decision.reasons[0].startswith(f"the 95% CI of the mean Dice gain starts at {comp.ci_low:.3f}")
    assert "not above required 0.000" in decision.reasons[0]


def test_gate_without_per_class_data_records_an_unchecked_entry() -> None:
    comp = compare(_table([0.5, 0.6]), _table([0.6, 0.7]), (), 100, 0.95, 0)
    decision = apply_gate(comp, _gate())
    assert decision.passed
    assert decision.checks[-1]["name"] == "class_dice_delta" and decision.checks[-1]["value"] is None


def test_gate_promotes_the_first_model_when_there_is_no_champion() -> None:
    decision = apply_gate(None, _gate(min_mean_dice_gain=0.5, require_ci_above=0.1))
    assert decision.passed and decision.reasons == [NO_CHAMPION] and decision.checks == []
    assert NO_CHAMPION == "no champion yet: the first model is promoted"
