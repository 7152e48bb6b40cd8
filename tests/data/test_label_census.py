"""Label census, the label-value check against a model's classes, and ``labels.threshold``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw
from pydantic import ValidationError

from segops.config.schema import ImageSource, MaskPngLabels
from segops.data.decode import decode_file
from segops.data.instances import INSTANCE_STRIDE as S
from segops.data.label_census import check_label_values, label_census, label_counts, unusual_labels_warning
from segops.data.mask_files import read_mask_png
from segops.errors import LabelValueError


def antialiased_mask(size: int, centre: tuple[int, int], radius: int) -> np.ndarray:
    """(size, size) uint8 disc drawn at 8x and box-downsampled: 0 outside, 255 inside, 1..254 on the edge."""
    big = Image.new("L", (8 * size, 8 * size), 0)
    cx, cy, r = 8 * centre[0], 8 * centre[1], 8 * radius
    ImageDraw.Draw(big).ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    return np.asarray(big.resize((size, size), Image.Resampling.BOX))


def _rows(labels: dict[str, np.ndarray]) -> pd.DataFrame:
    counts = [label_counts(label) for label in labels.values()]
    return pd.DataFrame(
        {"label_uri": list(labels), "label_values": [c[0] for c in counts], "label_pixels": [c[1] for c in counts]}
    )


def test_semantic_census_counts_files_and_pixels_per_value() -> None:
    rows = _rows(
        {
            "a.png": np.array([[0, 0], [1, 1]], np.uint8),
            "b.png": np.array([[0, 2], [2, 2]], np.uint8),
            "c.png": np.zeros((2, 2), np.uint8),
        }
    )
    census = label_census(rows)
    assert census.to_dict("list") == {"value": [0, 1, 2], "records": [3, 1, 1], "files": [3, 1, 1], "pixels": [7, 2, 3]}


def test_instance_census_counts_instances_per_class() -> None:
    rows = _rows(
        {
            "a.png": np.array([[0, S + 1], [S + 2, 2 * S + 1]], np.int32),
            "b.png": np.array([[S + 1, S + 1], [0, 0]], np.int32),
        }
    )
    census = label_census(rows, instance=True)
    expected = {
        "class": [0, 1, 2],
        "instances": [0, 3, 1],
        "records": [2, 2, 1],
        "files": [2, 2, 1],
        "pixels": [3, 4, 1],
    }
    assert census.to_dict("list") == expected


def test_census_of_no_labels_is_an_empty_table() -> None:
    census = label_census(pd.DataFrame({"label_uri": [], "label_values": [], "label_pixels": []}))
    assert list(census.columns) == ["value", "records", "files", "pixels"] and census.empty


def test_antialiased_values_fail_with_the_threshold_fix() -> None:
    masks = {f"/labels/m{i:02d}.png": antialiased_mask(48, (20 + i, 24), 10) for i in range(12)}
    rows = _rows(masks)
    with pytest.raises(
        LabelValueError, match=r"model.classes: 2.*12 of 12 label file\(s\).*labels.threshold: 128"
    ) as err:
        check_label_values(rows, classes=2)
    message = str(err.value)
    bad = sorted({int(v) for m in masks.values() for v in np.unique(m) if v >= 2})
    assert len(bad) > 20  # edge values of 8x supersampling: the message lists 20 and the count
    assert f"value(s) [{', '.join(map(str, bad[:20]))}, …] ({len(bad)} in all)" in message
    assert sum(p in message for p in masks) == 10  # at most 10 examples
    assert "labels.values" not in message


def test_grey_level_classes_fail_with_a_values_mapping() -> None:
    rows = _rows(
        {
            "/l/a.png": np.array([[0, 100], [200, 200]], np.uint8),
            "/l/b.png": np.array([[0, 0], [0, 100]], np.uint8),
            "/l/c.png": np.zeros((2, 2), np.uint8),
        }
    )
    expected = r"value\(s\) \[100, 200\].*2 of 3 label file\(s\) carry them, e.g. /l/a.png, /l/b.png\."
    with pytest.raises(LabelValueError, match=expected) as err:
        check_label_values(rows, classes=2)
    assert "labels.values: {0: 0, 100: 1, 200: 2} on the mask-png labels and set model.classes: 3" in str(err.value)
    assert "threshold" not in str(err.value)


def test_class_indices_beyond_the_model_suggest_more_classes() -> None:
    rows = _rows({"/l/a.png": np.array([[0, 1], [2, 3]], np.uint8)})
    with pytest.raises(LabelValueError, match=r"value\(s\) \[2, 3\].*class indices 0..3: set model.classes: 4"):
        check_label_values(rows, classes=2)
    check_label_values(rows, classes=4)  # fits: no error


def test_instance_labels_are_checked_by_their_class_part() -> None:
    rows = _rows({"/l/a.png": np.array([[0, S + 1], [2 * S + 65535, 3 * S + 1]], np.int32)})
    with pytest.raises(
        LabelValueError, match=r"class\(es\) \(value // 65536 of instance labels\) \[3\].*model.classes: 4"
    ):
        check_label_values(rows, classes=3, instance=True)
    check_label_values(rows, classes=4, instance=True)


def test_instance_values_without_a_class_name_the_older_layout_and_the_fix() -> None:
    """1001 was class 1, instance 1 when instance maps were class * 1000 + k: now it has no class."""
    rows = _rows({"/l/old.png": np.array([[0, 1001], [1002, 2001]], np.int32), "/l/new.png": np.array([[S + 1]])})
    with pytest.raises(LabelValueError, match=r"\[1001, 1002, 2001\] carry no class.*1 label file.*/l/old.png.*ingest"):
        check_label_values(rows, classes=3, instance=True)
    check_label_values(rows.iloc[1:], classes=3, instance=True)  # the new layout alone passes


def test_ingest_warning_only_for_masks_that_are_not_class_indices() -> None:
    assert unusual_labels_warning(_rows({"a": np.array([[0, 1]], np.uint8), "b": np.array([[0, 3]], np.uint8)})) is None
    warning = unusual_labels_warning(_rows({f"/l/m{i}.png": antialiased_mask(48, (24, 24), 8 + i) for i in range(3)}))
    assert warning is not None and warning.startswith("3 of 3 label(s) hold values that are neither")
    assert "/l/m0.png holds [0, " in warning and "labels.threshold: 128" in warning


def test_threshold_binarises_an_antialiased_mask(tmp_path: Path) -> None:
    stored = np.array([[0, 1, 127, 128], [129, 200, 254, 255]], np.uint8)
    Image.fromarray(stored).save(tmp_path / "m.png")
    expected = np.array([[0, 0, 0, 1], [1, 1, 1, 1]], np.uint8)
    np.testing.assert_array_equal(read_mask_png(tmp_path / "m.png", (2, 4), threshold=128), expected)
    np.testing.assert_array_equal(read_mask_png(tmp_path / "m.png", (2, 4)), stored)  # without: as stored


def test_decoded_record_carries_the_census_of_its_thresholded_label(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.full((48, 48), 90, np.uint8)).save(tmp_path / "images" / "x.png")
    mask = antialiased_mask(48, (24, 24), 10)
    Image.fromarray(mask).save(tmp_path / "labels" / "x.png")
    labels = MaskPngLabels(kind="mask-png", path=tmp_path / "labels", threshold=128)
    source = ImageSource(kind="images", path=tmp_path / "images", labels=labels)
    (row,) = decode_file(str(tmp_path / "images" / "x.png"), "x.png", source)
    fg = int((mask >= 128).sum())
    assert row["label_values"] == [0, 1] and row["label_pixels"] == [48 * 48 - fg, fg]


def test_threshold_and_values_together_are_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"values and threshold are given together.*keep one"):
        MaskPngLabels(kind="mask-png", path=tmp_path, threshold=128, values={0: 0, 255: 1})
