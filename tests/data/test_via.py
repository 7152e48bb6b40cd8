"""VGG Image Annotator JSON (the Mask R-CNN balloon tutorial's layout, and VIA 2 projects):
planned, read and drawn. Files made here, no Ray."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segops.config.schema import ImageSource
from segops.data.decode import decode_file
from segops.data.instances import INSTANCE_STRIDE as S
from segops.data.labels import build_resolver, declared_label_rows
from segops.data.pairing import detect
from segops.data.via import read_via
from segops.errors import LabelError

H, W = 30, 40


def _photo(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path)


def _polygon(x: int, y: int, side: int = 8) -> dict:
    return {"name": "polygon", "all_points_x": [x, x + side, x + side, x], "all_points_y": [y, y, y + side, y + side]}


def _balloon(root: Path) -> None:
    """train/ and val/, each with its photos and a VIA 1 via_region_data.json (regions in a dict,
    no region attributes), as the balloon tutorial ships them; one photo holds two balloons."""
    for split, n in (("train", 4), ("val", 2)):
        doc = {}
        for i in range(n):
            name = f"{split}{i}.jpg"
            _photo(root / split / name, i)
            regions = {"0": {"shape_attributes": _polygon(2, 2), "region_attributes": {}}}
            if i == 1:
                regions["1"] = {"shape_attributes": _polygon(20, 15), "region_attributes": {}}
            doc[f"{name}1234"] = {
                "fileref": "",
                "size": 1234,
                "filename": name,
                "base64_img_data": "",
                "file_attributes": {},
                "regions": regions,
            }
        (root / split / "via_region_data.json").write_text(json.dumps(doc))


def test_the_balloon_layout_is_planned_from_every_split_and_drawn(tmp_path: Path) -> None:
    _balloon(tmp_path)
    d = detect(tmp_path)
    assert (d.pairing, d.task, d.classes, d.n_images, d.class_names) == ("via", "instance", 2, 6, {1: "object"})
    assert d.source == {
        "kind": "images",
        "path": str(tmp_path),
        "labels": {
            "kind": "via",
            "path": str(tmp_path / "train" / "via_region_data.json"),
            "more_files": [str(tmp_path / "val" / "via_region_data.json")],
            "instances": True,
        },
    }
    source = ImageSource.model_validate(d.source)
    resolver = build_resolver(source.labels)
    (row,) = decode_file(str(tmp_path / "train" / "train1.jpg"), "train/train1.jpg", source, resolver)
    label = np.asarray(row["label"]).reshape(H, W)
    assert sorted(np.unique(label).tolist()) == [0, S + 1, S + 2]
    assert int((label == S + 1).sum()) == 81  # an 8-px square drawn with its outline: 9 x 9
    assert row["label_uri"] == f"{tmp_path / 'train' / 'via_region_data.json'}#image=train1.jpg"
    assert len(declared_label_rows(resolver)) == 6


def test_a_via_2_project_names_classes_by_its_region_attribute(tmp_path: Path) -> None:
    _photo(tmp_path / "a.jpg", 0)
    _photo(tmp_path / "b.jpg", 1)
    regions = [
        {
            "shape_attributes": {"name": "rect", "x": 1, "y": 1, "width": 5, "height": 4},
            "region_attributes": {"type": "dent"},
        },
        {"shape_attributes": {"name": "circle", "cx": 30, "cy": 20, "r": 4}, "region_attributes": {"type": "scratch"}},
        {"shape_attributes": {"name": "point", "cx": 3, "cy": 3}, "region_attributes": {"type": "dent"}},  # no area
    ]
    metadata = {
        "a.jpg-1": {"filename": "a.jpg", "size": -1, "regions": regions, "file_attributes": {}},
        "b.jpg-1": {"filename": "b.jpg", "size": -1, "regions": [], "file_attributes": {}},
    }
    (tmp_path / "project.json").write_text(json.dumps({"_via_settings": {}, "_via_img_metadata": metadata}))
    d = detect(tmp_path)
    assert (d.task, d.classes, d.class_names) == ("semantic", 3, {1: "dent", 2: "scratch"})
    assert d.source["labels"] == {"kind": "via", "path": str(tmp_path / "project.json"), "attribute": "type"}
    source = ImageSource.model_validate(d.source)
    (row,) = decode_file(str(tmp_path / "a.jpg"), "a.jpg", source)
    label = np.asarray(row["label"]).reshape(H, W)
    assert int((label == 1).sum()) == 6 * 5 and label[20, 30] == 2 and label[20, 35] == 0
    (empty,) = decode_file(str(tmp_path / "b.jpg"), "b.jpg", source)
    assert empty["has_label"] and not np.asarray(empty["label"]).any()  # listed without regions: nothing there


def test_json_that_is_not_via_is_said_so(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(LabelError, match="is not a VIA file"):
        read_via(tmp_path / "x.json")
