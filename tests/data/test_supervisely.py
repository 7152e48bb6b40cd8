"""Supervisely projects (Dataset Ninja's format): planned, read and drawn, polygons with holes,
rectangles and bitmaps. Files made here, no Ray."""

import base64
import io
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segops.config.schema import ImageSource
from segops.data.decode import decode_file
from segops.data.instances import INSTANCE_STRIDE as S
from segops.data.labels import build_resolver
from segops.data.pairing import detect
from segops.data.supervisely import supervisely_label
from segops.errors import LabelError

H, W = 30, 40


def _bitmap(mask: np.ndarray, origin: tuple[int, int]) -> dict:
    """Supervisely's bitmap: a zlib-compressed PNG (opaque where the object is), base64, at origin [x, y]."""
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    rgba[mask] = (255, 0, 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    return {"data": base64.b64encode(zlib.compress(buffer.getvalue())).decode(), "origin": list(origin)}


def _polygon(title: str, x: int, y: int, side: int, hole: bool = False) -> dict:
    square = [[x, y], [x + side, y], [x + side, y + side], [x, y + side]]
    inner = [[x + 3, y + 3], [x + side - 3, y + 3], [x + side - 3, y + side - 3], [x + 3, y + side - 3]]
    return {
        "classTitle": title,
        "geometryType": "polygon",
        "points": {"exterior": square, "interior": [inner] if hole else []},
    }


def _project(root: Path) -> None:
    meta = {
        "classes": [
            {"title": "crack", "shape": "polygon"},
            {"title": "stain", "shape": "bitmap"},
            {"title": "tag", "shape": "point"},
        ]
    }
    (root / "meta.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "meta.json").write_text(json.dumps(meta))
    for ds, n in (("train", 3), ("test", 2)):
        for i in range(n):
            name = f"{ds}_{i}.jpg"
            (root / ds / "img").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.random.default_rng(i).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(
                root / ds / "img" / name
            )
            blob = np.zeros((4, 5), bool)
            blob[1:3, 1:4] = True
            objects = [
                _polygon("crack", 2, 2, 12, hole=i == 0),
                {"classTitle": "stain", "geometryType": "bitmap", "bitmap": _bitmap(blob, (30, 20))},
                {"classTitle": "tag", "geometryType": "point", "points": {"exterior": [[5, 5]], "interior": []}},
            ]
            if i == 1:
                objects.append(
                    {
                        "classTitle": "crack",
                        "geometryType": "rectangle",
                        "points": {"exterior": [[20, 2], [25, 6]], "interior": []},
                    }
                )
            (root / ds / "ann").mkdir(exist_ok=True)
            (root / ds / "ann" / f"{name}.json").write_text(
                json.dumps({"size": {"height": H, "width": W}, "objects": objects})
            )


def test_a_supervisely_project_is_planned_and_drawn(tmp_path: Path) -> None:
    _project(tmp_path / "proj")
    d = detect(tmp_path)
    assert (d.pairing, d.task, d.classes, d.n_paired, d.class_names) == (
        "supervisely",
        "instance",
        3,
        5,
        {1: "crack", 2: "stain"},
    )
    assert d.source == {
        "kind": "images",
        "path": str(tmp_path / "proj"),
        "include": ["**/img/**"],
        "labels": {"kind": "supervisely", "path": str(tmp_path / "proj"), "instances": True},
    }
    source = ImageSource.model_validate(d.source)
    resolver = build_resolver(source.labels)
    assert len(resolver.all_label_keys()) == 5
    (row,) = decode_file(str(tmp_path / "proj/train/img/train_0.jpg"), "train/img/train_0.jpg", source, resolver)
    label = np.asarray(row["label"]).reshape(H, W)
    assert sorted(np.unique(label).tolist()) == [0, S + 1, 2 * S + 2]  # the crack and the stain; the tag is a point
    assert int((label == S + 1).sum()) == 13 * 13 - 7 * 7  # a 13-px square less its 7-px hole (outlines drawn)
    assert int((label == 2 * S + 2).sum()) == 6 and (label[21:23, 31:34] == 2 * S + 2).all()  # the bitmap at x 30, y 20
    assert row["label_uri"] == str((tmp_path / "proj/train/ann/train_0.jpg.json").resolve())


def test_an_annotation_for_another_size_or_class_is_a_label_error(tmp_path: Path) -> None:
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps({"size": {"height": 10, "width": 10}, "objects": []}))
    with pytest.raises(LabelError, match="for a 10x10 image, not 40x30"):
        supervisely_label(ann, (H, W), {"crack": 1}, instances=False)
    ann.write_text(json.dumps({"objects": [_polygon("dent", 1, 1, 4)]}))
    with pytest.raises(LabelError, match="class 'dent', which labels.classes"):
        supervisely_label(ann, (H, W), {"crack": 1}, instances=False)
