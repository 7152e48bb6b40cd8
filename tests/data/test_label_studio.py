"""Label Studio's JSON and JSON-MIN exports: planned, decoded to masks (files made here, no Ray)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segops.config.schema import ImageSource
from segops.data.decode import decode_file, list_source_files
from segops.data.label_studio import decode_brush, image_names
from segops.data.labels import build_resolver
from segops.data.pairing import detect
from segops.errors import LabelError

H, W = 40, 50


def _bits_to_bytes(bits: str) -> list[int]:
    bits += "0" * (-len(bits) % 8)
    return [int(bits[k : k + 8], 2) for k in range(0, len(bits), 8)]


def _encode_brush(values: np.ndarray, literal: int = 0) -> list[int]:
    """Label Studio's brush encoding of a flat uint8 canvas: 8-bit values, 16-bit run lengths, the
    first ``literal`` values one by one, the rest as repeated runs."""
    bits = f"{values.size:032b}{7:05b}" + f"{15:04b}" * 4
    if literal:
        bits += "0" + "00" + f"{literal - 1:016b}" + "".join(f"{v:08b}" for v in values[:literal])
    i = literal
    while i < values.size:
        j = i
        while j + 1 < values.size and values[j + 1] == values[i] and j - i < 65535:
            j += 1
        bits += "1" + "00" + f"{j - i:016b}" + f"{values[i]:08b}"
        i = j + 1
    return _bits_to_bytes(bits)


def test_brush_decoding_reads_repeated_and_literal_blocks() -> None:
    canvas = np.zeros(H * W * 4, np.uint8)
    canvas[400:480] = 255
    canvas[3] = 7
    assert np.array_equal(decode_brush(_encode_brush(canvas, literal=5)), canvas)
    with pytest.raises(LabelError, match="ends before its canvas is full"):
        decode_brush(_encode_brush(canvas)[:12])


def test_image_names_drop_an_uploads_prefix_and_read_local_files() -> None:
    assert image_names("/data/upload/3/8f2a91c3-part_0001.jpg") == ["8f2a91c3-part_0001.jpg", "part_0001.jpg"]
    assert image_names("/data/local-files/?d=photos/part%200001.jpg") == ["photos/part 0001.jpg", "part 0001.jpg"]


def _brush_region(mask: np.ndarray, label: str) -> dict:
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[mask] = (255, 0, 0, 255)
    value = {"format": "rle", "rle": _encode_brush(rgba.ravel()), "brushlabels": [label]}
    return {"type": "brushlabels", "value": value, "original_width": W, "original_height": H}


def _export(tmp_path: Path, n: int = 6) -> None:
    """A JSON export: polygons (percent), a rectangle, an ellipse and a brush stroke, uploads' names."""
    tasks = []
    for i in range(n):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (H, W, 3), np.uint8)).save(
            tmp_path / "images" / f"part_{i:03d}.jpg"
        )
        scratch = {"points": [[10, 10], [50, 10], [50, 50], [10, 50]], "polygonlabels": ["scratch"]}
        dent = {"x": 60, "y": 50, "width": 20, "height": 25, "rotation": 0, "rectanglelabels": ["dent"]}
        pit = {"x": 20, "y": 80, "radiusX": 8, "radiusY": 10, "rotation": 0, "ellipselabels": ["pit"]}
        stroke = np.zeros((H, W), bool)
        stroke[30:34, 30 + i : 40 + i] = True
        result = [
            {"type": "polygonlabels", "value": scratch, "original_width": W, "original_height": H},
            {"type": "rectanglelabels", "value": dent, "original_width": W, "original_height": H},
            {"type": "ellipselabels", "value": pit, "original_width": W, "original_height": H},
            _brush_region(stroke, "scratch"),
            {"type": "choices", "value": {"choices": ["ok"]}},  # no area
        ]
        url = f"/data/upload/1/{i:08x}-part_{i:03d}.jpg"
        annotations = [{"was_cancelled": True, "result": []}, {"result": result}]
        tasks.append({"id": i + 1, "data": {"image": url}, "annotations": annotations})
    (tmp_path / "project-1-at-2026-12-07.json").write_text(json.dumps(tasks))


def test_a_json_export_plans_and_draws_every_region_kind(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    _export(tmp_path)
    d = detect(tmp_path)
    assert (d.pairing, d.task, d.n_images, d.n_paired) == ("label-studio", "instance", 6, 6)  # 2 scratches
    assert d.class_names == {1: "dent", 2: "pit", 3: "scratch"}
    assert d.source["path"] == str(tmp_path / "images")
    semantic = ImageSource.model_validate(d.source | {"labels": d.source["labels"] | {"instances": False}})
    assert len(list_source_files(semantic)) == 6
    [row] = decode_file(str(tmp_path / "images" / "part_001.jpg"), "part_001.jpg", semantic)
    label = row["label"]
    assert label.shape == (H, W) and row["has_label"]
    assert (
        label[10, 10] == 3 and label[2, 2] == 0 and label[10, 27] == 0
    )  # polygon 10-50 % of 50 x 40 px: x 5..25, y 4..20
    assert label[25, 35] == 1 and label[21, 31] == 1  # rectangle: x 30..40, y 20..30
    assert label[32, 10] == 2 and label[32, 15] == 0  # ellipse centred at (10, 32), radii 4 x 4 px
    assert (label[30:34, 31:41] == 3).all() and label[30, 41] == 0  # the brush stroke of task 1
    instances = ImageSource.model_validate(d.source)
    [row] = decode_file(str(tmp_path / "images" / "part_001.jpg"), "part_001.jpg", instances)
    assert len({int(v) for v in np.unique(row["label"]) if v}) == 4  # two scratches, a dent, a pit


def test_a_json_min_export_of_local_files_plans(tmp_path: Path) -> None:
    """JSON-MIN rows of a labelling config whose image variable is `$photo`, from local storage."""
    rows = []
    for i in range(4):
        (tmp_path / "photos").mkdir(exist_ok=True)
        Image.fromarray(np.full((H, W), 60 + i, np.uint8)).save(tmp_path / "photos" / f"p{i}.png")
        region = {"points": [[0, 0], [40, 0], [40, 40]], "polygonlabels": ["crack"]}
        rows.append(
            {
                "photo": f"/data/local-files/?d=photos/p{i}.png",  # a labelling config with $photo
                "id": i,
                "label": [region | {"original_width": W, "original_height": H}],
            }
        )
    (tmp_path / "export.json").write_text(json.dumps(rows))
    d = detect(tmp_path)
    assert (d.pairing, d.task, d.n_paired, d.class_names) == ("label-studio", "semantic", 4, {1: "crack"})
    source = ImageSource.model_validate(d.source)
    [row] = decode_file(str(tmp_path / "photos" / "p2.png"), "p2.png", source)
    assert row["label"][1, 10] == 1 and row["label"][15, 2] == 0


def test_a_region_without_its_image_size_is_a_label_problem_of_its_image_alone(tmp_path: Path) -> None:
    """One task that cannot be drawn does not fail the export: its image is kept unlabelled with the
    reason (listed in the quarantine), and every other task's image is read."""
    (tmp_path / "images").mkdir()
    _export(tmp_path, n=3)
    tasks = json.loads((tmp_path / "project-1-at-2026-12-07.json").read_text())
    del tasks[1]["annotations"][1]["result"][0]["original_width"]
    (tmp_path / "project-1-at-2026-12-07.json").write_text(json.dumps(tasks))
    source = ImageSource.model_validate(detect(tmp_path).source)
    resolver = build_resolver(source.labels)
    rows = {
        name: decode_file(str(tmp_path / "images" / name), name, source, resolver)[0]
        for name in ("part_000.jpg", "part_001.jpg")
    }
    assert rows["part_000.jpg"]["has_label"] and rows["part_000.jpg"]["status"] == "ok"
    bad = rows["part_001.jpg"]
    assert (bad["status"], bad["stage"], bad["has_label"]) == ("ok", "label", False)
    assert re.search(r"task 1 .*part_001.jpg.* no one original_width/height", bad["error"])
