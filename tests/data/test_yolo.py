"""YOLO segmentation labels (Ultralytics and Roboflow layouts): read, planned, decoded. Files made
here, no Ray."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segops.config.schema import ImageSource
from segops.data.decode import decode_file
from segops.data.instances import INSTANCE_STRIDE
from segops.data.labels import build_resolver, declared_label_rows
from segops.data.pairing import detect
from segops.data.yolo import read_yolo, yolo_label
from segops.errors import LabelError, PlanError

S = INSTANCE_STRIDE

H, W = 40, 50
#: A square (rows 10-19, columns 10-29) and a triangle, in YOLO's fractions of width and height.
SQUARE = "0 0.2 0.25 0.6 0.25 0.6 0.5 0.2 0.5"
TRIANGLE = "1 0.7 0.6 0.9 0.6 0.8 0.9"
SMALL_TRIANGLE = "1 0.7 0.05 0.9 0.05 0.8 0.2"


def _photo(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path)


def _label(path: Path, *lines: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def test_polygons_are_drawn_in_fractions_of_the_image_one_instance_per_line(tmp_path: Path) -> None:
    _label(tmp_path / "a.txt", SQUARE, TRIANGLE, "0 0.0 0.0 0.1 0.0 0.1 0.1 0.0 0.1")
    classes = yolo_label(tmp_path / "a.txt", (H, W), instances=False)
    assert classes.dtype == np.uint8 and sorted(np.unique(classes).tolist()) == [0, 1, 2]  # YOLO 0, 1 → 1, 2
    square = classes[10:21, 10:31]  # PIL's polygon fills its outline: rows 10..20, columns 10..30
    assert (square == 1).all() and int((classes == 1).sum()) == square.size + 6 * 5
    assert classes[30, 40] == 2 and classes[5, 40] == 0
    instances = yolo_label(tmp_path / "a.txt", (H, W), instances=True)
    assert sorted(np.unique(instances).tolist()) == [0, S + 1, S + 3, 2 * S + 2]
    _label(tmp_path / "empty.txt")
    assert not yolo_label(tmp_path / "empty.txt", (H, W), instances=True).any()  # a background image


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("0 0.5 0.5 0.2 0.2", "is a box"),
        ("0 0.1 0.1 0.2 0.2", "is a box"),
        ("1 0.1 0.1 0.2", "3 or more x y pairs"),
        ("crack 0.1 0.1 0.2 0.2 0.3 0.3", "is not a class and coordinates"),
    ],
)
def test_a_file_that_is_no_outline_is_a_label_error_saying_why(tmp_path: Path, line: str, why: str) -> None:
    _label(tmp_path / "x.txt", SQUARE, line)
    with pytest.raises(LabelError, match=why):
        read_yolo(tmp_path / "x.txt")


def _ultralytics(root: Path, background: int = 2) -> None:
    for split, n in (("train", 6), ("val", 3)):
        for i in range(n):
            _photo(root / "images" / split / f"{split}{i}.jpg", i)
            if split == "val" or i < n - background:
                more = [TRIANGLE, SMALL_TRIANGLE] if i % 2 else []
                _label(root / "labels" / split / f"{split}{i}.txt", SQUARE, *more)
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames:\n  0: crack\n  1: pothole\n")


def test_ultralytics_layout_is_planned_with_its_names_and_background_images(tmp_path: Path) -> None:
    _ultralytics(tmp_path)
    d = detect(tmp_path)
    assert (d.pairing, d.task, d.classes, d.n_images, d.n_paired) == ("yolo", "instance", 3, 9, 9)
    assert d.class_names == {1: "crack", 2: "pothole"}
    assert d.source == {
        "kind": "images",
        "path": str(tmp_path / "images"),
        "labels": {
            "kind": "yolo",
            "path": str(tmp_path / "labels"),
            "pattern": "{rel_stem}.txt",
            "instances": True,
            "empty_when_missing": ["**"],
        },
    }
    assert "2 image(s) have no label file: background images" in d.notes["labels.empty_when_missing"]

    source = ImageSource.model_validate(d.source)
    resolver = build_resolver(source.labels)
    (row,) = decode_file(str(tmp_path / "images/train/train1.jpg"), "train/train1.jpg", source, resolver)
    label = np.asarray(row["label"]).reshape(H, W)
    assert sorted(np.unique(label).tolist()) == [0, S + 1, 2 * S + 2, 2 * S + 3]  # a square and two triangles
    assert row["label_uri"] == str(tmp_path / "labels/train/train1.txt")
    (background,) = decode_file(str(tmp_path / "images/train/train5.jpg"), "train/train5.jpg", source, resolver)
    assert background["has_label"] and background["label_uri"] == "empty:train/train5.jpg"
    assert not np.asarray(background["label"]).any()
    declared = {Path(r["label_uri"]).name: r["label_values"] for r in declared_label_rows(resolver)}
    assert declared["train1.txt"] == [S + 1, 2 * S + 1] and declared["train0.txt"] == [S + 1] and len(declared) == 7


def test_roboflow_split_folders_are_read_from_their_parent(tmp_path: Path) -> None:
    for split in ("train", "valid", "test"):
        for i in range(3):
            _photo(tmp_path / split / "images" / f"{i}_jpg.rf.{split}.jpg", i)
            _label(tmp_path / split / "labels" / f"{i}_jpg.rf.{split}.txt", SQUARE)
    (tmp_path / "data.yaml").write_text("train: ../train/images\nnc: 1\nnames: ['scratch']\n")
    d = detect(tmp_path)
    assert (d.task, d.classes, d.n_paired, d.class_names) == ("semantic", 2, 9, {1: "scratch"})
    assert d.source["include"] == ["*/images/**"] and d.source["path"] == str(tmp_path)
    assert d.source["labels"] == {"kind": "yolo", "path": str(tmp_path), "pattern": "{parent_dir}/labels/{stem}.txt"}
    source = ImageSource.model_validate(d.source)
    (row,) = decode_file(str(tmp_path / "valid/images/2_jpg.rf.valid.jpg"), "valid/images/2_jpg.rf.valid.jpg", source)
    assert row["label_uri"] == str(tmp_path / "valid/labels/2_jpg.rf.valid.txt")
    assert int((np.asarray(row["label"]) == 1).sum()) == 11 * 21


def test_a_detection_dataset_is_a_plan_error_that_says_boxes_are_no_outlines(tmp_path: Path) -> None:
    for i in range(4):
        _photo(tmp_path / "images" / f"{i}.jpg", i)
        _label(tmp_path / "labels" / f"{i}.txt", "0 0.5 0.5 0.2 0.2")
    with pytest.raises(PlanError, match="hold boxes .* not outlines: a detection dataset"):
        detect(tmp_path)


def test_photos_without_a_file_but_with_boxes_elsewhere_stay_unlabelled(tmp_path: Path) -> None:
    _ultralytics(tmp_path, background=3)
    for i in range(3, 6):  # the same photos have Pascal VOC boxes: annotated for detection only
        (tmp_path / "Annotations").mkdir(exist_ok=True)
        (tmp_path / "Annotations" / f"train{i}.xml").write_text("<annotation><object><name>crack</name></object>")
    d = detect(tmp_path)
    assert "empty_when_missing" not in d.source["labels"] and d.n_paired == 6
    assert "3 image(s) have no file: unlabelled" in d.notes["labels"]
