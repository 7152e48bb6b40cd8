"""Run-length encoded masks in a CSV (Kaggle's layout): decoding, classes, matching images,
images the CSV does not list, instances, and errors that name the row's image."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segops.config.schema import ImageSource, RleCsvLabels
from segops.data.decode import decode_file
from segops.data.instances import INSTANCE_STRIDE as S
from segops.data.labels import build_resolver, declared_label_rows
from segops.data.rle_csv import decode_rle, encode_rle, likely_order
from segops.errors import LabelError


def test_decode_follows_kaggles_column_major_numbering():
    # 3x4 image; pixels numbered down each column: run "2 3" covers (1,0), (2,0), (0,1)
    mask = decode_rle("2 3 12 1", (3, 4))
    expected = np.zeros((3, 4), bool)
    expected[1, 0] = expected[2, 0] = expected[0, 1] = expected[2, 3] = True
    np.testing.assert_array_equal(mask, expected)
    row_major = decode_rle("2 3", (3, 4), "row-major")
    assert row_major[0, 1:4].all() and row_major.sum() == 3
    for order in ("column-major", "row-major"):
        assert encode_rle(mask, order) and np.array_equal(decode_rle(encode_rle(mask, order), (3, 4), order), mask)
    assert not decode_rle("", (3, 4)).any() and not decode_rle("-1", (3, 4)).any()


@pytest.mark.parametrize(
    ("text", "message"),
    [("1 5 x 2", "not 'start length' integers"), ("1 2 3", "odd count"), ("10 5", "runs past the 4x3 image")],
)
def test_bad_encodings_are_label_errors(text: str, message: str):
    with pytest.raises(LabelError, match=message):
        decode_rle(text, (3, 4))


def test_the_pixel_order_is_told_by_which_reading_draws_blobs():
    blob = np.zeros((40, 50), bool)
    blob[10:25, 5:30] = True
    assert likely_order([(encode_rle(blob, "column-major"), (40, 50))]) == "column-major"
    assert likely_order([(encode_rle(blob, "row-major"), (40, 50))]) == "row-major"


def _steel(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """Severstal's layout: train_images/*.jpg, train.csv with ImageId,ClassId,EncodedPixels listing
    only defects (one row per image and class)."""
    images = tmp_path / "train_images"
    images.mkdir()
    truth = {}
    rows = []
    for i in range(4):
        Image.fromarray(np.full((32, 64), 100 + i, np.uint8)).save(images / f"{i:04x}.jpg")
        label = np.zeros((32, 64), np.uint8)
        if i < 3:
            label[4:10, 8 + i : 20 + i] = 1
            rows.append((f"{i:04x}.jpg", 1, encode_rle(label == 1)))
        if i == 1:
            label[20:28, 40:50] = 3
            rows.append((f"{i:04x}.jpg", 3, encode_rle(label == 3)))
        truth[f"{i:04x}.jpg"] = label
    with open(tmp_path / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([("ImageId", "ClassId", "EncodedPixels"), *rows])
    return images, truth


def test_classes_matching_and_images_the_csv_does_not_list(tmp_path: Path):
    images, truth = _steel(tmp_path)
    spec = RleCsvLabels(kind="rle-csv", path=tmp_path / "train.csv", class_column="ClassId")
    source = ImageSource(kind="images", path=images, labels=spec)
    resolver = build_resolver(spec)
    rows = {name: decode_file(str(images / name), name, source, resolver)[0] for name in truth}
    for name in ("0000.jpg", "0001.jpg", "0002.jpg"):
        assert rows[name]["has_label"] and rows[name]["label_uri"] == f"{tmp_path / 'train.csv'}#image={name}"
        np.testing.assert_array_equal(np.asarray(rows[name]["label"]).reshape(32, 64), truth[name])
    assert rows["0001.jpg"]["label_values"] == [0, 1, 3]
    assert not rows["0003.jpg"]["has_label"]  # not listed: unlabelled unless empty_when_missing says otherwise
    with_empty = source.model_copy(update={"labels": spec.model_copy(update={"empty_when_missing": ("**",)})})
    (row,) = decode_file(str(images / "0003.jpg"), "0003.jpg", with_empty)
    assert row["has_label"] and row["label_values"] == [0] and row["label_uri"] == "empty:0003.jpg"
    assert {tuple(r["label_values"]) for r in declared_label_rows(resolver)} == {(1,), (1, 3)}


def test_ids_without_extension_names_instances_and_a_row_that_does_not_fit(tmp_path: Path):
    images = tmp_path / "train"
    images.mkdir()
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(images / "cell-a.png")
    a, b = np.zeros((20, 30), bool), np.zeros((20, 30), bool)
    a[2:6, 2:6], b[10:15, 10:20] = True, True
    lines = ["id,annotation,cell_type", f"cell-a,{encode_rle(a)},astro", f"cell-a,{encode_rle(b)},shsy5y"]
    lines.append("cell-b,1 700,astro")  # larger than its 20x30 image
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(images / "cell-b.png")
    spec = RleCsvLabels(
        kind="rle-csv",
        path=tmp_path / "train.csv",
        image_column="id",
        rle_column="annotation",
        class_column="cell_type",
        instances=True,
    )
    source = ImageSource(kind="images", path=images, labels=spec)
    (row,) = decode_file(str(images / "cell-a.png"), "cell-a.png", source)
    label = np.asarray(row["label"]).reshape(20, 30)
    assert set(np.unique(label)) == {0, S + 1, 2 * S + 2}  # astro = class 1, shsy5y = class 2; one object per row
    assert (label[2:6, 2:6] == S + 1).all() and (label[10:15, 10:20] == 2 * S + 2).all()
    (bad,) = decode_file(str(images / "cell-b.png"), "cell-b.png", source)
    assert (bad["status"], bad["has_label"], bad["stage"]) == ("ok", False, "label")
    assert "train.csv#image=cell-b" in bad["error"] and "runs past the 30x20 image" in bad["error"]
    with pytest.raises(LabelError, match=r"has no column 'ImageId'; its columns are \['id', 'annotation'"):
        build_resolver(RleCsvLabels(kind="rle-csv", path=tmp_path / "train.csv"))
    partial = spec.model_copy(update={"classes": {"astro": 1}})  # shsy5y rows would silently vanish
    with pytest.raises(LabelError, match=r"class value\(s\) \['shsy5y'\] that labels.classes .* does not map"):
        build_resolver(partial)


def test_plan_finds_severstals_csv_its_columns_order_and_unlisted_defect_free_images(tmp_path: Path):
    from segops.data.pairing import detect

    images, truth = _steel(tmp_path)
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(tmp_path / "sample.png")  # a stray figure at the root
    d = detect(tmp_path)
    assert (d.pairing, d.task, d.classes, d.n_images, d.n_paired) == ("rle-csv", "semantic", 4, 4, 4)
    assert d.source["path"] == str(images)
    assert d.source["labels"] == {
        "kind": "rle-csv",
        "path": str(tmp_path / "train.csv"),
        "image_column": "ImageId",
        "rle_column": "EncodedPixels",
        "class_column": "ClassId",
        "order": "column-major",
        "empty_when_missing": ["**"],
    }
    assert "lists only images with foreground, so the 1 it does not list are empty masks" in d.notes["labels"]
    spec = RleCsvLabels(**d.source["labels"])  # the planned block is a valid spec
    assert spec.class_column == "ClassId"


def test_plan_reads_one_object_per_row_as_instances_and_a_row_major_csv(tmp_path: Path):
    from segops.data.pairing import detect

    (tmp_path / "imgs").mkdir()
    rows = ["ImageId,EncodedPixels"]
    for i in range(3):
        Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "imgs" / f"ship{i}.jpg")
        for k in range(2):  # two ships per image: one row each
            ship = np.zeros((40, 50), bool)
            ship[5 + 15 * k : 12 + 15 * k, 4 + 10 * i : 30 + 10 * i] = True
            rows.append(f"ship{i}.jpg,{encode_rle(ship, 'row-major')}")
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "imgs" / "sea.jpg")
    rows.append("sea.jpg,")  # listed with no ship: an empty mask, and unlisted images stay unlabelled
    (tmp_path / "train_ship_segmentations.csv").write_text("\n".join(rows) + "\n")
    d = detect(tmp_path)
    labels = d.source["labels"]
    assert (d.task, labels["order"], labels["instances"], d.n_paired) == ("instance", "row-major", True, 4)
    assert "empty_when_missing" not in labels and "class_column" not in labels


def test_plan_finds_a_csv_whose_rows_are_mostly_empty_encodings(tmp_path: Path):
    """Airbus lists every image, most with no ship (an empty encoding): the encodings column is
    judged on its non-empty values. Before, the empty ones counted against it and nothing was found."""
    from segops.data.pairing import detect

    (tmp_path / "train_v2").mkdir()
    ship = np.zeros((30, 40), bool)
    ship[5:12, 8:30] = True
    rows = ["ImageId,EncodedPixels"]
    for i in range(10):
        Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "train_v2" / f"{i:03d}.jpg")
        rows.append(f"{i:03d}.jpg,{encode_rle(ship) if i < 2 else ''}")
    (tmp_path / "train_ship_segmentations_v2.csv").write_text("\n".join(rows) + "\n")
    d = detect(tmp_path)
    assert (d.pairing, d.n_paired, d.source["labels"]["rle_column"]) == ("rle-csv", 10, "EncodedPixels")
