"""Instance ids that encode their class (Cityscapes' and KITTI-MOTS' ``instanceIds``: class x 1000 +
object): read, planned with ``--task instance``, and checked."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from segops.config.schema import InstancePngLabels
from segops.data.detection import PlanOverrides
from segops.data.images import read_image
from segops.data.instances import INSTANCE_STRIDE as S
from segops.data.instances import class_coded_ids
from segops.data.labels import build_resolver, mask_file_counts
from segops.data.pairing import detect
from segops.errors import LabelError


def _instance_ids() -> np.ndarray:
    ids = np.full((20, 40), 7, np.uint16)  # road: stuff, no object
    ids[:4] = 23  # sky
    ids[10:14, 2:8] = 26000  # car 0
    ids[10:14, 10:16] = 26001  # car 1
    ids[5:9, 20:24] = 24000  # person 0
    ids[15:19, 30:38] = 26  # a crowd of cars: no object
    return ids


def test_ids_below_the_stride_are_no_object_and_each_id_holds_its_class() -> None:
    ids, classes = class_coded_ids(_instance_ids().astype(np.int64), 1000, None, "x.png")
    assert sorted(np.unique(ids).tolist()) == [0, 24000, 26000, 26001]
    assert classes == {24000: 24, 26000: 26, 26001: 26}
    ids, classes = class_coded_ids(_instance_ids().astype(np.int64), 1000, {24: 0, 26: 1}, "x.png")
    assert classes == {26000: 1, 26001: 1} and 24000 not in ids  # 0 leaves persons out
    with pytest.raises(LabelError, match=r"x.png holds objects of encoded class\(es\) \[24\] .*class_values does not"):
        class_coded_ids(_instance_ids().astype(np.int64), 1000, {26: 1}, "x.png")


def _cityscapes(root: Path, n: int = 4) -> None:
    rng = np.random.default_rng(0)
    for city in ("aachen", "bochum"):
        for j in range(n):
            stem = f"{city}_{j:06d}_000019"
            ids = _instance_ids()
            ids[10:14, 2 + j : 8 + j] = 26000  # differ a little
            (root / "leftImg8bit" / "train" / city).mkdir(parents=True, exist_ok=True)
            (root / "gtFine" / "train" / city).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (20, 40, 3), dtype=np.uint8)).save(
                root / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png"
            )
            labels = np.where(ids >= 1000, ids // 1000, ids).astype(np.uint8)
            Image.fromarray(labels).save(root / "gtFine" / "train" / city / f"{stem}_gtFine_labelIds.png")
            Image.fromarray(ids).save(root / "gtFine" / "train" / city / f"{stem}_gtFine_instanceIds.png")
            Image.fromarray(np.stack([labels] * 3, -1)).save(
                root / "gtFine" / "train" / city / f"{stem}_gtFine_color.png"
            )


def test_cityscapes_is_planned_on_label_ids_and_with_task_instance_on_instance_ids(tmp_path: Path) -> None:
    _cityscapes(tmp_path)
    semantic = detect(tmp_path)
    assert semantic.task == "semantic" and semantic.source["labels"]["replace"] == {"leftImg8bit": "gtFine_labelIds"}
    assert (
        "instance ids in the *gtFine_instanceIds* files beside them: --task instance plans" in semantic.notes["labels"]
    )
    d = detect(tmp_path, PlanOverrides(task="instance"))
    labels = d.source["labels"]
    assert labels["kind"] == "instance-png" and labels["replace"] == {"leftImg8bit": "gtFine_instanceIds"}
    assert labels["class_stride"] == 1000 and labels["class_values"] == {24: 1, 26: 2}
    assert d.task == "instance" and d.classes == 3 and d.n_paired == 8
    assert "class-coded instance ids (class x 1000 + object" in d.notes["labels"]


def test_class_coded_instance_ids_read_as_instance_label_maps(tmp_path: Path) -> None:
    _cityscapes(tmp_path, n=1)
    spec = InstancePngLabels(
        kind="instance-png",
        path=tmp_path / "gtFine",
        pattern="{rel_stem}.png",
        replace={"leftImg8bit": "gtFine_instanceIds"},
        class_stride=1000,
        class_values={24: 1, 26: 2},
    )
    rel = "train/aachen/aachen_000000_000019_leftImg8bit.png"
    (record,) = read_image(tmp_path / "leftImg8bit" / rel, rel)
    label, uri = build_resolver(spec).label_for(record)
    ids = _instance_ids()
    expected = np.zeros(ids.shape, np.int32)  # ids renumbered 1..3 in increasing order: 24000, 26000, 26001
    expected[ids == 24000], expected[ids == 26000], expected[ids == 26001] = 1 * S + 1, 2 * S + 2, 2 * S + 3
    np.testing.assert_array_equal(label, expected)
    assert uri.endswith("aachen_000000_000019_gtFine_instanceIds.png")
    # what the checks before any worker see: the encoded classes, as instance values
    _, values, pixels = mask_file_counts(spec, rel)
    assert values == [1 * S + 1, 2 * S + 1] and pixels == [16, 48]


def test_class_stride_settings_are_checked() -> None:
    with pytest.raises(ValidationError, match="class_stride reads each id's class from the id itself"):
        InstancePngLabels(kind="instance-png", path="m", class_stride=1000, classes_pattern="c/{rel_stem}.png")
    with pytest.raises(ValidationError, match=r"classes_pattern\) or the classes ids encode \(class_stride\)"):
        InstancePngLabels(kind="instance-png", path="m", class_values={26: 1})


def test_mapillary_instances_coded_by_256_are_planned_with_their_stride(tmp_path: Path) -> None:
    """Mapillary Vistas' ``instances/x.png``: 16-bit class x 256 + object (19 x 256 + 3 = 4867 is
    object 3 of class 19), which the Cityscapes stride would read as class 4: the plan finds 256."""
    rng = np.random.default_rng(1)
    for sub in ("images", "instances"):
        (tmp_path / "training" / sub).mkdir(parents=True)
    for j in range(6):
        ids = np.full((20, 40), 13 * 256, np.uint16)  # road, one region
        ids[:4] = 27 * 256  # sky
        for k in range(3):
            ids[10:14, 2 + 10 * k : 8 + 10 * k] = 19 * 256 + k + j  # cars, numbered per image
        ids[5:9, 33:37] = 55 * 256 + 1  # a person
        Image.fromarray(rng.integers(0, 255, (20, 40, 3), dtype=np.uint8)).save(
            tmp_path / "training/images" / f"{j}.jpg"
        )
        Image.fromarray(ids).save(tmp_path / "training/instances" / f"{j}.png")
    d = detect(tmp_path, PlanOverrides(task="instance"))
    labels = d.source["labels"]
    assert labels["kind"] == "instance-png" and labels["class_stride"] == 256
    assert labels["class_values"] == {13: 1, 19: 2, 27: 3, 55: 4} and d.classes == 5
    assert "class-coded instance ids (class x 256 + object, as Mapillary Vistas' instances)" in d.notes["labels"]
