import hashlib
import json
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from segops.config.schema import CocoLabels, ImageSource, InstancePngLabels
from segops.data.decode import decode_file
from segops.data.instances import class_map
from segops.data.labels import build_resolver
from segops.synth import make_ct_archive, make_inspection_archive, make_instance_archive
from segops.synth.instances import _instance_scene


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    make_ct_archive(tmp_path / "a", series=2, slices=3, seed=7)
    make_ct_archive(tmp_path / "b", series=2, slices=3, seed=7)
    make_ct_archive(tmp_path / "c", series=2, slices=3, seed=8)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert len(_digest(tmp_path / "a")) == 12  # 6 slices + 6 masks
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    make_inspection_archive(tmp_path / "i1", count=4, seed=1)
    make_inspection_archive(tmp_path / "i2", count=4, seed=1)
    assert _digest(tmp_path / "i1") == _digest(tmp_path / "i2")


def test_ct_series_geometry_and_uids(tmp_path: Path) -> None:
    summary = make_ct_archive(tmp_path, series=2, slices=4, seed=0)
    files = sorted((summary.images / "series-000").glob("*.dcm"))
    datasets = [pydicom.dcmread(f) for f in files]
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == 4
    assert all(ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian for ds in datasets)
    z = [float(ds.ImagePositionPatient[2]) for ds in datasets]
    assert np.allclose(np.diff(z), 2.5)
    first = datasets[0]
    assert first.Modality == "CT" and first.PixelRepresentation == 1 and first.BitsAllocated == 16
    assert first.pixel_array.dtype == np.int16
    assert first.pixel_array.shape == (first.Rows, first.Columns)
    assert len(first.PixelSpacing) == 2 and float(first.PixelSpacing[0]) > 0
    hu = first.pixel_array * float(first.RescaleSlope) + float(first.RescaleIntercept)
    assert hu.min() < -900 and hu.max() > 300  # air outside the body, bone inside
    other = pydicom.dcmread(next((summary.images / "series-001").glob("*.dcm")))
    assert other.SeriesInstanceUID != first.SeriesInstanceUID


def test_ct_labels_align_with_bright_lesions(tmp_path: Path) -> None:
    summary = make_ct_archive(tmp_path, series=2, slices=8, seed=1)
    files = sorted(summary.images.rglob("*.dcm"))
    with_lesion = 0
    for dcm in files:
        mask = np.asarray(Image.open(summary.labels / dcm.relative_to(summary.images).with_suffix(".png")))
        ds = pydicom.dcmread(dcm)
        assert mask.shape == ds.pixel_array.shape and set(np.unique(mask)) <= {0, 255}
        if mask.any():
            with_lesion += 1
            hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            assert hu[mask > 0].mean() > 100  # lesions are brighter than soft tissue (~30-60 HU)
    assert summary.n_images == len(files) == 16 and summary.n_foreground == with_lesion
    assert 0 < with_lesion < 16  # some slices miss the lesion: both kinds are checked above


def test_inspection_images_vary_and_have_masks(tmp_path: Path) -> None:
    summary = make_inspection_archive(tmp_path, count=12, seed=2, rgb_fraction=0.5)
    modes, sizes = set(), set()
    for img_path in sorted(summary.images.glob("*.png")):
        with Image.open(img_path) as img:
            modes.add(img.mode)
            sizes.add(img.size)
            mask = np.asarray(Image.open(summary.labels / img_path.name))
            assert mask.shape == (img.size[1], img.size[0])
    assert modes == {"L", "RGB"}
    assert len(sizes) > 3
    assert summary.n_foreground > 0


def test_instance_archive_is_deterministic(tmp_path: Path) -> None:
    a = make_instance_archive(tmp_path / "a", count=3, size=64, seed=4)
    make_instance_archive(tmp_path / "b", count=3, size=64, seed=4)
    make_instance_archive(tmp_path / "c", count=3, size=64, seed=5)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert len(_digest(tmp_path / "a")) == 3 * 3 + 1  # images, instances, classes + annotations.json
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    assert (a.images, a.instances, a.classes) == tuple(tmp_path / "a" / d for d in ("images", "instances", "classes"))
    assert a.annotations == tmp_path / "a" / "annotations.json" and a.class_names == ("cell", "rod")


def test_instance_scenes_overlap_touch_and_show_both_classes(tmp_path: Path) -> None:
    summary = make_instance_archive(tmp_path, count=10, seed=1)
    intensity = {0: [], 1: [], 2: []}
    for path in sorted(summary.instances.glob("*.png")):
        with Image.open(path) as img:
            assert img.mode == "I;16"  # uint16 instance ids
            ids = np.asarray(img)
        classes = np.asarray(Image.open(summary.classes / path.name))
        image = np.asarray(Image.open(summary.images / path.name))
        assert image.dtype == np.uint8 and image.shape == ids.shape == classes.shape == (128, 128)
        n = int(ids.max())
        assert 3 <= n <= 8 and set(np.unique(ids).tolist()) == set(range(n + 1))  # every object visible
        assert set(np.unique(classes[ids > 0]).tolist()) == {1, 2}
        assert _touching_pairs(ids), f"{path.name}: no two objects touch"
        for c, values in intensity.items():
            values.append(image[classes == c])
    means = {c: float(np.concatenate(v).mean()) for c, v in intensity.items()}
    assert means[2] + 20 < means[0] < means[1] - 20  # dark rods, mid background, bright cells
    assert summary.n_instances == len(json.loads(summary.annotations.read_text())["annotations"])


def test_instance_scene_draws_the_second_object_over_the_first() -> None:
    for i in range(20):
        scene = _instance_scene(np.random.default_rng([0, i]), 96, 3)
        assert len(scene.shapes) >= 2 and (scene.shapes[0] & scene.shapes[1]).any()
        hidden = scene.shapes[0] & scene.shapes[1]
        assert not (scene.ids[hidden] == 1).any()  # the later object is on top
        for k, shape in enumerate(scene.shapes, start=1):
            assert (scene.ids == k).sum() >= 0.5 * shape.sum()  # at most half of any object is hidden


def _touching_pairs(ids: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of different instances that are 4-neighbours somewhere."""
    pairs = set()
    for a, b in ((ids[:, :-1], ids[:, 1:]), (ids[:-1, :], ids[1:, :])):
        touch = (a != b) & (a > 0) & (b > 0)
        pairs |= {tuple(sorted(p)) for p in zip(a[touch].tolist(), b[touch].tolist())}
    return pairs


def test_coco_json_and_instance_pngs_describe_the_same_instances(tmp_path: Path) -> None:
    summary = make_instance_archive(tmp_path, count=6, size=96, seed=2, classes=3)
    coco = json.loads(summary.annotations.read_text())
    assert [c["name"] for c in coco["categories"]] == ["cell", "rod", "ring"]
    assert all(a["iscrowd"] == 0 and a["area"] > 0 and len(a["bbox"]) == 4 for a in coco["annotations"])
    coco_spec = CocoLabels(kind="coco", path=summary.annotations, instances=True)
    png_spec = InstancePngLabels(
        kind="instance-png", path=tmp_path, pattern="instances/{rel_stem}.png", classes_pattern="classes/{rel_stem}.png"
    )
    source = ImageSource(kind="images", path=summary.images)
    from_coco, from_png = build_resolver(coco_spec), build_resolver(png_spec)
    uris: dict[str, set[str]] = {"coco": set(), "png": set()}
    for path in sorted(summary.images.glob("*.png")):
        (record,) = decode_file(str(path), path.name, source)  # no labels: the image alone
        (coco_row,) = decode_file(str(path), path.name, source.model_copy(update={"labels": coco_spec}), from_coco)
        (png_row,) = decode_file(str(path), path.name, source.model_copy(update={"labels": png_spec}), from_png)
        assert coco_row["label"].dtype == png_row["label"].dtype == np.int32
        np.testing.assert_array_equal(coco_row["label"], png_row["label"])
        np.testing.assert_array_equal(class_map(png_row["label"]), np.asarray(Image.open(summary.classes / path.name)))
        image_id = int(coco_row["label_uri"].rsplit("=", 1)[1])
        anns = [a for a in coco["annotations"] if a["image_id"] == image_id]
        ids = np.asarray(Image.open(summary.instances / path.name))
        assert len(anns) == ids.max() >= 3
        for k, ann in enumerate(sorted(anns, key=lambda a: a["id"]), start=1):
            ys, xs = np.nonzero(ids == k)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert ann["area"] == len(xs)
        uris["coco"].add(coco_row["label_uri"])
        uris["png"].add(png_row["label_uri"])
        assert record["image"].shape == (1, 96, 96)
    assert from_coco.all_label_keys() == uris["coco"] and from_png.all_label_keys() == uris["png"]
    classes_seen = {int(c) for c in np.unique([a["category_id"] for a in coco["annotations"]])}
    assert classes_seen == {1, 2, 3}
