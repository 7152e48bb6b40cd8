"""CVAT for images 1.1 XML exports: shapes drawn as class maps and instances, pixel for pixel;
planned by ``segops plan``; bad files named."""

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segops.config.schema import CvatLabels, ImageSource
from segops.data.decode import decode_file
from segops.data.images import read_image
from segops.data.instances import INSTANCE_STRIDE as S
from segops.data.labels import build_resolver
from segops.data.pairing import detect
from segops.errors import LabelError

H, W = 16, 24
EXPORT = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta><task><name>inspection</name></task></meta>
  <image id="0" name="a.jpg" width="24" height="16">
    <polygon label="scratch" source="manual" occluded="0" points="3.00,4.00;9.00,4.00;9.00,7.00;3.00,7.00" z_order="1">
    </polygon>
    <box label="dent" source="manual" occluded="0" xtl="2.00" ytl="3.00" xbr="10.00" ybr="8.00" z_order="0"></box>
    <mask label="dent" source="manual" occluded="0" rle="1, 2, 2, 1" left="12" top="4" width="3" height="2" z_order="0">
    </mask>
    <polyline label="scratch" source="manual" occluded="0" points="0,0;5,5" z_order="0"></polyline>
    <points label="dent" source="manual" occluded="0" points="20,10" z_order="0"></points>
  </image>
  <image id="1" name="b.jpg" width="24" height="16">
    <box label="dent" source="manual" occluded="0" xtl="1" ytl="1" xbr="4" ybr="4" z_order="0"></box>
    <box label="dent" source="manual" occluded="0" xtl="10" ytl="10" xbr="12" ybr="12" z_order="0"></box>
  </image>
  <image id="2" name="c.jpg" width="24" height="16"></image>
</annotations>
"""


def _export(root: Path, text: str = EXPORT) -> Path:
    (root / "images" / "default").mkdir(parents=True)
    for name in ("a", "b", "c"):
        Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(root / "images" / "default" / f"{name}.jpg")
    (root / "annotations.xml").write_text(text)
    return root / "annotations.xml"


def _label(spec: CvatLabels, root: Path, name: str) -> np.ndarray:
    (record,) = read_image(root / "images" / "default" / f"{name}.jpg", f"{name}.jpg")
    label, uri = build_resolver(spec).label_for(record)
    assert uri == f"{spec.path}#image={name}.jpg"
    return label


def test_polygons_boxes_and_masks_draw_by_z_order_and_lines_and_points_are_no_area(tmp_path: Path) -> None:
    xml = _export(tmp_path)
    label = _label(CvatLabels(kind="cvat", path=xml), tmp_path, "a")
    expected = np.zeros((H, W), np.uint8)
    expected[3:9, 2:11] = 1  # dent (classes in name order: dent 1, scratch 2), the box with its edge pixels
    expected[4:8, 3:10] = 2  # the scratch polygon lies on top (z_order 1), though listed first
    expected[4, 13:15] = expected[5, 14] = 1  # the mask: runs 1 off, 2 on, 2 off, 1 on over its 3x2 box
    np.testing.assert_array_equal(label, expected)
    assert not _label(CvatLabels(kind="cvat", path=xml), tmp_path, "c").any()  # an image without shapes: empty
    # a label mapped to 0 is left out
    only_dents = _label(CvatLabels(kind="cvat", path=xml, classes={"dent": 1, "scratch": 0}), tmp_path, "a")
    np.testing.assert_array_equal(only_dents, np.where(expected == 2, 1, expected))


def test_each_shape_is_an_instance_with_instances_true(tmp_path: Path) -> None:
    xml = _export(tmp_path)
    label = _label(CvatLabels(kind="cvat", path=xml, instances=True), tmp_path, "b")
    expected = np.zeros((H, W), np.int32)
    expected[1:5, 1:5], expected[10:13, 10:13] = 1 * S + 1, 1 * S + 2
    np.testing.assert_array_equal(label, expected)


def test_bad_shapes_are_label_problems_of_their_image_and_a_bad_file_an_error(tmp_path: Path) -> None:
    """A shape that cannot be drawn (or a label ``classes`` lacks) is a label problem of its image
    alone, naming the shape; the export's other images are read. A file that is no CVAT export fails."""
    xml = _export(tmp_path, EXPORT.replace('rle="1, 2, 2, 1"', 'rle="1, 2, 2"'))
    source = ImageSource(kind="images", path=tmp_path / "images" / "default", labels=CvatLabels(kind="cvat", path=xml))
    resolver = build_resolver(source.labels)
    rows = {
        name: decode_file(str(tmp_path / "images" / "default" / name), name, source, resolver)[0]
        for name in ("a.jpg", "b.jpg")
    }
    assert (rows["a.jpg"]["stage"], rows["a.jpg"]["has_label"]) == ("label", False)
    assert re.search(
        r"mask 1 \('dent'\) of a.jpg in CVAT file .*annotations.xml: its runs cover 5", rows["a.jpg"]["error"]
    )
    assert rows["b.jpg"]["has_label"] and rows["b.jpg"]["status"] == "ok"
    good = tmp_path / "good.xml"
    good.write_text(EXPORT)
    strict = ImageSource(
        kind="images",
        path=tmp_path / "images" / "default",
        labels=CvatLabels(kind="cvat", path=good, classes={"dent": 1}),
    )
    row = decode_file(str(tmp_path / "images" / "default" / "a.jpg"), "a.jpg", strict)[0]
    assert "lacks 'scratch'; add it (0 leaves it out)" in row["error"]
    voc = tmp_path / "voc.xml"
    voc.write_text("<annotation><filename>a.jpg</filename><object><name>dent</name></object></annotation>")
    with pytest.raises(LabelError, match="is not a CVAT for images XML file"):
        build_resolver(CvatLabels(kind="cvat", path=voc))


def test_a_cvat_export_is_planned_and_decoded_with_its_images(tmp_path: Path) -> None:
    xml = _export(tmp_path)
    (tmp_path / "VOC").mkdir()  # a Pascal VOC box file beside it: not a CVAT export
    (tmp_path / "VOC" / "a.xml").write_text("<annotation><filename>a.jpg</filename></annotation>")
    d = detect(tmp_path)
    assert d.pairing == "cvat" and d.task == "instance" and d.classes == 3  # b.jpg holds two dents
    assert d.source == {
        "kind": "images",
        "path": str(tmp_path / "images" / "default"),
        "labels": {"kind": "cvat", "path": str(xml), "instances": True},
    }
    assert d.class_names == {1: "dent", 2: "scratch"} and (d.n_images, d.n_paired) == (3, 3)
    source = ImageSource(kind="images", path=tmp_path / "images" / "default", labels=CvatLabels(kind="cvat", path=xml))
    (row,) = decode_file(str(tmp_path / "images" / "default" / "a.jpg"), "a.jpg", source, build_resolver(source.labels))
    assert row["status"] == "ok" and row["label_values"] == [0, 1, 2]


def test_a_turned_box_is_drawn_turned(tmp_path: Path) -> None:
    """CVAT's ``rotation``: degrees clockwise about the box's centre; a 12x2 box turned 90° stands 2x12."""
    turned = '<box label="crack" xtl="6" ytl="7" xbr="18" ybr="9" rotation="90.0" z_order="0"></box>'
    xml = _export(
        tmp_path,
        EXPORT.replace(
            '<image id="2" name="c.jpg" width="24" height="16"></image>',
            f'<image id="2" name="c.jpg" width="24" height="16">{turned}</image>',
        ),
    )
    label = _label(CvatLabels(kind="cvat", path=xml, classes={"crack": 1, "dent": 0, "scratch": 0}), tmp_path, "c")
    expected = np.zeros((H, W), np.uint8)
    expected[2:15, 11:14] = 1  # centre (12, 8): x 11..13, y 2..14
    np.testing.assert_array_equal(label, expected)
