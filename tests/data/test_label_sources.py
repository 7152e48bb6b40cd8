"""DICOM SEG, COCO and instance-id label sources, and image formats (16-bit, multi-page TIFF, JPEG, BMP)."""

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from segops.config.schema import CocoLabels, DicomSegLabels, ImageSource, InstancePngLabels, MaskPngLabels
from segops.data.coco import coco_segmentation_mask
from segops.data.decode import decode_file
from segops.data.dicom import read_dicom
from segops.data.images import read_image
from segops.data.instances import INSTANCE_STRIDE as S
from segops.data.instances import split_instances
from segops.data.labels import build_resolver
from segops.data.mask_files import read_instance_png, read_mask_png
from segops.errors import LabelError
from segops.outputs.dicom_seg import build_seg, write_seg


def test_dicom_seg_round_trip(ct_archive: Path, tmp_path: Path) -> None:
    series = sorted((ct_archive / "images" / "series-001").glob("*.dcm"))
    sources = [pydicom.dcmread(p) for p in series]
    masks = np.stack(
        [
            np.asarray(Image.open(ct_archive / "labels" / "series-001" / p.with_suffix(".png").name)) // 255
            for p in series
        ]
    )
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
        "images": [
            {"id": 1, "file_name": "a.png", "height": 20, "width": 30},
            {"id": 2, "file_name": "sub/c.png", "height": 20, "width": 30},
            {"id": 3, "file_name": "never-there.png", "height": 20, "width": 30},
        ],
        "categories": [{"id": 7, "name": "scratch"}, {"id": 9, "name": "pit"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 7,
                "segmentation": [[2, 2, 8, 2, 8, 6, 2, 6]],
                "bbox": [2, 2, 6, 4],
            },
            {"id": 2, "image_id": 1, "category_id": 9, "segmentation": rle, "bbox": [20, 10, 5, 5]},
        ],
    }
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
    Image.fromarray((ramp % 256).astype(np.uint8)).convert("LA").save(tmp_path / "la.png")  # gray + alpha
    (gray_alpha,) = read_image(tmp_path / "la.png", "la.png")
    assert gray_alpha.image.shape == (1, 48, 64) and np.array_equal(gray_alpha.image[0], ramp % 256)
    assert (jpg.transfer_syntax, bmp.transfer_syntax) == ("JPEG", "BMP")


# --------------------------------------------------------------------------- instance labels


def _gray(path: Path, h: int = 24, w: int = 32) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w), 90, np.uint8)).save(path)


def test_instance_png_ids_become_int32_instance_label_maps(tmp_path: Path) -> None:
    images, labels = tmp_path / "img", tmp_path / "lbl"
    for rel in ("a.png", "sub/b.png", "c.png"):
        _gray(images / rel)
    ids = np.zeros((24, 32), np.uint16)
    ids[2:8, 2:10], ids[10:20, 5:9], ids[12:14, 20:30] = 300, 3, 65535  # sparse 16-bit ids
    (labels / "sub").mkdir(parents=True)
    Image.fromarray(ids).save(labels / "a.png")
    binary = np.zeros((24, 32), np.uint8)
    binary[4:9, 4:9] = 255  # one instance with id 255: not a 0/255 mask to rescale
    Image.fromarray(binary).save(labels / "sub" / "b.png")
    Image.fromarray(ids).save(labels / "extra.png")  # matches no image
    spec = InstancePngLabels(kind="instance-png", path=labels, class_id=2)
    source = ImageSource(kind="images", path=images, labels=spec)
    resolver = build_resolver(spec)

    (a,) = decode_file(str(images / "a.png"), "a.png", source, resolver)
    assert a["status"] == "ok" and a["has_label"] and a["label"].dtype == np.int32
    assert a["label_uri"] == str((labels / "a.png").resolve())
    assert (a["label"][15, 6], a["label"][3, 3], a["label"][13, 25], a["label"][0, 0]) == (
        2 * S + 1,
        2 * S + 2,
        2 * S + 3,
        0,
    )
    (b,) = decode_file(str(images / "sub/b.png"), "sub/b.png", source, resolver)
    np.testing.assert_array_equal(b["label"], np.where(binary == 255, 2 * S + 1, 0))
    (c,) = decode_file(str(images / "c.png"), "c.png", source, resolver)
    assert not c["has_label"]
    assert resolver.all_label_keys() - {a["label_uri"], b["label_uri"]} == {str((labels / "extra.png").resolve())}


def test_instance_tiff_and_instance_png_errors(tmp_path: Path) -> None:
    ids = np.zeros((24, 32), np.uint16)
    ids[1:5, 1:5] = 4000
    Image.fromarray(ids).save(tmp_path / "ids.tif")
    np.testing.assert_array_equal(read_instance_png(tmp_path / "ids.tif", (24, 32)), ids)
    with pytest.raises(LabelError, match=r"instance-id image .*ids\.tif is 32x24 but its image is 30x20"):
        read_instance_png(tmp_path / "ids.tif", (20, 30))
    colour = np.zeros((24, 32, 3), np.uint8)
    colour[1:5, 1:5] = (10, 200, 30)  # ids as colours: refused
    Image.fromarray(colour).save(tmp_path / "rgb.png")
    with pytest.raises(LabelError, match=r"rgb\.png has shape \(24, 32, 3\) with channels that differ"):
        read_instance_png(tmp_path / "rgb.png", (24, 32))
    whole = np.zeros((24, 32), np.float32)
    whole[1:5, 1:5] = 3.0  # ids written by a float pipeline: read as integers
    Image.fromarray(whole).save(tmp_path / "whole.tif")
    np.testing.assert_array_equal(read_instance_png(tmp_path / "whole.tif", (24, 32)), whole.astype(np.int64))
    Image.fromarray(whole / 4).save(tmp_path / "float.tif")  # 0.75: no instance id
    with pytest.raises(LabelError, match=r"float\.tif has float32 pixels; expected integer instance ids"):
        read_instance_png(tmp_path / "float.tif", (24, 32))
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(LabelError, match=r"cannot read instance-id image .*junk\.png"):
        read_instance_png(tmp_path / "junk.png", (24, 32))


def test_instance_classes_are_the_majority_class_under_each_instance(tmp_path: Path) -> None:
    images, root = tmp_path / "img", tmp_path / "archive"
    _gray(images / "x.png")
    ids = np.zeros((24, 32), np.uint16)
    classes = np.zeros((24, 32), np.uint8)
    ids[0:4, 0:10], classes[0:4, 0:10], classes[0, 0:3] = 1, 2, 1  # mostly class 2
    ids[10:14, 0:10], classes[10:14, 2:10] = 7, 1  # class 1, with background pixels under it
    ids[20:22, 0:10], classes[20, 0:10], classes[21, 0:10] = 9, 3, 1  # a tie: the lower class wins
    for folder, array in (("instances", ids), ("classes", classes)):
        (root / folder).mkdir(parents=True)
        Image.fromarray(array).save(root / folder / "x.png")
    spec = InstancePngLabels(
        kind="instance-png", path=root, pattern="instances/{rel_stem}.png", classes_pattern="classes/{rel_stem}.png"
    )
    resolver = build_resolver(spec)
    (record,) = read_image(images / "x.png", "x.png")
    label, uri = resolver.label_for(record)
    assert (label[1, 5], label[11, 5], label[20, 5]) == (2 * S + 1, S + 2, S + 3)
    assert resolver.all_label_keys() == {uri} == {str((root / "instances" / "x.png").resolve())}

    classes[10:14, :] = 0  # instance 7 now lies on background only
    Image.fromarray(classes).save(root / "classes" / "x.png")
    with pytest.raises(LabelError, match=r"instances/x\.png .*: instance 7 lies only on class 0"):
        resolver.label_for(record)
    source = ImageSource(kind="images", path=images, labels=spec)
    (row,) = decode_file(str(images / "x.png"), "x.png", source, resolver)
    assert (row["status"], row["has_label"], row["stage"], row["error_type"]) == ("ok", False, "label", "LabelError")
    (root / "classes" / "x.png").unlink()
    with pytest.raises(LabelError, match=r"instances/x\.png has no class mask: .*classes/x\.png does not exist"):
        resolver.label_for(record)


def test_instance_label_keys_leave_out_class_masks_beside_them(tmp_path: Path) -> None:
    for name in ("a.png", "sub/b.png", "sub/b_class.png", "a_class.png", "sub/orphan.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / name)
    spec = InstancePngLabels(
        kind="instance-png", path=tmp_path, pattern="{rel_dir}/{stem}.png", classes_pattern="{rel_stem}_class.png"
    )
    keys = build_resolver(spec).all_label_keys()
    assert keys == {str((tmp_path / n).resolve()) for n in ("a.png", "sub/b.png", "sub/orphan.png")}


def _coco_overlapping(tmp_path: Path, rle_size: tuple[int, int] = (30, 40)) -> Path:
    """One 40x30 image: a polygon (category 9), an uncompressed RLE on top of it and a
    compressed RLE (category 7), and a crowd region (category 9)."""
    images = tmp_path / "img"
    _gray(images / "o.png", 30, 40)
    second = np.zeros((30, 40), np.uint8)
    second[10:25, 12:30] = 1
    third = np.zeros(rle_size, np.uint8)
    third[0:3, 0:3] = 1
    third_rle = mask_utils.encode(np.asfortranarray(third))
    third_rle["counts"] = third_rle["counts"].decode()
    crowd = np.zeros((30, 40), np.uint8)
    crowd[26:30, :] = 1
    crowd_rle = mask_utils.encode(np.asfortranarray(crowd))
    crowd_rle["counts"] = crowd_rle["counts"].decode()
    data = {
        "images": [{"id": 1, "file_name": "o.png", "height": 30, "width": 40}],
        "categories": [{"id": 7, "name": "rod"}, {"id": 9, "name": "cell"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 9, "segmentation": [[5, 5, 20, 5, 20, 20, 5, 20]], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 7, "segmentation": _uncompressed_rle(second), "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 7, "segmentation": third_rle},
            {"id": 4, "image_id": 1, "category_id": 9, "segmentation": crowd_rle, "iscrowd": 1},
        ],
    }
    (tmp_path / "coco.json").write_text(json.dumps(data))
    return images


def _uncompressed_rle(mask: np.ndarray) -> dict:
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    return {"size": list(mask.shape), "counts": counts}


def test_coco_instances_stack_in_file_order_and_skip_crowds(tmp_path: Path) -> None:
    images = _coco_overlapping(tmp_path)
    spec = CocoLabels(kind="coco", path=tmp_path / "coco.json", instances=True)
    source = ImageSource(kind="images", path=images, labels=spec)
    (row,) = decode_file(str(images / "o.png"), "o.png", source, build_resolver(spec))
    label = row["label"]
    assert row["status"] == "ok" and label.dtype == np.int32
    first = coco_segmentation_mask([[5, 5, 20, 5, 20, 20, 5, 20]], 30, 40)
    second = np.zeros((30, 40), bool)
    second[10:25, 12:30] = True
    third = np.zeros((30, 40), bool)
    third[0:3, 0:3] = True
    np.testing.assert_array_equal(label == 2 * S + 1, first & ~second)  # category 9 → class 2 (rank), under #2
    np.testing.assert_array_equal(label == S + 2, second)  # category 7 → class 1, drawn later: on top
    np.testing.assert_array_equal(label == S + 3, third)
    assert not label[26:30].any()  # the crowd region is no instance
    masks, classes = split_instances(label)
    assert masks.shape == (3, 30, 40) and classes.tolist() == [2, 1, 1]  # in annotation (instance) order
    np.testing.assert_array_equal(masks[1], second)

    semantic = CocoLabels(kind="coco", path=tmp_path / "coco.json")
    (plain,) = decode_file(str(images / "o.png"), "o.png", source.model_copy(update={"labels": semantic}))
    assert plain["label"].dtype == np.uint8 and plain["label"][12, 15] == 1 and plain["label"][6, 6] == 2


def test_coco_instances_class_mapping_and_errors(tmp_path: Path) -> None:
    images = _coco_overlapping(tmp_path)
    (record,) = read_image(images / "o.png", "o.png")

    def label_with(categories: dict[int, int] | None) -> np.ndarray:
        spec = CocoLabels(kind="coco", path=tmp_path / "coco.json", instances=True, categories=categories)
        return build_resolver(spec).label_for(record)[0]

    mapped = label_with({7: 3, 9: 1})
    assert (mapped[6, 6], mapped[12, 15], mapped[1, 1]) == (S + 1, 3 * S + 2, 3 * S + 3)
    dropped = label_with({7: 1, 9: 0})  # class 0: left out
    assert set(np.unique(dropped).tolist()) == {0, S + 1, S + 2}
    with pytest.raises(LabelError, match=r"COCO annotation 1 of image 1 has category_id 9, which has no class"):
        label_with({7: 1})

    bad = tmp_path / "bad"
    bad.mkdir()
    _coco_overlapping(bad, rle_size=(10, 10))
    spec = CocoLabels(kind="coco", path=bad / "coco.json", instances=True)
    with pytest.raises(LabelError, match=r"COCO annotation 3 of image 1: RLE is 10x10 but its image is 40x30"):
        build_resolver(spec).label_for(record)
    _gray(tmp_path / "small.png", 20, 30)
    (small,) = read_image(tmp_path / "small.png", "o.png")
    with pytest.raises(LabelError, match=r"COCO image 1 is 40x30 but its image is 30x20"):
        build_resolver(spec).label_for(small)


# --------------------------------------------------------------------------- mapped mask values


def test_mask_png_values_map_stored_values_to_classes(tmp_path: Path) -> None:
    """ISBI 2012 style: black (0) is the membrane class, white (255) the background."""
    _gray(tmp_path / "images" / "0.png")
    stored = np.full((24, 32), 255, np.uint8)
    stored[:, 10:12] = 0
    (tmp_path / "labels").mkdir()
    Image.fromarray(stored).save(tmp_path / "labels" / "0.png")
    spec = MaskPngLabels(kind="mask-png", path=tmp_path / "labels", values={0: 1, 255: 0})
    (record,) = read_image(tmp_path / "images" / "0.png", "0.png")
    label, uri = build_resolver(spec).label_for(record)
    assert label.dtype == np.uint8 and uri.endswith("0.png")
    np.testing.assert_array_equal(label, (stored == 0).astype(np.uint8))
    # without the mapping the same file reads as 0/255 → 0/1, the other way round
    plain, _ = build_resolver(MaskPngLabels(kind="mask-png", path=tmp_path / "labels")).label_for(record)
    np.testing.assert_array_equal(plain, (stored == 255).astype(np.uint8))


def test_mask_png_values_reject_unmapped_values(tmp_path: Path) -> None:
    stored = np.full((24, 32), 255, np.uint8)
    stored[0, 0] = 128
    Image.fromarray(stored).save(tmp_path / "m.png")
    with pytest.raises(LabelError, match=r"value\(s\) \[128\]"):
        read_mask_png(tmp_path / "m.png", (24, 32), values={0: 1, 255: 0})


def test_declared_label_rows_give_the_classes_coco_and_instance_ids_will_hold(tmp_path: Path) -> None:
    """What a segment step checks before its actors start, for labels that declare their classes."""
    import pandas as pd

    from segops.data.label_census import check_label_values
    from segops.data.labels import build_resolver, declared_label_rows
    from segops.errors import LabelValueError

    polygon = [[1, 1, 6, 1, 6, 6, 1, 6]]
    coco = {
        "images": [
            {"id": 1, "file_name": "a.png", "height": 8, "width": 8},
            {"id": 2, "file_name": "b.png", "height": 8, "width": 8},
        ],
        "categories": [{"id": 7, "name": "cell"}, {"id": 9, "name": "rod"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 9, "segmentation": polygon},
            {"id": 2, "image_id": 2, "category_id": 7, "segmentation": polygon},
        ],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    spec = CocoLabels(kind="coco", path=tmp_path / "coco.json", instances=True)
    rows = pd.DataFrame(declared_label_rows(build_resolver(spec)))
    assert dict(zip(rows["label_uri"], rows["label_values"])) == {
        f"{tmp_path / 'coco.json'}#image=1": [2 * S + 1],
        f"{tmp_path / 'coco.json'}#image=2": [S + 1],
    }
    check_label_values(rows, classes=3, instance=True)  # cell = 1, rod = 2: fits 3 classes
    with pytest.raises(LabelValueError, match=r"\[2\] are not classes"):
        check_label_values(rows, classes=2, instance=True)

    (tmp_path / "ids").mkdir()
    Image.fromarray(np.array([[0, 1], [2, 2]], np.uint8)).save(tmp_path / "ids" / "x.png")
    ids = InstancePngLabels(kind="instance-png", path=tmp_path / "ids", class_id=4)
    assert [r["label_values"] for r in declared_label_rows(build_resolver(ids))] == [[4 * S + 1]]


@pytest.mark.parametrize("kind", ["mask-png", "instance-png"])
def test_empty_when_missing_gives_named_inputs_without_a_mask_an_empty_label(tmp_path: Path, kind: str) -> None:
    """MVTec AD: defect-free ``good/`` images have no mask file; ``unsorted/`` stays unlabelled."""
    images, masks = tmp_path / "test", tmp_path / "ground_truth"
    for rel in ("good/000.png", "crack/000.png", "unsorted/000.png"):
        _gray(images / rel)
    mask = np.zeros((24, 32), np.uint8)
    mask[3:9, 4:12] = 255
    (masks / "crack").mkdir(parents=True)
    Image.fromarray(mask).save(masks / "crack" / "000_mask.png")
    spec_type = MaskPngLabels if kind == "mask-png" else InstancePngLabels
    spec = spec_type(kind=kind, path=masks, pattern="{rel_stem}_mask.png", empty_when_missing=("good/**",))
    source = ImageSource(kind="images", path=images, labels=spec)
    resolver = build_resolver(spec)
    rows = {
        rel: decode_file(str(images / rel), rel, source, resolver)[0]
        for rel in ("good/000.png", "crack/000.png", "unsorted/000.png")
    }
    good, crack, unsorted = rows["good/000.png"], rows["crack/000.png"], rows["unsorted/000.png"]
    dtype = np.uint8 if kind == "mask-png" else np.int32
    assert good["status"] == "ok" and good["has_label"] and good["label"].dtype == dtype
    assert good["label"].shape == (24, 32) and not good["label"].any()
    assert good["label_uri"] == "empty:good/000.png"
    assert crack["has_label"] and int(crack["label"].astype(bool).sum()) == 48
    assert not unsorted["has_label"]
    with pytest.raises(ValueError, match="empty_when_missing pattern '/good' is not a relative POSIX glob"):
        spec_type(kind=kind, path=masks, empty_when_missing=("/good",))


def test_void_pixels_read_as_background_in_class_and_instance_masks(tmp_path: Path) -> None:
    stored = np.zeros((24, 32), np.uint8)
    stored[2:12, 2:12] = 255
    stored[4:10, 4:10] = 15  # a VOC class inside its void border
    stored[14:20, 20:28] = 255
    stored[15:19, 21:27] = 2
    Image.fromarray(stored).save(tmp_path / "m.png")
    label = read_mask_png(tmp_path / "m.png", (24, 32), values={0: 0, 2: 1, 15: 2}, void=255)
    assert sorted(np.unique(label).tolist()) == [0, 1, 2] and int((label == 2).sum()) == 36
    _gray(tmp_path / "img" / "m.png")
    spec = InstancePngLabels(kind="instance-png", path=tmp_path, void=255)
    (record,) = read_image(tmp_path / "img" / "m.png", "m.png")
    ids, _ = build_resolver(spec).label_for(record)
    assert sorted(np.unique(ids).tolist()) == [0, S + 1, S + 2]  # objects 2 and 15; the borders are no object


def test_an_image_whose_label_cannot_be_used_keeps_that_label_s_uri(tmp_path: Path) -> None:
    """A mask of the wrong size: the image stays (unlabelled, with the reason) and its row names the
    mask, so the ingest's unmatched-labels table does not also list it as matching no image."""
    from segops.config.schema import ImageSource

    _gray(tmp_path / "images" / "a.png")
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "masks" / "a.png")
    source = ImageSource.model_validate(
        {
            "kind": "images",
            "path": str(tmp_path / "images"),
            "labels": {"kind": "mask-png", "path": str(tmp_path / "masks")},
        }
    )
    (row,) = decode_file(str(tmp_path / "images" / "a.png"), "a.png", source)
    assert (row["status"], row["stage"], row["has_label"]) == ("ok", "label", False)
    assert "20x20" in row["error"] and row["label_uri"] == str((tmp_path / "masks" / "a.png").resolve())
