"""Per-case risk without Ray: the in-pass head, member agreement, the signals, flags and the rule."""

import json
import math
from itertools import combinations

import numpy as np
import pytest
import torch

from segops.config.schema import MaskRCNNSpec, PreprocessSpec, TTASpec, UNetSpec, WindowIntensity, ZScoreIntensity
from segops.data.fingerprint import Fingerprint, FingerprintAccumulator, record_stats
from segops.engine.cases import InferenceSettings, case_result, predict_batch, segment_cases
from segops.engine.checkpoint import LoadedModel
from segops.engine.detect import InstancePrediction
from segops.engine.ensemble import MirroredModel, SoftmaxEnsemble
from segops.engine.risk import (
    RISK_COLUMNS,
    RISK_FLOAT_COLUMNS,
    MemberVotes,
    RiskReference,
    boundary_band,
    intensity_outside,
    normalised_entropy,
    pooled_member_dice,
    semantic_risk,
)
from segops.engine.train import train_steps, training_batch
from segops.losses import build_loss
from segops.models import build_model

from .squares import squares

ZSCORE = PreprocessSpec(intensity=ZScoreIntensity(kind="zscore"), patch_size=(16, 16))
WINDOW = PreprocessSpec(intensity=WindowIntensity(kind="window", lower=0, upper=255), patch_size=(32, 32))
#: One foreground class in 10 % ± 5 % of each training image, 95 % of images with some; pixels 0..255.
REFERENCE = RiskReference(
    fg_image_fraction=0.95,
    class_image_fractions=((1, 0.10, 0.05), (2, 0.02, 0.01)),
    intensity_range=(0.0, 255.0),
    small_px=4.0,
    max_objects=3,
)


def _unet(classes: int, dims: int = 2, seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    spec = UNetSpec(arch="unet", spatial_dims=dims, classes=classes, channels=(4, 8), strides=(2,), num_res_units=0)
    pre = ZSCORE if dims == 2 else ZSCORE.model_copy(update={"patch_size": (8, 16, 16)})
    return LoadedModel(build_model(spec).eval(), spec, pre, {})


@pytest.mark.parametrize("classes", [2, 3])
def test_normalised_entropy_is_the_softmax_entropy_over_log_classes(classes: int) -> None:
    logits = torch.randn(2, classes, 5, 7, generator=torch.Generator().manual_seed(classes)) * 4
    p = torch.softmax(logits, dim=1).numpy().astype(np.float64)
    expected = -(p * np.log(p)).sum(axis=1) / math.log(classes)
    np.testing.assert_allclose(normalised_entropy(logits).numpy(), expected, atol=1e-5)
    assert normalised_entropy(torch.zeros(1, classes, 2, 2)).numpy() == pytest.approx(np.ones((1, 2, 2)))


def test_pooled_member_dice_is_pairwise_dice_pooled_over_pairs() -> None:
    rng = np.random.default_rng(0)
    maps = [rng.integers(0, 3, (9, 11)) for _ in range(3)]  # three members, classes 0..2
    votes = np.stack([sum((m == c).astype(float) for m in maps) for c in (1, 2)])
    per_class = []
    for c in (1, 2):
        inter = sum(2 * ((a == c) & (b == c)).sum() for a, b in combinations(maps, 2))
        sizes = sum((a == c).sum() + (b == c).sum() for a, b in combinations(maps, 2))
        per_class.append(inter / sizes)
    assert pooled_member_dice(votes, 3) == pytest.approx(np.mean(per_class), abs=1e-12)
    same = np.stack([np.full((4, 4), 2.0)])  # two members agreeing everywhere
    assert pooled_member_dice(same, 2) == 1.0
    assert pooled_member_dice(np.zeros((1, 4, 4)), 2) == 1.0  # nobody predicted foreground
    half = np.zeros((1, 2, 2))
    half[0, 0, 0] = 1  # one member of two drew one pixel: Dice 0
    assert pooled_member_dice(half, 2) == 0.0


def test_member_votes_average_like_the_mirrored_ensemble_and_count_each_members_argmax() -> None:
    folds = [_unet(3, seed=s).model for s in (0, 1)]
    x = torch.randn(2, 1, 12, 16, generator=torch.Generator().manual_seed(3))
    votes = MemberVotes(folds, (0, 1))
    assert votes.members == 8
    with torch.inference_mode():
        out = votes(x)
        reference = MirroredModel(SoftmaxEnsemble(folds), (0, 1))(x)
        expected_votes = torch.zeros(2, 2, 12, 16)
        for fold in folds:
            for dims in ([], [2], [3], [2, 3]):
                y = fold(torch.flip(x, dims) if dims else x)
                y = torch.flip(y, dims) if dims else y
                for c in (1, 2):
                    expected_votes[:, c - 1] += (y.argmax(dim=1) == c).float()
    assert out.shape == (2, 5, 12, 16)
    torch.testing.assert_close(torch.softmax(out[:, :3], 1), torch.softmax(reference, 1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, 3:], expected_votes)


def _finite_risk(row: dict, members: bool = True) -> None:
    assert set(RISK_COLUMNS) <= set(row)
    for name in RISK_FLOAT_COLUMNS:
        if members or name != "member_dice":
            assert math.isfinite(row[name]), (name, row[name])
    assert json.loads(row["area_z_per_class"])


def test_risk_columns_present_and_finite_for_a_2d_model_with_mirrors() -> None:
    loaded = _unet(3)
    image = np.random.default_rng(0).uniform(0, 255, (1, 20, 24)).astype(np.float32)
    settings = InferenceSettings(amp=False, tta=TTASpec(flip_axes=(0, 1)), reference=REFERENCE)
    outside = intensity_outside(image, REFERENCE)  # first: z-score normalisation overwrites a writable image
    plain = predict_batch(loaded, [image], InferenceSettings(amp=False, tta=settings.tta, risk=False))[0]
    (prediction,) = predict_batch(loaded, [image], settings)
    np.testing.assert_array_equal(prediction.class_map, plain.class_map)  # the risk changes no mask
    assert prediction.members == "mirrors" and 0 < prediction.member_dice <= 1
    result = case_result(prediction, None, settings, classes=3, outside=outside)
    row = result.row_fields()
    _finite_risk(row)
    assert set(json.loads(row["area_z_per_class"])) == {"1", "2"}
    fg = result.class_map > 0
    entropy = prediction.entropy.astype(np.float32)
    assert row["entropy_fg"] == pytest.approx(float(entropy[fg].mean()))
    assert row["intensity_outside"] == 0.0 and not row["flag_intensity"]
    alone = predict_batch(loaded, [image], InferenceSettings(amp=False, reference=REFERENCE))[0]
    assert math.isnan(alone.member_dice)  # one member: no agreement to measure
    assert math.isnan(case_result(alone, None, settings, 3, outside).row_fields()["member_dice"])


def test_risk_with_probabilities_keeps_the_softmax_and_the_same_class_map() -> None:
    loaded = _unet(3)
    image = np.random.default_rng(1).normal(size=(1, 16, 16)).astype(np.float32)
    with_probs = InferenceSettings(amp=False, probabilities=True, postprocess=False)
    (risky,) = predict_batch(loaded, [image], with_probs)
    (plain,) = predict_batch(loaded, [image], InferenceSettings(amp=False, probabilities=True, risk=False))
    np.testing.assert_allclose(risky.probabilities, plain.probabilities, atol=1e-6)
    np.testing.assert_array_equal(risky.class_map, plain.class_map)
    p = plain.probabilities.astype(np.float64)
    np.testing.assert_allclose(risky.entropy, -(p * np.log(p)).sum(0) / math.log(3), atol=2e-3)  # float16


def test_risk_columns_present_and_finite_for_a_3d_model_and_a_volume_through_a_2d_model() -> None:
    rng = np.random.default_rng(2)
    volume = rng.uniform(0, 255, (1, 8, 16, 16)).astype(np.float32)
    settings = InferenceSettings(amp=False, tta=TTASpec(flip_axes=(0,)), reference=REFERENCE)
    for loaded in (_unet(3, dims=3), _unet(3)):
        results = segment_cases(loaded, [volume], [None], settings)
        assert results[0].class_map.shape == (8, 16, 16)
        _finite_risk(results[0].row_fields())


def test_without_risk_a_cases_row_has_no_risk_column_and_is_otherwise_the_same() -> None:
    """``review.enabled: false`` gives ``risk=False``: no risk, no risk columns, the same mask and scores."""
    loaded = _unet(3)
    rng = np.random.default_rng(4)
    image = rng.uniform(0, 255, (1, 20, 24)).astype(np.float32)
    label = rng.integers(0, 3, (20, 24)).astype(np.uint8)
    on = InferenceSettings(amp=False, tta=TTASpec(flip_axes=(1,)), reference=REFERENCE, measure=False)
    off = InferenceSettings(amp=False, tta=on.tta, reference=REFERENCE, measure=False, risk=False)
    (with_risk,) = segment_cases(loaded, [image.copy()], [label], on)  # copies: z-scoring writes in place
    (without,) = segment_cases(loaded, [image.copy()], [label], off)
    _finite_risk(with_risk.row_fields())
    row = without.row_fields()
    assert without.risk is None and not set(RISK_COLUMNS) & set(row)
    np.testing.assert_array_equal(without.class_map, with_risk.class_map)
    assert row == {k: v for k, v in with_risk.row_fields().items() if k not in RISK_COLUMNS}


def test_instance_risk_uses_each_instances_score_entropy() -> None:
    shape = (12, 16)
    a, b = np.zeros(shape, bool), np.zeros(shape, bool)
    a[1:5, 1:5] = True  # 16 px, score 0.5: entropy 1
    b[7:10, 8:12] = True  # 12 px, score 0.9
    pred = InstancePrediction(np.stack([a, b]), np.array([0.5, 0.9], np.float32), np.array([1, 2], np.int64))
    image = np.full((1, *shape), 300.0, np.float32)  # every pixel above the training range
    outside = intensity_outside(image, REFERENCE)
    result = case_result(pred, None, InferenceSettings(reference=REFERENCE), classes=3, outside=outside)
    row = result.row_fields()
    _finite_risk(row, members=False)
    h09 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / math.log(2)
    assert row["entropy_fg"] == pytest.approx((16 * 1.0 + 12 * h09) / 28)
    band = boundary_band(result.label_map) & (result.label_map > 0)
    edge_a, edge_b = int((band & a).sum()), int((band & b).sum())
    assert row["entropy_boundary"] == pytest.approx((edge_a + edge_b * h09) / (edge_a + edge_b))
    assert row["doubt"] == 0.0 and math.isnan(row["member_dice"])
    assert row["intensity_outside"] == 1.0 and row["flag_intensity"]
    assert "outside the training intensity range" in row["risk_reasons"]


def test_a_mask_rcnn_prediction_gets_its_risk_in_the_same_pass() -> None:
    torch.manual_seed(0)
    spec = MaskRCNNSpec(arch="maskrcnn", min_size=64, max_size=64, anchor_sizes=(8, 16, 32, 64, 128))
    spec = spec.model_copy(update={"score_threshold": 0.0, "detections_per_image": 3})
    loaded = LoadedModel(build_model(spec).eval(), spec, WINDOW, {})
    image = np.random.default_rng(2).normal(40, 10, (1, 40, 48)).astype(np.float32)
    (result,) = segment_cases(loaded, [image], [None], InferenceSettings(amp=False, reference=REFERENCE))
    assert result.label_map is not None and (result.label_map > 0).any()  # score_threshold 0: something painted
    _finite_risk(result.row_fields(), members=False)


def test_the_flags_and_the_rule_by_hand() -> None:
    classes = 3
    empty = np.zeros((10, 10), np.uint8)
    nan = float("nan")
    risk = semantic_risk(empty, np.zeros((10, 10), np.float16), nan, nan, REFERENCE, classes)
    # no foreground: area z-scores (0 - 0.10) / 0.05 = -2 and (0 - 0.02) / 0.01 = -2; one flag
    assert risk.flag_empty and not risk.flag_fragments and risk.area_z == pytest.approx({1: -2.0, 2: -2.0})
    assert risk.risk == pytest.approx(2 / 4 + 1.0)
    assert risk.reasons[0].startswith("empty prediction, but 95%")

    specks = np.zeros((20, 20), np.uint8)
    specks[::4, ::4] = 1  # 25 one-pixel pieces: more than max(5, 3)
    entropy = np.full((20, 20), 0.2, np.float16)
    risk = semantic_risk(specks, entropy, 0.5, nan, REFERENCE, classes, members="folds")
    assert risk.small_fragments == 25 and risk.flag_fragments and not risk.flag_empty
    z1, z2 = (25 / 400 - 0.10) / 0.05, (0 - 0.02) / 0.01
    band = boundary_band(specks)
    doubt = 0.0  # entropy 0.2 < 0.5: no doubtful pixel
    expected = 0.2 + 0.5 * 0.2 + doubt + (1 - 0.5) + min(abs(z2), 4) / 4 + 1.0
    assert band.any() and risk.area_z == pytest.approx({1: z1, 2: z2})
    assert risk.entropy_fg == pytest.approx(0.2, abs=1e-3) and risk.risk == pytest.approx(expected, abs=1e-3)
    assert any(r.startswith("folds disagree (pairwise Dice 0.50)") for r in risk.reasons)

    unknown = semantic_risk(specks, entropy, nan, nan, RiskReference(), classes)
    assert unknown.area_z == {} and math.isnan(unknown.intensity_outside) and not unknown.flag_empty


def test_doubt_counts_uncertain_background_off_the_boundary() -> None:
    mask = np.zeros((10, 10), np.uint8)
    mask[2:4, 2:4] = 1  # 4 px of foreground
    entropy = np.zeros((10, 10), np.float16)
    entropy[7:9, 6:9] = 0.8  # 6 doubtful background pixels far from the mask
    risk = semantic_risk(mask, entropy, float("nan"), float("nan"), RiskReference(), 2)
    assert risk.doubt == pytest.approx(6 / (6 + 4))


def test_the_reference_comes_from_the_fingerprint_and_old_fingerprints_still_load() -> None:
    acc = FingerprintAccumulator()
    for i, fg in enumerate([0, 10, 30]):  # class-1 shares 0, 0.1, 0.3 of 100 px
        label = np.zeros((10, 10), np.uint8)
        label.flat[:fg] = 1
        acc.add(record_stats(np.full((1, 10, 10), float(i), np.float32), label, f"c{i}"))
    fp = acc.result()
    assert fp.class_image_fractions[1] == pytest.approx((0.4 / 3, np.std([0, 0.1, 0.3])))
    assert Fingerprint.from_json(fp.to_json()) == fp
    reference = RiskReference.from_fingerprint(fp)
    assert reference.fractions == {1: fp.class_image_fractions[1]} and reference.fg_image_fraction == 2 / 3
    old = json.loads(fp.to_json())
    del old["class_image_fractions"]
    assert Fingerprint.from_json(json.dumps(old)).class_image_fractions == {}


@pytest.mark.slow
def test_a_confusing_case_ranks_above_clean_ones_with_a_briefly_trained_model() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    spec = UNetSpec(arch="unet", channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
    model = build_model(spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    data = squares(16, 1)
    for _ in range(30):
        batches = [training_batch(data[i : i + 8], WINDOW, 1, rng) for i in range(0, 16, 8)]
        train_steps(model, batches, build_loss("dice_ce"), optimizer, torch.device("cpu"))
    acc = FingerprintAccumulator()
    for i, (image, label) in enumerate(data):
        acc.add(record_stats(image, label, f"train-{i}"))
    loaded = LoadedModel(model.eval(), spec, WINDOW, {})
    settings = InferenceSettings(amp=False, reference=RiskReference.from_fingerprint(acc.result()))

    clean = squares(6, 2)
    confusing = []
    for image, label in squares(2, 3):  # contrast flipped, then buried in noise
        flipped = 255 - image + rng.normal(0, 60, image.shape).astype(np.float32)
        confusing.append((flipped, label))
    cases = clean + confusing
    results = segment_cases(loaded, [i for i, _ in cases], [lbl for _, lbl in cases], settings)
    risk = [r.risk.risk for r in results]
    dice = [r.scores.dice for r in results]
    assert min(dice[:6]) > 0.7 and max(dice[6:]) < 0.5  # the model is good on clean cases only
    assert min(risk[6:]) > max(risk[:6]), risk
