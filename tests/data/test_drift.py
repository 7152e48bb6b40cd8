"""Drift: PSI, KS and unseen shares against hand-computed values; fingerprints of generated archives
compared: a fresh sample of the training generator passes, intensity x1.5 or a new image size moves."""

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segops.config.steps import DriftSpec
from segops.data.drift import compare, embedding_row, ks, outside_share, psi, unseen_share
from segops.data.fingerprint import Fingerprint, FingerprintAccumulator, histogram_counts, record_stats
from segops.synth import make_inspection_archive


def test_psi_against_hand_computed_values() -> None:
    # shares (0.5, 0.5) -> (0.25, 0.75): (-0.25) ln(0.5) + 0.25 ln(1.5)
    assert psi([50, 50], [25, 75]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5), rel=1e-12)
    assert psi([10, 30, 60], [1, 3, 6]) == pytest.approx(0.0, abs=1e-15)  # the same shares, any total
    # an empty bin's share is floored at 1e-4: p = (0.5, 0.5), q = (1, 0) -> (1, 1e-4)
    expected = (1 - 0.5) * math.log(1 / 0.5) + (1e-4 - 0.5) * math.log(1e-4 / 0.5)
    assert psi([5, 5], [8, 0]) == pytest.approx(expected, rel=1e-12)
    assert math.isnan(psi([1, 2], [1, 2, 3]))  # other bins: no answer rather than a wrong one


def test_ks_and_unseen_share_against_hand_computed_values() -> None:
    # ECDFs of {1,2,3,4} and {3,4,5,6} differ most at x = 2 (0.5 vs 0) and x = 4 (1 vs 0.5)
    statistic, p = ks([1, 2, 3, 4], [3, 4, 5, 6])
    assert statistic == 0.5 and 0.5 < p <= 1.0  # four points each: far from significant
    assert ks([64] * 50, [64] * 50)[0] == 0.0
    assert ks([64] * 50, [96] * 50)[0] == 1.0
    assert math.isnan(ks([], [1.0])[0])
    assert unseen_share({"CT": 5}, {"CT": 3, "MR": 1}) == 0.25
    assert unseen_share({1: 9, 3: 1}, {3: 4}) == 0.0


def test_histogram_counts_have_under_and_overflow_bins() -> None:
    # edges (0, 0.5, 1): -1 under; 0 in [0, 0.5); 0.5 and 1 in the last, closed bin; 2 over
    assert histogram_counts(np.array([-1.0, 0.0, 0.5, 1.0, 2.0]), (0.0, 0.5, 1.0)) == (1, 1, 2, 1)


def _images(root: Path, scale: float = 1.0, pad: int = 0) -> list[tuple[str, np.ndarray]]:
    """The archive's images as records decode them: (C, H, W) float32, optionally scaled or enlarged."""
    out = []
    for f in sorted((root / "images").glob("*.png")):
        a = np.asarray(Image.open(f), np.float32)
        a = a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)
        a = np.pad(a, ((0, 0), (0, pad), (0, pad)), mode="reflect") if pad else a
        out.append((f.stem, np.clip(a * scale, 0, 255)))
    return out


def _fingerprint(images: list[tuple[str, np.ndarray]], edges=None) -> Fingerprint:
    acc = FingerprintAccumulator(histogram_edges=edges)
    for cid, image in images:
        photometric = "MONOCHROME2" if image.shape[0] == 1 else "RGB"
        acc.add(record_stats(image, None, cid), cid, "XC", (0.5, 0.5), "PNG", photometric)
    return acc.result()


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("drift")
    make_inspection_archive(root / "train", count=60, seed=0)
    make_inspection_archive(root / "fresh", count=60, seed=1)
    return root / "train", root / "fresh"


@pytest.fixture(scope="module")
def trained(archives) -> Fingerprint:
    return _fingerprint(_images(archives[0]))


def _new(trained: Fingerprint, images) -> Fingerprint:
    return _fingerprint(images, trained.intensity_histogram.edges)


def test_a_fresh_sample_of_the_training_generator_passes(archives, trained) -> None:
    report = compare(trained, _new(trained, _images(archives[1])), DriftSpec())
    assert report.verdict == "ok", report.text()
    assert report.row("intensity histogram").distance < 0.1  # the same generator: PSI near 0
    assert report.metrics()["drift_features_moved"] == 0.0


def test_intensity_times_1_5_moves_the_histogram_and_the_mean(archives, trained) -> None:
    report = compare(trained, _new(trained, _images(archives[1], scale=1.5)), DriftSpec())
    assert {r.feature for r in report.moved} == {"intensity histogram", "image mean intensity"}, report.text()
    assert report.metrics()["drift_psi_intensity"] > 1.0
    assert "intensity histogram" in report.text(only_moved=True)


def test_a_new_image_size_moves_height_and_width(archives, trained) -> None:
    report = compare(trained, _new(trained, _images(archives[1], pad=100)), DriftSpec())
    assert {r.feature for r in report.moved} == {"image height (px)", "image width (px)"}, report.text()
    assert report.row("image height (px)").distance == 1.0  # 96-128 px vs 196-228 px: disjoint


def test_a_scalar_inside_the_training_range_does_not_move_however_clustered(trained) -> None:
    """Slices of a series share their spacing: 40 slices at 0.8 mm against series at 0.7 and 0.9 mm
    is a significant KS statistic of 0.5, but every new value is one the model has seen."""
    train = replace(trained, image_samples={"spacing_y": [0.7] * 40 + [0.9] * 40})
    inside = compare(train, replace(trained, image_samples={"spacing_y": [0.8] * 40}), DriftSpec())
    row = inside.row("row spacing (mm)")
    assert row.distance == 0.5 and not row.moved and "0% outside" in row.note
    outside = compare(train, replace(trained, image_samples={"spacing_y": [0.8] * 30 + [1.2] * 10}), DriftSpec())
    row = outside.row("row spacing (mm)")
    assert row.moved and "25% outside" in row.note
    assert outside_share([0.7, 0.9], [0.6, 0.8, 1.0, float("nan")]) == 2 / 3


def test_a_census_value_training_never_had_moves(archives, trained) -> None:
    images = _images(archives[1])
    acc = FingerprintAccumulator(histogram_edges=trained.intensity_histogram.edges)
    for i, (cid, image) in enumerate(images):
        syntax = "JPEG" if i % 2 else "PNG"  # half the new images are JPEGs; training saw PNGs only
        acc.add(record_stats(image, None, cid), cid, "XC", (0.5, 0.5), syntax, "RGB" if image.shape[0] == 3 else "")
    report = compare(trained, acc.result(), DriftSpec())
    row = report.row("transfer syntax")
    assert row.moved and row.distance == 0.5 and row.train == "PNG 100%"


def test_older_fingerprints_are_read_and_their_missing_features_never_move(trained) -> None:
    body = json.loads(trained.to_json())
    for key in ("intensity_histogram", "image_samples", "transfer_syntaxes", "photometrics", "planes"):
        del body[key]
    old = Fingerprint.from_json(json.dumps(body))
    assert old.intensity_histogram is None and old.image_samples == {} and old.transfer_syntaxes == {}
    report = compare(old, trained, DriftSpec())
    assert not report.moved
    assert math.isnan(report.row("intensity histogram").distance)
    assert "older segops" in report.row("image height (px)").note
    assert json.loads(report.to_json())["rows"][0]["distance"] is None  # NaN is null in JSON


def test_the_fingerprint_round_trips_with_its_drift_fields(trained) -> None:
    again = Fingerprint.from_json(trained.to_json())
    assert again == trained
    hist = again.intensity_histogram
    assert len(hist.edges) == 51 and len(hist.counts) == 52 and sum(hist.counts) == again.intensity_all.samples
    assert len(again.image_samples["mean"]) == 60 and set(again.image_samples["spacing_y"]) == {0.5}


def test_the_embedding_row_is_the_median_over_the_training_p95() -> None:
    row = embedding_row(2.0, [1.0, 3.0, 5.0], threshold=1.0)
    assert row.distance == 1.5 and row.moved  # median 3 / p95 2
    assert not embedding_row(2.0, [1.0, 1.5, 5.0], threshold=1.0).moved
