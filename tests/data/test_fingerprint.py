"""Fingerprint: per-record stats and their aggregate checked against numpy on the same pixels;
the Ray pass over an archive and over its ingested dataset."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from segops.data.fingerprint import Fingerprint, FingerprintAccumulator, record_stats
from segops.data.instances import INSTANCE_STRIDE as S


def _records(seed: int = 0) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Three labelled records (one empty mask), shapes 20x30, 20x30, 24x16."""
    rng = np.random.default_rng(seed)
    out = []
    for i, (h, w) in enumerate([(20, 30), (20, 30), (24, 16)]):
        image = rng.normal(100, 20, (1, h, w)).astype(np.float32)
        label = np.zeros((h, w), np.uint8)
        if i < 2:
            label[2:8, 3:9] = 1  # 36 px
            label[12:14, 20 - 10 * i : 25 - 10 * i] = 2  # 10 px, a second blob
        out.append((f"case-{i}", image, label))
    return out


def _fold(records, k: int = 10_000, **kw) -> Fingerprint:
    acc = FingerprintAccumulator(**kw)
    for cid, image, label in records:
        acc.add(record_stats(image, label, cid, k=k), group_id="g" + str(int(cid[-1]) // 2), modality="OT")
    return acc.result()


def test_exact_figures_when_k_exceeds_the_foreground() -> None:
    records = _records()
    fp = _fold(records)
    fg = np.concatenate([im[0][lb > 0] for _, im, lb in records]).astype(np.float64)
    every = np.concatenate([im[0].ravel() for _, im, _ in records]).astype(np.float64)
    for stats, pixels in ((fp.intensity_fg, fg), (fp.intensity_all, every)):
        lo, hi = np.percentile(pixels, [0.5, 99.5])
        assert stats.samples == len(pixels)
        got = [stats.mean, stats.std, stats.p00_5, stats.p99_5]
        np.testing.assert_allclose(got, [pixels.mean(), pixels.std(), lo, hi], rtol=1e-12)
    total = 20 * 30 * 2 + 24 * 16
    assert fp.label_census == {0: (3, total - 92), 1: (2, 72), 2: (2, 20)}
    assert fp.class_fractions == {0: (total - 92) / total, 1: 72 / total, 2: 20 / total}
    assert fp.foreground_image_fraction == 2 / 3
    assert fp.shapes == [[20, 30, 2], [24, 16, 1]] and fp.median_shape == (20, 30)
    assert (fp.n_images, fp.n_labelled, fp.n_groups, fp.channels, fp.modalities) == (3, 3, 2, {1: 3}, {"OT": 3})
    assert (fp.objects.count_median, fp.objects.count_max, fp.objects.size_median) == (
        2.0,
        2,
        23.0,
    )  # sizes 36, 10, 36, 10


def test_sampled_foreground_is_seeded_and_close() -> None:
    """K = 2,000 of 10,000 foreground pixels ~ N(100, 20): the sample mean's standard error is
    20 / sqrt(2000) * sqrt(1 - 0.2) ≈ 0.40, so 2.0 is five standard errors."""
    rng = np.random.default_rng(1)
    image = rng.normal(100, 20, (1, 100, 100)).astype(np.float32)
    label = np.ones((100, 100), np.uint8)
    a, b = record_stats(image, label, "x", k=2000), record_stats(image, label, "x", k=2000)
    np.testing.assert_array_equal(a["fg_samples"], b["fg_samples"])
    assert len(a["fg_samples"]) == 2000
    assert not np.array_equal(a["fg_samples"], record_stats(image, label, "y", k=2000)["fg_samples"])
    assert abs(float(a["fg_samples"].mean()) - float(image.mean())) < 2.0


def test_pooled_samples_are_capped() -> None:
    fp = _fold(_records(), max_pooled=100)
    assert fp.intensity_all.samples == 100 and fp.intensity_fg.samples == 92  # 92 foreground pixels < cap


def test_instance_labels_count_objects_and_census_classes() -> None:
    label = np.zeros((10, 10), np.int32)
    label[0:2, 0:2], label[5:8, 5:8], label[9, 0:5] = S + 1, S + 2, 2 * S + 1  # class 1: 4 + 9 px, class 2: 5 px
    row = record_stats(np.zeros((1, 10, 10), np.float32), label, "c", task="instance")
    assert (row["class_values"], row["class_pixels"]) == ([0, 1, 2], [82, 13, 5])
    assert (row["object_count"], sorted(row["object_sizes"])) == (3, [4, 5, 9])


def test_unlabelled_records_count_as_images_only() -> None:
    row = record_stats(np.ones((3, 4, 5), np.float32), None, "u")
    acc = FingerprintAccumulator()
    acc.add(row, "g", "XC")
    fp = acc.result()
    assert (fp.n_images, fp.n_labelled, fp.channels, fp.intensity_fg, fp.objects) == (1, 0, {3: 1}, None, None)


def test_groups_count_patients_where_the_split_keeps_their_series_together() -> None:
    """Eight series of four patients: the plan sizes its split on the 4 units the train step splits."""
    row = record_stats(np.ones((1, 4, 5), np.float32), None, "u")
    acc, one_each = FingerprintAccumulator(), FingerprintAccumulator()
    for k in range(8):
        acc.add(row, f"series-{k}", "CT", patient_id=f"P{k % 4}")
        one_each.add(row, f"series-{k}", "CT", patient_id=f"P{k}")
    assert acc.result().n_groups == 4 and one_each.result().n_groups == 8


def test_json_round_trip() -> None:
    import json

    fp = _fold(_records())
    assert Fingerprint.from_json(fp.to_json()) == fp
    # a model registered by a newer segops keeps fields this one does not know: read, not refused
    newer = json.loads(fp.to_json()) | {"a_later_census": {"x": 1}}
    assert Fingerprint.from_json(json.dumps(newer)) == fp
    older = {k: v for k, v in json.loads(fp.to_json()).items() if k not in ("roles", "planes", "spacing_known")}
    assert Fingerprint.from_json(json.dumps(older)) == replace(fp, roles={}, planes={}, spacing_known=-1)


# --------------------------------------------------------------------------- Ray


def _archive(root: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Four gray PNGs with binary masks in a parallel tree; the arrays as written."""
    rng = np.random.default_rng(7)
    out = []
    for i, (h, w) in enumerate([(32, 48), (32, 48), (40, 40), (32, 48)]):
        image = rng.integers(0, 256, (h, w), dtype=np.uint8)
        mask = np.zeros((h, w), np.uint8)
        mask[4 : 10 + i, 5:20] = 255
        for folder, array in (("images", image), ("masks", mask)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / folder / f"{i}.png")
        out.append((image, mask // 255))
    return out


@pytest.mark.ray
@pytest.mark.usefixtures("ray_session")
def test_ray_pass_matches_numpy_and_the_ingested_dataset(tmp_path: Path) -> None:
    from concurrent.futures import Future

    from segops.cluster import datasets
    from segops.cluster.datasets import read_source, write_dataset
    from segops.cluster.fingerprint import (
        FINGERPRINT_FILE,
        fingerprint_dataset,
        fingerprint_source,
        write_model_fingerprint,
    )
    from segops.config.schema import ImageSource, MaskPngLabels
    from segops.steps.train import fingerprint_taken

    arrays = _archive(tmp_path / "data")
    source = ImageSource(
        kind="images",
        path=tmp_path / "data" / "images",
        labels=MaskPngLabels(kind="mask-png", path=tmp_path / "data" / "masks"),
    )
    fp = fingerprint_source(source)
    fg = np.concatenate([im[lb > 0] for im, lb in arrays]).astype(np.float64)
    assert fp.intensity_fg.samples == len(fg)
    np.testing.assert_allclose(
        [fp.intensity_fg.mean, fp.intensity_fg.p00_5, fp.intensity_fg.p99_5],
        [fg.mean(), *np.percentile(fg, [0.5, 99.5])],
        rtol=1e-12,
    )
    fg_px = sum(int(lb.sum()) for _, lb in arrays)
    total = sum(lb.size for _, lb in arrays)
    assert fp.label_census == {0: (4, total - fg_px), 1: (4, fg_px)}
    assert fp.shapes == [[32, 48, 3], [40, 40, 1]] and fp.median_shape == (32, 48)
    assert (fp.n_images, fp.n_labelled, fp.n_groups) == (4, 4, 4)
    assert fp.planes == {"": 4} and fp.spacing_known == 0  # photos: no patient plane, no pixel spacing
    assert fp.roles == {"": 4}  # no localizer or secondary capture among them

    write_dataset(read_source(source), tmp_path / "dataset")
    assert fingerprint_dataset(tmp_path / "dataset") == fp  # small: read by the driver
    older = pq.read_table(tmp_path / "dataset").drop_columns(["image_role"])  # ingested before records kept it
    pq.write_table(older, tmp_path / "older.parquet")
    assert fingerprint_dataset(tmp_path / "older.parquet") == replace(fp, roles={})  # not known: no default from it
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets, "DRIVER_READ_BYTES", 0)  # large: Ray Data's read tasks, streaming
        assert fingerprint_dataset(tmp_path / "dataset") == fp
    lost = Future()
    lost.set_exception(RuntimeError("the pass lost its node"))  # what a node loss mid-training leaves
    assert fingerprint_taken(lost, tmp_path / "dataset", "semantic", 0) == fp  # taken again
    written = write_model_fingerprint(tmp_path / "dataset", tmp_path / "model")
    assert Path(written) == tmp_path / "model" / FINGERPRINT_FILE
    assert Fingerprint.from_json(Path(written).read_text()) == fp
    # a model's reference is what it trained on: an unlabelled image in the ingest is not in it
    Image.fromarray(np.full((90, 90), 7, np.uint8)).save(tmp_path / "data" / "images" / "unlabelled.png")
    write_dataset(read_source(source), tmp_path / "with-unlabelled")
    assert fingerprint_source(source).n_images == 5
    assert fingerprint_dataset(tmp_path / "with-unlabelled") == fp == fingerprint_source(source, labelled_only=True)
