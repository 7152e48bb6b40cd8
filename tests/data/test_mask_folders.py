"""Labels stored as one binary mask file per object in a folder per image (Data Science Bowl 2018's
``<case>/images`` + ``<case>/masks``; ``masks/<stem>/``): reading, listing, planning (no Ray)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segops.config.schema import ImageSource
from segops.data.decode import decode_file, list_source_files
from segops.data.detection import PlanOverrides
from segops.data.instances import INSTANCE_STRIDE as S
from segops.data.instances import split_instances
from segops.data.labels import build_resolver, declared_label_rows
from segops.data.pairing import detect


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _disc(cy: int, cx: int, r: int, value: int = 255, shape=(32, 40)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) * value).astype(np.uint8)


def _dsb(root: Path, cases: int = 3) -> None:
    """``<case>/images/<case>.png`` (RGBA, as the DSB photos are) and ``<case>/masks/<id>.png``: case k
    holds k + 1 discs; case 0's masks are stored 0/1."""
    rng = np.random.default_rng(0)
    for k in range(cases):
        case = root / f"case{k}"
        rgba = np.dstack([rng.integers(0, 60, (32, 40), dtype=np.uint8)] * 3 + [np.full((32, 40), 255, np.uint8)])
        _save(case / "images" / f"case{k}.png", rgba)
        for j in range(k + 1):
            _save(case / "masks" / f"m{j}.png", _disc(6 + 9 * j, 8 + 10 * j, 3, value=1 if k == 0 else 255))


def _source(root: Path, **labels) -> ImageSource:
    spec = {"kind": "mask-folder", "path": str(root), "pattern": "{parent_dir}/masks", **labels}
    return ImageSource.model_validate({"kind": "images", "path": str(root), "labels": spec})


def _labels(source: ImageSource) -> dict[str, np.ndarray | None]:
    resolver = build_resolver(source.labels)
    out = {}
    for f in list_source_files(source):
        (row,) = decode_file(f["path"], f["rel_path"], source, resolver)
        assert row["status"] == "ok", row
        out[f["rel_path"]] = row
    return out


def test_dsb_layout_lists_only_the_images_and_reads_one_instance_per_mask_file(tmp_path: Path) -> None:
    _dsb(tmp_path)
    rows = _labels(_source(tmp_path, instances=True))
    assert sorted(rows) == [f"case{k}/images/case{k}.png" for k in range(3)]  # no mask file is an input
    for k in range(3):
        row = rows[f"case{k}/images/case{k}.png"]
        assert row["label_uri"] == str((tmp_path / f"case{k}" / "masks").resolve())
        masks, classes = split_instances(row["label"])
        assert len(masks) == k + 1 and classes.tolist() == [1] * (k + 1)
        for j, mask in enumerate(masks):  # file order, each disc its own instance, 0/1 and 0/255 alike
            assert np.array_equal(mask, _disc(6 + 9 * j, 8 + 10 * j, 3) > 0)


def test_semantic_union_overlaps_anti_aliased_edges_and_empty_files(tmp_path: Path) -> None:
    case = tmp_path / "c"
    _save(case / "images" / "c.png", np.zeros((32, 40), np.uint8))
    _save(case / "masks" / "a.png", _disc(10, 10, 6))
    _save(case / "masks" / "b.png", _disc(14, 14, 6))  # overlaps a
    soft = _disc(25, 30, 4)
    soft[soft == 0] = 0
    soft[20, 20] = 100  # an anti-aliased speck: below half of the file's 255, not the object
    _save(case / "masks" / "c.png", soft)
    _save(case / "masks" / "empty.png", np.zeros((32, 40), np.uint8))  # no object
    _save(tmp_path / "d" / "images" / "d.png", np.zeros((32, 40), np.uint8))
    (tmp_path / "d" / "masks").mkdir()  # a folder without masks: nothing to segment
    _save(tmp_path / "e" / "images" / "e.png", np.zeros((32, 40), np.uint8))  # no folder: unlabelled

    semantic = _labels(_source(tmp_path, class_id=2))
    union = (_disc(10, 10, 6) | _disc(14, 14, 6) | _disc(25, 30, 4)) > 0
    assert np.array_equal(semantic["c/images/c.png"]["label"], union.astype(np.uint8) * 2)
    assert not semantic["d/images/d.png"]["label"].any() and semantic["d/images/d.png"]["label_uri"]
    assert not semantic["e/images/e.png"]["has_label"]

    instances = _labels(_source(tmp_path, instances=True))["c/images/c.png"]["label"]
    masks, _ = split_instances(instances)
    assert len(masks) == 3  # the empty file is no instance
    assert np.array_equal(masks[1], _disc(14, 14, 6) > 0)  # b, later than a, keeps the shared pixels
    assert np.array_equal(masks[0], (_disc(10, 10, 6) > 0) & ~(_disc(14, 14, 6) > 0))

    with_empty = _labels(_source(tmp_path, empty_when_missing=["e/**"]))
    assert with_empty["e/images/e.png"]["label_uri"] == "empty:e/images/e.png"


def test_a_mask_of_another_size_is_a_label_error_naming_folder_and_file(tmp_path: Path) -> None:
    _save(tmp_path / "c" / "images" / "c.png", np.zeros((32, 40), np.uint8))
    _save(tmp_path / "c" / "masks" / "big.png", np.zeros((40, 40), np.uint8))
    source = _source(tmp_path)
    (f,) = list_source_files(source)
    (row,) = decode_file(f["path"], f["rel_path"], source, build_resolver(source.labels))
    assert row["status"] == "ok" and row["stage"] == "label" and not row["has_label"]  # kept, unlabelled
    assert "mask folder" in row["error"] and "big.png" in row["error"] and "40x40" in row["error"]


def test_label_keys_and_declared_classes(tmp_path: Path) -> None:
    _dsb(tmp_path)
    (tmp_path / "case9" / "masks").mkdir(parents=True)  # no mask file: not a label
    resolver = build_resolver(_source(tmp_path, instances=True, class_id=3).labels)
    keys = resolver.all_label_keys()
    assert keys == {str((tmp_path / f"case{k}" / "masks").resolve()) for k in range(3)}
    rows = declared_label_rows(resolver)
    assert [r["label_values"] for r in rows] == [[3 * S + 1]] * 3


def test_plan_finds_the_dsb_layout(tmp_path: Path) -> None:
    _dsb(tmp_path / "stage1_train", cases=4)
    d = detect(tmp_path / "stage1_train")
    assert (d.pairing, d.task, d.classes, d.n_images, d.n_paired) == ("mask-folder", "instance", 2, 4, 4)
    assert d.source == {
        "kind": "images",
        "path": str(tmp_path / "stage1_train"),
        "labels": {
            "kind": "mask-folder",
            "path": str(tmp_path / "stage1_train"),
            "pattern": "{parent_dir}/masks",
            "instances": True,
        },
    }
    semantic = detect(tmp_path / "stage1_train", PlanOverrides(task="semantic"))
    assert semantic.task == "semantic" and "instances" not in semantic.source["labels"]


@pytest.mark.parametrize("per_image, task", [(1, "semantic"), (3, "instance")])
def test_plan_finds_a_mask_folder_per_image_beside_the_images(tmp_path: Path, per_image: int, task: str) -> None:
    for i in range(3):
        _save(tmp_path / "images" / "sub" / f"p{i}.png", np.zeros((32, 40), np.uint8))
        for j in range(per_image):
            _save(tmp_path / "masks" / "sub" / f"p{i}" / f"{j}.png", _disc(6 + 9 * j, 8, 3))
    d = detect(tmp_path)
    assert (d.pairing, d.task, d.n_images, d.n_paired) == ("mask-folder", task, 3, 3)
    assert d.source["path"] == str(tmp_path / "images")
    assert d.source["labels"]["path"] == str(tmp_path / "masks") and d.source["labels"]["pattern"] == "{rel_stem}"
    source = ImageSource.model_validate(d.source)
    rows = _labels(source)
    assert sorted(rows) == [f"sub/p{i}.png" for i in range(3)]
    assert all(r["label"] is not None and r["label"].any() for r in rows.values())


def test_a_mask_per_image_file_is_not_a_mask_folder_layout(tmp_path: Path) -> None:
    for i in range(3):
        _save(tmp_path / "images" / f"p{i}.png", np.zeros((32, 40), np.uint8))
        _save(tmp_path / "masks" / f"p{i}.png", _disc(10, 10, 4))
    assert detect(tmp_path).source["labels"]["kind"] == "mask-png"


def test_plan_finds_mvtec_loco_masks_and_its_defect_free_folder(tmp_path: Path) -> None:
    """MVTec LOCO AD: ``test/<defect>/000.png`` with ``ground_truth/<defect>/000/*.png`` (one mask per
    defect region), ``test/good`` without masks, ``train/good`` beside ``test/``: the category is read,
    ``train/good`` too, each mask folder found with ``test/`` dropped from the image's path."""
    root = tmp_path / "breakfast_box"
    for defect in ("logical_anomalies", "structural_anomalies"):
        for i in range(2):
            _save(root / "test" / defect / f"{i:03d}.png", np.zeros((32, 40), np.uint8))
            for j in range(i + 1):
                _save(root / "ground_truth" / defect / f"{i:03d}" / f"{j:03d}.png", _disc(8 + 12 * j, 10, 4))
    for i in range(3):
        _save(root / "test" / "good" / f"{i:03d}.png", np.zeros((32, 40), np.uint8))
        _save(root / "train" / "good" / f"{i:03d}.png", np.zeros((32, 40), np.uint8))
    d = detect(tmp_path)
    assert d.source["path"] == str(root) and d.source["exclude"] == ["ground_truth/**"]
    labels = d.source["labels"]
    assert (labels["path"], labels["pattern"]) == (str(root / "ground_truth"), "{rel_stem}")
    assert labels["replace"] == {"test/": ""} and (d.n_images, d.n_paired) == (10, 10)
    assert "4 of 10 images have one" in d.notes["labels"]  # counted over the category, not test/ alone
    assert labels["empty_when_missing"] == ["test/good/**", "train/good/**"]
    rows = _labels(ImageSource.model_validate(d.source))
    assert len(rows) == 10 and all(r["has_label"] for r in rows.values())
    assert not rows["test/good/000.png"]["label"].any() and not rows["train/good/002.png"]["label"].any()
    assert len(split_instances(rows["test/logical_anomalies/001.png"]["label"])[0]) == 2
