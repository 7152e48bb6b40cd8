"""LabelMe JSON labels (one file per image, as the LabelMe tool saves them): reading each shape
type, classes and instances, errors, and ``segops plan`` finding them (files made here, no Ray)."""

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segops.config.schema import ImageSource
from segops.data.decode import decode_file, list_source_files
from segops.data.detection import PlanOverrides
from segops.data.instances import INSTANCE_STRIDE, split_instances
from segops.data.labelme import labelme_label
from segops.data.labels import build_resolver
from segops.data.pairing import detect
from segops.errors import LabelError

H, W = 40, 60


def _png_b64(mask: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _labelme(path: Path, shapes: list[dict], size: tuple[int, int] = (H, W)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"version": "5.4.1", "shapes": shapes, "imagePath": path.with_suffix(".jpg").name, "imageData": None}
    doc |= {"imageHeight": size[0], "imageWidth": size[1]}
    path.write_text(json.dumps(doc))


def _shape(label: str, kind: str, points: list, group: int | None = None, **extra) -> dict:
    return {"label": label, "shape_type": kind, "points": points, "group_id": group, "flags": {}} | extra


def test_every_area_shape_type_is_drawn_and_lines_and_points_are_left_out(tmp_path: Path) -> None:
    region = np.zeros((5, 6), bool)
    region[1:4, 2:5] = True
    shapes = [
        _shape("scratch", "polygon", [[2, 2], [12, 2], [12, 8], [2, 8]]),
        _shape("dent", "rectangle", [[30, 20], [20, 10]]),  # corners in any order
        _shape("dent", "circle", [[45, 30], [48, 30]]),  # centre, a point on the circle: radius 3
        _shape("scratch", "mask", [[50, 5], [55, 9]], mask=_png_b64(region)),
        _shape("scratch", "line", [[0, 39], [59, 39]]),
        _shape("dent", "point", [[1, 1]]),
    ]
    _labelme(tmp_path / "a.json", shapes)
    label = labelme_label(tmp_path / "a.json", (H, W), {"dent": 1, "scratch": 2}, instances=False)
    expected = np.zeros((H, W), np.uint8)
    expected[2:9, 2:13] = 2
    expected[10:21, 20:31] = 1
    expected[6:9, 52:55] = 2
    circle = label[26:35, 41:50].copy()
    label[26:35, 41:50] = 0
    assert np.array_equal(label, expected)  # the line along the last row and the point are not there
    # the disc of radius 3 around (45, 30), as PIL draws it (edge pixels included): symmetric, ~π·3.5² px
    assert set(np.unique(circle)) == {0, 1} and np.array_equal(circle, circle[::-1, ::-1])
    assert circle[4, 4] == 1 and circle[4, 1] == 1 and circle[4, 0] == 0 and 28 < circle.sum() < 45


def test_instances_group_ids_and_names_left_out(tmp_path: Path) -> None:
    shapes = [
        _shape("cell", "polygon", [[2, 2], [10, 2], [10, 10], [2, 10]]),
        _shape("cell", "polygon", [[20, 2], [28, 2], [28, 10], [20, 10]], group=7),
        _shape("cell", "polygon", [[20, 20], [28, 20], [28, 28], [20, 28]], group=7),  # same object
        _shape("debris", "rectangle", [[40, 20], [50, 30]]),
        _shape("cell", "rectangle", [[5, 5], [14, 14]]),  # on top of the first
    ]
    _labelme(tmp_path / "a.json", shapes)
    label = labelme_label(tmp_path / "a.json", (H, W), {"cell": 1, "debris": 0}, instances=True)
    masks, classes = split_instances(label)
    assert classes.tolist() == [1, 1, 1]  # debris (class 0) left out
    assert [int(m.sum()) for m in masks] == [81 - 36, 81 + 81, 100]  # the group is one instance of two squares
    with pytest.raises(LabelError, match="'debris', which labels.classes \\['cell'\\] lacks"):
        labelme_label(tmp_path / "a.json", (H, W), {"cell": 1}, instances=False)
    _labelme(tmp_path / "b.json", shapes, size=(H + 1, W))
    with pytest.raises(LabelError, match="is for a 60x41 image but its image is 60x40"):
        labelme_label(tmp_path / "b.json", (H, W), {"cell": 1, "debris": 2}, instances=False)


def _photos(root: Path, n: int = 4, per_image: int = 1) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / f"p{i}.jpg")
        shapes = [
            _shape("scratch", "polygon", [[2 + 12 * j, 2], [10 + 12 * j, 2], [6 + 12 * j, 9]]) for j in range(per_image)
        ]
        if i == 1:
            shapes.append(_shape("pit", "circle", [[40, 30], [43, 30]]))
        if i < n - 1:  # the last photo was not annotated
            _labelme(root / f"p{i}.json", shapes)


@pytest.mark.parametrize("per_image, task", [(1, "semantic"), (2, "instance")])
def test_plan_finds_labelme_files_and_ingest_reads_them(tmp_path: Path, per_image: int, task: str) -> None:
    _photos(tmp_path, per_image=per_image)
    d = detect(tmp_path)
    assert (d.pairing, d.task, d.classes, d.n_images, d.n_paired) == ("labelme", task, 3, 4, 3)
    labels = d.source["labels"]
    assert labels["kind"] == "labelme" and labels["classes"] == {"pit": 1, "scratch": 2}
    assert d.class_names == {1: "pit", 2: "scratch"}
    assert labels.get("instances", False) == (task == "instance")
    source = ImageSource.model_validate(d.source)
    files = list_source_files(source)
    assert [f["rel_path"] for f in files] == [f"p{i}.jpg" for i in range(4)]
    resolver = build_resolver(source.labels)
    rows = {f["rel_path"]: decode_file(f["path"], f["rel_path"], source, resolver)[0] for f in files}
    assert [rows[f"p{i}.jpg"]["has_label"] for i in range(4)] == [True, True, True, False]
    assert sorted(np.unique(rows["p1.jpg"]["label"] // (INSTANCE_STRIDE if task == "instance" else 1)).tolist()) == [
        0,
        1,
        2,
    ]
    assert resolver.all_label_keys() == {str((tmp_path / f"p{i}.json").resolve()) for i in range(3)}
    assert detect(tmp_path, PlanOverrides(task="semantic")).task == "semantic"


def test_without_classes_the_resolver_numbers_every_name_in_the_files(tmp_path: Path) -> None:
    _photos(tmp_path)
    source = ImageSource.model_validate(
        {"kind": "images", "path": str(tmp_path), "labels": {"kind": "labelme", "path": str(tmp_path)}}
    )
    assert build_resolver(source.labels).labelme_classes == {"pit": 1, "scratch": 2}
    (tmp_path / "notes.json").write_text(json.dumps({"author": "x"}))  # other JSON is no LabelMe file
    assert detect(tmp_path).pairing == "labelme"


def test_plan_finds_labelme_files_in_an_annotations_folder(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    _photos(tmp_path / "images")
    for f in (tmp_path / "images").glob("*.json"):
        f.rename(tmp_path / "annotations" / f.name)
    d = detect(tmp_path)
    assert (d.pairing, d.n_images, d.n_paired) == ("labelme", 4, 3)
    assert d.source["path"] == str(tmp_path / "images")
    assert d.source["labels"]["path"] == str(tmp_path / "annotations")
    source = ImageSource.model_validate(d.source)
    rows = [decode_file(f["path"], f["rel_path"], source)[0] for f in list_source_files(source)]
    assert [r["has_label"] for r in rows] == [True, True, True, False]


def _inspection(root: Path, n: int = 10, labelled: int = 3) -> None:
    """Parts photographed alike; LabelMe files only for the defective ones (the clean parts need none)."""
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / f"part{i:02d}.jpg")
        if i < labelled:
            _labelme(root / f"part{i:02d}.json", [_shape("scratch", "polygon", [[2, 2], [20, 2], [11, 9]])])


def test_labelme_files_for_the_defective_parts_only_plan_the_rest_as_clean(tmp_path: Path) -> None:
    _inspection(tmp_path)
    d = detect(tmp_path)
    assert (d.pairing, d.task, d.classes, d.n_images, d.n_paired) == ("labelme", "semantic", 2, 10, 10)
    assert d.source["labels"]["empty_when_missing"] == ["**"]
    assert "7 image(s) without one are the defect-free parts" in d.notes["labels.empty_when_missing"]
    source = ImageSource.model_validate(d.source)
    (clean,) = decode_file(str(tmp_path / "part05.jpg"), "part05.jpg", source)
    assert clean["has_label"] and clean["label_uri"] == "empty:part05.jpg" and not np.asarray(clean["label"]).any()


def test_a_few_labelme_files_beside_a_mask_folder_do_not_win_over_the_masks(tmp_path: Path) -> None:
    _inspection(tmp_path, labelled=2)
    (tmp_path / "masks").mkdir()
    square = np.zeros((H, W), np.uint8)
    square[5:15, 5:15] = 255
    for i in range(10):
        Image.fromarray(square).save(tmp_path / "masks" / f"part{i:02d}.png")
    assert detect(tmp_path).pairing != "labelme"
