"""Connected-component postprocessing chosen on cross-validation: decisions, application, storage."""

import json

import numpy as np
import pytest

from segops.config.sources import IGNORE_LABEL
from segops.engine.postprocess import (
    FOREGROUND,
    ClassRule,
    Postprocessing,
    choose_postprocessing,
    postprocessing_from_meta,
)
from segops.errors import CheckpointError, LabelError, ShapeError
from segops.metrics import case_scores


def _square(shape: tuple[int, ...], *slices: slice, value: int = 1, into: np.ndarray | None = None) -> np.ndarray:
    out = np.zeros(shape, np.uint8) if into is None else into
    out[slices] = value
    return out


def _object_16() -> np.ndarray:
    """(20, 20) with a 4×4 object (16 px) of class 1 at rows/cols 2..5."""
    return _square((20, 20), slice(2, 6), slice(2, 6))


def _spurious_blob_cases() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Case A: the object plus a 2×2 blob (4 px) far away, Dice 2·16/(20+16) = 8/9; case B exact."""
    truth = _object_16()
    with_blob = _square((20, 20), slice(15, 17), slice(15, 17), into=truth.copy())
    return [with_blob, truth.copy()], [truth, truth.copy()]


def test_largest_component_kept_when_a_spurious_blob_lowers_dice() -> None:
    preds, truths = _spurious_blob_cases()
    post = choose_postprocessing(preds, truths, classes=2, min_cases=1)
    assert post.rules == (ClassRule(1, "largest", None, 17 / 18, 1.0, "largest", 1.0),)
    assert post.cases == 2 and post.source == "out-of-fold"
    assert np.array_equal(post.apply(preds[0]), truths[0])
    assert post.describe() == "class 1: largest component (Dice 0.94 → 1.00)"
    assert post.metrics() == {
        "postprocess_cases": 2.0,
        "postprocess_class1_dice_before": pytest.approx(17 / 18),
        "postprocess_class1_dice_after": 1.0,
        "postprocess_class1_applied": 1.0,
    }


def test_none_when_the_truth_itself_has_two_objects() -> None:
    truth = _square((20, 20), slice(12, 15), slice(12, 15), into=_object_16())  # 16 px + 9 px
    preds, truths = [truth.copy(), _object_16()], [truth, _object_16()]
    post = choose_postprocessing(preds, truths, classes=2, source="validation", min_cases=1)
    # largest drops the true 9 px object in case A: Dice 2·16/(16+25) = 32/41; case B stays 1
    assert post.rules == (ClassRule(1, "none", None, 1.0, 1.0, "largest", pytest.approx((32 / 41 + 1) / 2)),)
    assert post.describe() == "class 1: none (1.00, 0.89 with largest)"
    assert post.metrics()["postprocess_class1_applied"] == 0.0
    assert np.array_equal(post.apply(preds[0]), preds[0])


def test_min_size_removes_specks_where_largest_would_drop_a_true_object() -> None:
    truth = _square((30, 30), slice(2, 8), slice(2, 8))  # 36 px
    truth[20:23, 20:23] = 1  # a second true object, 9 px
    pred = truth.copy()
    pred[12, 25] = pred[27, 5] = 1  # two isolated 1 px false positives
    post = choose_postprocessing([pred], [truth], classes=2, min_cases=1)
    # before: 2·45/(47+45) = 45/46; largest: 2·36/(36+45) = 8/9 (worse); sizes >= 3 keep both true
    # objects: 1.0. Candidates start at ceil(0.25 · 9) = 3, the smallest true object's quarter.
    (rule,) = post.rules
    assert (rule.op, rule.min_size) == ("min_size", 3)
    assert rule.dice_before == pytest.approx(45 / 46) and rule.dice_after == 1.0
    assert rule.candidate == "min_size 3"
    assert np.array_equal(post.apply(pred), truth)
    assert post.metrics()["postprocess_class1_min_size"] == 3.0
    assert post.describe() == "class 1: remove components < 3 px (Dice 0.98 → 1.00)"


def test_volumes_are_labelled_in_3d() -> None:
    truth = np.zeros((8, 10, 10), np.uint8)
    truth[0:2, 0:3, 0:3] = 1  # 18 voxels
    pred = truth.copy()
    pred[5:7, 6:8, 6:8] = 1  # an 8-voxel blob in other slices
    post = choose_postprocessing([pred], [truth], classes=2, min_cases=1)
    assert post.rules == (ClassRule(1, "largest", None, pytest.approx(36 / 44), 1.0, "largest", 1.0),)
    assert np.array_equal(post.apply(pred), truth)


def test_components_are_full_connectivity() -> None:
    """A voxel touching the object only at a corner belongs to it (26-connectivity in 3D)."""
    post = Postprocessing((ClassRule(1, "largest", None, 0.5, 0.6),), cases=1, source="validation")
    vol = np.zeros((4, 4, 4), np.uint8)
    vol[0:2, 0:2, 0:2] = 1
    vol[2, 2, 2] = 1  # corner contact only
    assert np.array_equal(post.apply(vol), vol)


def test_apply_touches_only_the_ruled_class_and_copies() -> None:
    post = Postprocessing(
        (ClassRule(1, "largest", None, 0.5, 0.6), ClassRule(2, "none", None, 0.7, 0.7)),
        cases=3,
        source="out-of-fold",
    )
    class_map = np.zeros((12, 12), np.uint8)
    class_map[0:3, 0:3] = 1  # class 1: 9 px, kept
    class_map[10, 10] = 1  # class 1: 1 px, removed
    class_map[6:8, 0:2] = 2  # class 2: two components, both kept
    class_map[0, 11] = 2
    original = class_map.copy()
    out = post.apply(class_map)
    expected = original.copy()
    expected[10, 10] = 0
    assert np.array_equal(out, expected) and out.dtype == np.uint8
    assert np.array_equal(class_map, original)  # input untouched


def _two_class_cases(touching: bool) -> tuple[np.ndarray, np.ndarray]:
    """Class 1 at rows 2..5, cols 2..5; class 2 beside it (touching) or far away; both 16 px."""
    truth = _object_16()
    cols = slice(6, 10) if touching else slice(14, 18)
    rows = slice(2, 6) if touching else slice(14, 18)
    _square((20, 20), rows, cols, value=2, into=truth)
    return truth, truth.copy()


def test_all_foreground_as_one_region_first() -> None:
    truth, pred = _two_class_cases(touching=True)
    pred[17:19, 0:2] = 2  # a class-2 blob away from the organ pair
    post = choose_postprocessing([pred], [truth], classes=3, min_cases=1)
    fg, c1, c2 = post.rules
    # class 1 stays 1.0, class 2 rises from 2·16/(20+16) = 8/9 to 1: foreground mean 17/18 → 1
    assert fg == ClassRule(FOREGROUND, "largest", None, pytest.approx(17 / 18), 1.0, "largest", 1.0)
    assert c1 == ClassRule(1, "none", None, 1.0, 1.0) and c2 == ClassRule(2, "none", None, 1.0, 1.0)
    assert np.array_equal(post.apply(pred), truth)
    assert post.metrics()["postprocess_foreground_applied"] == 1.0
    assert post.describe().startswith("all foreground: largest component (Dice 0.94 → 1.00); class 1: none (1.00)")


def test_equally_large_components_are_all_kept() -> None:
    truth, pred = _two_class_cases(touching=False)  # two separate 16 px objects, predicted exactly
    pred[0, 19] = 1  # and a 1 px class-1 speck
    post = choose_postprocessing([pred], [truth], classes=3, min_cases=1)
    # largest of all foreground keeps both 16 px objects (as nnU-Net) and drops the speck:
    # class 1 2·16/(17+16) = 32/33 → 1, class 2 stays 1
    assert post.rules[0] == ClassRule(
        FOREGROUND, "largest", None, pytest.approx((32 / 33 + 1) / 2), 1.0, "largest", 1.0
    )
    assert np.array_equal(post.apply(pred), truth)


def test_all_foreground_rule_refused_when_one_class_falls_though_the_mean_rises() -> None:
    truth = _object_16()
    blob = _square((20, 20), slice(14, 17), slice(12, 17), into=truth.copy())  # + a 15 px class-1 blob
    both = _square((20, 20), slice(15, 17), slice(15, 17), value=2, into=truth.copy())  # + a true 4 px class 2
    preds, truths = [blob] * 5 + [both], [truth] * 5 + [both]
    post = choose_postprocessing(preds, truths, classes=3, min_cases=1)
    fg, c1, c2 = post.rules
    # all foreground, largest: class 1 (5·32/47 + 1)/6 → 1, class 2 1 → 5/6 (its object goes in
    # the last case): the foreground mean rises, but class 2 falls, so nnU-Net's rule refuses it
    before_1 = (5 * 32 / 47 + 1) / 6
    assert fg == ClassRule(
        FOREGROUND,
        "none",
        None,
        pytest.approx((before_1 + 1) / 2),
        pytest.approx((before_1 + 1) / 2),
        "largest",
        pytest.approx((1 + 5 / 6) / 2),
    )
    assert fg.dice_candidate > fg.dice_before
    assert c1 == ClassRule(1, "largest", None, pytest.approx(before_1), 1.0, "largest", 1.0)
    # one component per case: nothing to try; 5 cases without class 2 (min_cases 1): none flagged
    assert c2 == ClassRule(2, "none", None, 1.0, 1.0, None, None, 0.0, 0.0)
    assert np.array_equal(post.apply(preds[0]), truth) and np.array_equal(post.apply(both), both)


def test_decided_numbers_match_the_segment_report() -> None:
    rng = np.random.default_rng(3)
    truths = [rng.integers(0, 3, (24, 24)).astype(np.uint8) * (rng.random((24, 24)) > 0.6) for _ in range(5)]
    preds = [np.where(rng.random((24, 24)) > 0.8, rng.integers(0, 3, (24, 24)), t).astype(np.uint8) for t in truths]
    post = choose_postprocessing(preds, truths, classes=3, min_cases=1)
    fg = post.rules[0]
    assert fg.dice_before == pytest.approx(np.mean([case_scores(p, t, 3)["dice"] for p, t in zip(preds, truths)]))
    after = [case_scores(post.apply(p), t, 3) for p, t in zip(preds, truths)]
    for rule in post.rules[1:]:
        assert rule.dice_after == pytest.approx(np.mean([s[f"dice_{rule.cls}"] for s in after]))


def test_json_round_trip_and_meta() -> None:
    preds, truths = _spurious_blob_cases()
    post = choose_postprocessing(preds, truths, classes=2, min_cases=1)
    stored = json.loads(json.dumps(post.to_json()))
    assert Postprocessing.from_json(stored) == post
    assert postprocessing_from_meta({"model": {}, "postprocess": stored}) == post
    assert postprocessing_from_meta({"model": {}, "preprocess": {}}) is None
    assert Postprocessing.from_json(None) is None
    with pytest.raises(CheckpointError, match="'biggest' is not one of none, largest, min_size"):
        Postprocessing.from_json({**stored, "rules": [{**stored["rules"][0], "op": "biggest"}]})


def test_input_errors_name_the_values() -> None:
    with pytest.raises(LabelError, match="got 2 predictions and 1 labels"):
        choose_postprocessing([_object_16()] * 2, [_object_16()], classes=2, min_cases=1)
    with pytest.raises(ShapeError, match=r"case 0: prediction shape \(20, 20\) and label shape \(10, 10\)"):
        choose_postprocessing([_object_16()], [np.zeros((10, 10), np.uint8)], classes=2, min_cases=1)
    post = Postprocessing((), cases=0, source="validation")
    with pytest.raises(ShapeError, match=r"got shape \(1, 1, 4, 4\)"):
        post.apply(np.zeros((1, 1, 4, 4), np.uint8))


def test_min_size_stays_below_half_the_smallest_object_seen_in_the_labels_or_the_training_set() -> None:
    """The deciding cases hold objects of 49 and 36 px and a 12 px false speck: removing components
    under 18 px (half of 36) removes the speck alone. Told that training labels hold objects of 10 px,
    no size that would remove the speck is safe, so nothing is applied."""
    truth = np.zeros((40, 40), np.uint8)
    truth[2:9, 2:9] = 1  # 49 px
    truth[20:26, 20:26] = 1  # 36 px
    pred = truth.copy()
    pred[32:35, 32:36] = 1  # 12 px speck
    post = choose_postprocessing([pred], [truth], 2, source="validation", min_cases=1)
    (rule,) = post.rules
    assert (rule.op, rule.min_size) == ("min_size", 18)
    assert rule.dice_after == 1.0 and rule.dice_before == pytest.approx(2 * 85 / (97 + 85))
    capped = choose_postprocessing([pred], [truth], 2, source="validation", smallest_object=10, min_cases=1)
    assert capped.rules[0].op == "none"


def test_no_rule_is_chosen_on_fewer_cases_holding_the_class_than_min_cases() -> None:
    """The spurious-blob case of the first test, decided on 4 cases holding the class: too few for
    the default (5), so nothing is applied though "largest" would raise the Dice there; 5 suffice."""
    truth = np.zeros((20, 20), np.uint8)
    truth[2:8, 2:8] = 1
    pred = truth.copy()
    pred[15:17, 15:17] = 1
    empty = np.zeros_like(truth)
    four = choose_postprocessing([pred] * 4 + [empty] * 3, [truth] * 4 + [empty] * 3, classes=2)
    assert four.rules[0].op == "none" and four.rules[0].dice_after == four.rules[0].dice_before
    assert four.rules[0].dice_before == pytest.approx(4 / 7 * (2 * 36 / (40 + 36)) + 3 / 7)
    five = choose_postprocessing([pred] * 5, [truth] * 5, classes=2)
    assert five.rules[0].op == "largest" and five.rules[0].dice_after == 1.0


def _rare_defect_cases(found_small: bool = False) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """10 clean parts, each predicted with a 3×3 speck (9 px) and a 2×2 one, and 5 defective parts
    whose thin true scratch (1×12 px) is predicted 3 px wide (36 px) beside a 2×2 speck. With
    ``found_small`` the last defect is predicted as a 2×3 (6 px) component only."""
    preds, truths = [], []
    for i in range(10):
        pred = np.zeros((32, 32), np.uint8)
        pred[2 + i : 5 + i, 20:23] = 1
        pred[28:30, 2:4] = 1
        preds.append(pred)
        truths.append(np.zeros_like(pred))
    for i in range(5):
        truth = np.zeros((32, 32), np.uint8)
        truth[10, 4 + i : 16 + i] = 1
        pred = np.zeros_like(truth)
        pred[9:12, 4 + i : 16 + i] = 1
        pred[28:30, 28:30] = 1
        if found_small and i == 4:
            pred[:] = 0
            pred[10:12, 8:11] = 1
        preds.append(pred)
        truths.append(truth)
    return preds, truths


def test_false_alarms_on_clean_cases_are_removed_when_every_found_defect_stays_found() -> None:
    """Rare defects: every clean part gets specks. The sizes below the smallest true object (3 and 6
    px: a quarter and half of the 12 px scratch) leave each clean part its 9 px speck; one more than
    the clean parts' largest false alarm (10 px) clears them all and keeps every scratch."""
    preds, truths = _rare_defect_cases()
    post = choose_postprocessing(preds, truths, classes=2, source="validation")
    (rule,) = post.rules
    assert (rule.op, rule.min_size) == ("min_size", 10)
    fg_before = 2 * 12 / (36 + 4 + 12)  # each scratch: Dice with its speck
    fg_after = 2 * 12 / (36 + 12)
    assert rule.dice_before == pytest.approx(0.5 * fg_before + 0.5 * 0.0)  # balanced: no clean part right
    assert rule.dice_after == pytest.approx(0.5 * fg_after + 0.5 * 1.0)
    assert (rule.empty_flagged_before, rule.empty_flagged_after) == (1.0, 0.0)
    assert all(not post.apply(p).any() for p in preds[:10])
    for pred in preds[10:]:  # the scratch stays, its speck goes
        scratch = pred.copy()
        scratch[28:30] = 0
        assert np.array_equal(post.apply(pred), scratch)
    assert post.describe() == (
        "class 1: remove components < 10 px (balanced Dice 0.23 → 0.75; clean cases flagged 100% → 0%)"
    )
    assert post.metrics()["postprocess_class1_empty_flagged_after"] == 0.0
    assert Postprocessing.from_json(json.loads(json.dumps(post.to_json()))) == post


def test_no_size_removes_a_defect_that_validation_found() -> None:
    """As above, but one scratch is found only as a 6 px component: 10 px would lose it, so the
    largest size that keeps every found defect wins (7 px, one more than 6, is not a clean part's
    largest false alarm; "largest" ties with 6 px and is tried first: each clean part keeps a speck)."""
    preds, truths = _rare_defect_cases(found_small=True)
    post = choose_postprocessing(preds, truths, classes=2, source="validation")
    (rule,) = post.rules
    assert (rule.op, rule.empty_flagged_before, rule.empty_flagged_after) == ("largest", 1.0, 1.0)
    assert np.array_equal(post.apply(preds[14]), preds[14])


def test_clean_cases_are_not_balanced_against_too_few_defective_ones() -> None:
    """Four defective parts (fewer than min_cases): no rule at all, as before; with min_cases 4 the
    false-alarm size is tried and chosen."""
    preds, truths = _rare_defect_cases()
    few = choose_postprocessing(preds[:14], truths[:14], classes=2)
    assert few.rules[0].op == "none" and few.rules[0].empty_flagged_before is None
    four = choose_postprocessing(preds[:14], truths[:14], classes=2, min_cases=4)
    assert (four.rules[0].op, four.rules[0].min_size) == ("min_size", 10)


def test_a_decision_stored_before_the_false_alarm_figures_still_loads() -> None:
    stored = {
        "source": "validation",
        "cases": 3,
        "rules": [{"cls": 1, "op": "largest", "min_size": None, "dice_before": 0.5, "dice_after": 0.6}],
    }
    post = Postprocessing.from_json(stored)
    assert post is not None and post.rules[0].empty_flagged_before is None
    assert "empty_flagged" not in " ".join(post.metrics())


def test_a_blob_on_ignored_truth_is_no_false_alarm() -> None:
    """ignore_void: a predicted blob where the truth is ignored costs nothing, so no rule is
    chosen to remove it; the same blob on scored background is removed (as above)."""
    preds, truths = _spurious_blob_cases()
    ignored = [t.copy() for t in truths]
    ignored[0][14:18, 14:18] = IGNORE_LABEL  # the blob of case A lies on ignored pixels
    post = choose_postprocessing(preds, ignored, classes=2, min_cases=1)
    assert post.rules == (ClassRule(1, "none", None, 1.0, 1.0),)
