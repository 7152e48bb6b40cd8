"""DICOM SEG and COCO label sources, and image formats (16-bit, multi-page TIFF, JPEG, BMP)."""

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from segops.config.schema import CocoLabels, DicomSegLabels, ImageSource
from segops.data.decode import decode_file
from segops.data.dicom import read_dicom
from segops.data.images import read_image
from segops.data.labels import build_resolver
from segops.errors import LabelError
from segops.outputs.dicom_seg import build_seg, write_seg


def test_dicom_seg_round_trip(ct_archive: Path, tmp_path: Path) -> None:
    series = sorted((ct_archive / "images" / "series-001").glob("*.dcm"))
    sources = [pydicom.dcmread(p) for p in series]
    masks = np.stack([np.asarray(Image.open(ct_archive / "labels" / "series-001" / p.with_suffix(".png").name)) // 255 for p in series])
    assert masks.any()
    seg_path = write_seg(tmp_path / "segs" / "s1.dcm", build_seg(sources, masks, {1: "lesion"}))
    reread = pydicom.dcmread(seg_path)
    assert reread.Modality == "SEG" and reread.SegmentSequence[0].SegmentLabel == "lesion"
    assert reread.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID

    resolver = build_resolver(DicomSegLabels(kind="dicom-seg", path=tmp_path / "segs"))
    assert set(resolver.seg_index) == {ds.SOPInstanceUID for ds in sources}
    for path, expected in zip(series, masks):
        (record,) = read_dicom(path, path.name)
        label, uri = resolver.label_for(record)
        np.testing.assert_array_equal(label, expected)
        assert uri == str(seg_path.resolve())
    other = read_dicom(next((ct_archive / "images" / "series-000").glob("*.dcm")), "x")[0]
    assert resolver.label_for(other) is None  # not referenced: unlabelled


def test_non_seg_files_in_seg_folder_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "junk.dcm").write_bytes(b"nope")
    assert build_resolver(DicomSegLabels(kind="dicom-seg", path=tmp_path)).seg_index == {}
    with pytest.raises(LabelError, match="does not exist"):
        build_resolver(DicomSegLabels(kind="dicom-seg", path=tmp_path / "missing"))


def _coco(tmp_path: Path) -> Path:
    images = tmp_path / "img"
    images.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(np.zeros((20, 30), np.uint8)).save(images / name)
    square = np.zeros((20, 30), np.uint8, order="F")
    square[10:15, 20:25] = 1
    rle = mask_utils.encode(np.asfortranarray(square))
    rle["counts"] = rle["counts"].decode()
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 20, "width": 30},
                   {"id": 2, "file_name": "sub/c.png", "height": 20, "width": 30},
                   {"id": 3, "file_name": "never-there.png", "height": 20, "width": 30}],
        "categories": [{"id": 7, "name": "scratch"}, {"id": 9, "name": "pit"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "segmentation": [[2, 2, 8, 2, 8, 6, 2, 6]], "bbox": [2, 2, 6, 4]},
            {"id": 2, "image_id": 1, "category_id": 9, "segmentation": rle, "bbox": [20, 10, 5, 5]},
        ],
    }  # fmt: skip
    (tmp_path / "coco.json").write_text(json.dumps(data))
    return images


def test_coco_polygons_and_rle_become_class_maps(tmp_path: Path) -> None:
    images = _coco(tmp_path)
    source = ImageSource(kind="images", path=images, labels=CocoLabels(kind="coco", path=tmp_path / "coco.json"))
    resolver = build_resolver(source.labels)
    (a,) = decode_file(str(images / "a.png"), "a.png", source, resolver)
    assert a["has_label"]
    assert a["label"][4, 5] == 1 and a["label"][12, 22] == 2 and a["label"][0, 0] == 0  # 7 → 1, 9 → 2
    assert int((a["label"] == 2).sum()) == 25
    (b,) = decode_file(str(images / "b.png"), "b.png", source, resolver)
    assert not b["has_label"]
    (c,) = decode_file(str(images / "c.png"), "c.png", source, resolver)  # matched by base name
    assert c["has_label"] and c["label"].max() == 0
    unmatched = resolver.all_label_keys() - {a["label_uri"], c["label_uri"]}
    assert unmatched == {f"{tmp_path / 'coco.json'}#image=3"}


def test_image_formats(tmp_path: Path) -> None:
    ramp = (np.arange(48 * 64).reshape(48, 64) * 20).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "a16.png")
    Image.fromarray(ramp).save(tmp_path / "a16.tif")
    Image.fromarray(ramp).save(tmp_path / "pages.tif", save_all=True, append_images=[Image.fromarray(ramp // 2)])
    Image.fromarray((ramp % 256).astype(np.uint8)).convert("RGB").save(tmp_path / "c.jpg", quality=95)
    Image.fromarray((ramp % 256).astype(np.uint8)).save(tmp_path / "g.bmp")
    (png16,) = read_image(tmp_path / "a16.png", "a16.png")
    (tif16,) = read_image(tmp_path / "a16.tif", "a16.tif")
    np.testing.assert_array_equal(png16.image[0], ramp)  # 16-bit kept, not squashed to 8
    np.testing.assert_array_equal(tif16.image[0], ramp)
    pages = read_image(tmp_path / "pages.tif", "pages.tif")
    assert [p.frame for p in pages] == [0, 1] and pages[1].image.max() == ramp.max() // 2
    assert len({p.case_id for p in pages}) == 2 and pages[0].group_id == pages[1].group_id
    (jpg,) = read_image(tmp_path / "c.jpg", "c.jpg")
    (bmp,) = read_image(tmp_path / "g.bmp", "g.bmp")
    assert jpg.image.shape == (3, 48, 64) and bmp.image.shape == (1, 48, 64)
    assert (jpg.transfer_syntax, bmp.transfer_syntax) == ("JPEG", "BMP")
