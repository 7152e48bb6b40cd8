"""Binary masks in a folder per class (Montgomery's ``leftMask/`` + ``rightMask/``): planned as
``class_files``, read as one class map; another reader's masks of the same structure are not classes."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from segops.config.schema import MaskPngLabels
from segops.data.class_folders import class_folders
from segops.data.images import read_image
from segops.data.labels import build_resolver, mask_file_counts
from segops.data.pairing import detect
from segops.errors import LabelError

H, W = 24, 32


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _lungs(i: int) -> tuple[np.ndarray, np.ndarray]:
    left, right = np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint8)
    left[4 : 18 + i % 3, 2:12] = 255
    right[5 : 19 - i % 2, 18:30] = 255
    return left, right


def _montgomery(root: Path, n: int = 6) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        name = f"MCUCXR_{i:04d}_{i % 2}.png"
        _save(root / "CXR_png" / name, rng.integers(0, 200, (H, W), dtype=np.uint8))
        left, right = _lungs(i)
        _save(root / "ManualMask" / "leftMask" / name, left)
        _save(root / "ManualMask" / "rightMask" / name, right)
    (root / "ClinicalReadings").mkdir()
    (root / "ClinicalReadings" / "MCUCXR_0000_0.txt").write_text("Patient's Sex: M\n")


def test_a_folder_per_class_is_planned_as_class_files_named_by_their_folders(tmp_path: Path) -> None:
    _montgomery(tmp_path)
    d = detect(tmp_path)
    labels = d.source["labels"]
    assert labels["pattern"] == "{rel_dir}/leftMask/{stem}.png"
    assert labels["class_files"] == {"{rel_dir}/rightMask/{stem}.png": 2}
    assert d.classes == 3 and d.class_names == {1: "leftMask", 2: "rightMask"}
    assert (
        d.mask_kind == "binary, a folder per class" and "a folder per class: leftMask, rightMask" in d.notes["labels"]
    )
    # without the rightMask folder: one class, as before
    for f in (tmp_path / "ManualMask" / "rightMask").iterdir():
        f.unlink()
    d = detect(tmp_path)
    assert "class_files" not in d.source["labels"] and d.classes == 2 and d.class_names == {}


def test_another_readers_masks_of_the_same_structure_are_no_class(tmp_path: Path) -> None:
    """DRIVE's and CHASE's second observer: the same vessels drawn again, a few pixels apart."""
    rng = np.random.default_rng(1)
    for i in range(5):
        _save(tmp_path / "images" / f"{i}.png", rng.integers(0, 200, (H, W), dtype=np.uint8))
        first, _ = _lungs(i)
        second = first.copy()
        second[4, 2:12] = 0  # one row fewer
        _save(tmp_path / "masks" / "1st_manual" / f"{i}.png", first)
        _save(tmp_path / "masks" / "2nd_manual" / f"{i}.png", second)
    found = class_folders(tmp_path / "masks", "1st_manual/{rel_stem}.png", [f"{i}.png" for i in range(5)])
    assert found is not None and found.class_files == {} and found.readers == ["2nd_manual"]
    assert "2nd_manual hold masks of the same region as 1st_manual" in found.note
    d = detect(tmp_path)
    assert "class_files" not in d.source["labels"] and d.classes == 2
    assert "2nd_manual hold masks of the same region" in d.notes["labels"]


def test_class_files_read_as_one_class_map_later_files_on_top(tmp_path: Path) -> None:
    _montgomery(tmp_path, n=2)
    left, right = _lungs(0)
    heart = np.zeros((H, W), np.uint8)
    heart[10:16, 8:22] = 1  # 0/1, over both lungs' edges
    _save(tmp_path / "ManualMask" / "heart" / "MCUCXR_0000_0.png", heart)
    spec = MaskPngLabels(
        kind="mask-png",
        path=tmp_path / "ManualMask",
        pattern="leftMask/{rel_stem}.png",
        class_files={"rightMask/{rel_stem}.png": 2, "heart/{rel_stem}.png": 3},
    )
    resolver = build_resolver(spec)
    (record,) = read_image(tmp_path / "CXR_png" / "MCUCXR_0000_0.png", "MCUCXR_0000_0.png")
    label, uri = resolver.label_for(record)
    expected = np.zeros((H, W), np.uint8)
    expected[left > 0], expected[right > 0], expected[heart > 0] = 1, 2, 3
    np.testing.assert_array_equal(label, expected)
    assert uri.endswith("leftMask/MCUCXR_0000_0.png")
    # the label census without the image sees the same classes
    _, values, pixels = mask_file_counts(spec, "MCUCXR_0000_0.png")
    assert values == [0, 1, 2, 3] and pixels == [int((expected == k).sum()) for k in range(4)]
    # the second image has no heart file: that class is absent, the others read
    (second,) = read_image(tmp_path / "CXR_png" / "MCUCXR_0001_1.png", "MCUCXR_0001_1.png")
    assert sorted(np.unique(resolver.label_for(second)[0])) == [0, 1, 2]
    # a class file of another size is the image's label problem, naming that file
    _save(tmp_path / "ManualMask" / "heart" / "MCUCXR_0001_1.png", np.zeros((H, W + 1), np.uint8))
    with pytest.raises(LabelError, match="33x24 but its image is 32x24") as err:
        resolver.label_for(second)
    assert err.value.label_uri.endswith("heart/MCUCXR_0001_1.png")


def test_class_files_settings_are_checked() -> None:
    with pytest.raises(ValidationError, match="class_files repeats pattern"):
        MaskPngLabels(kind="mask-png", path="m", pattern="a/{stem}.png", class_files={"a/{stem}.png": 2})
    with pytest.raises(ValidationError, match="greater than or equal to 2"):
        MaskPngLabels(kind="mask-png", path="m", pattern="a/{stem}.png", class_files={"b/{stem}.png": 1})
