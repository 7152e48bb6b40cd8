"""Masks told by their contents: a mask folder whose name has no mask word (the Concrete Crack
Segmentation set's ``rgb/`` + ``BW/``), found by ``segops plan`` as ``--labels`` would name it."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segops.data.mask_content import mask_folder_by_content
from segops.data.pairing import detect
from segops.errors import PlanError

H, W = 32, 40


def _crack(i: int) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return ((np.abs(yy - xx + i) < 2) * 255).astype(np.uint8)


def _layout(root: Path, images: str, masks: str, n: int = 6, mask_ext: str = ".jpg") -> None:
    rng = np.random.default_rng(0)
    (root / images).mkdir(parents=True)
    (root / masks).mkdir(parents=True)
    for i in range(n):
        photo = rng.integers(0, 150, (H, W, 3), dtype=np.uint8)
        photo[_crack(i) > 0] += 90
        Image.fromarray(photo).save(root / images / f"{i:05d}.jpg")
        Image.fromarray(_crack(i)).save(root / masks / f"{i:05d}{mask_ext}", quality=75)


def test_a_folder_of_jpeg_masks_named_without_a_mask_word_is_the_mask_folder(tmp_path: Path) -> None:
    _layout(tmp_path, "rgb", "BW")
    masks, why = mask_folder_by_content(
        tmp_path, sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jpg"))
    )
    assert masks == "BW" and why.startswith("BW holds mask-like files (one channel, two values or nearly) under")
    d = detect(tmp_path)
    assert d.pairing == "content" and d.n_paired == 6 and d.mask_kind == "anti-aliased"
    assert d.source["path"] == str(tmp_path / "rgb")
    assert d.source["labels"] | {"threshold": None} == {
        "kind": "mask-png",
        "path": str(tmp_path / "BW"),
        "pattern": "{rel_stem}.jpg",
        "threshold": None,
    }
    assert d.notes["labels"].startswith("content pairing (BW holds mask-like files")


def test_two_folders_of_photos_under_the_same_names_are_no_pairing(tmp_path: Path) -> None:
    _layout(tmp_path, "left", "right")
    for path in (tmp_path / "right").iterdir():  # the second folder: photos too (a stereo pair)
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path)
    with pytest.raises(PlanError, match="no mask for any of them"):
        detect(tmp_path)


def test_masks_beside_their_images_under_an_observers_suffix_pair_by_content(tmp_path: Path) -> None:
    """CHASE_DB1: ``Image_01L.jpg`` with ``Image_01L_1stHO.png`` and ``Image_01L_2ndHO.png``, two
    observers' vessels under a suffix without a mask word. The first observer's are the labels; the
    second's are neither labels nor images (excluded)."""
    rng = np.random.default_rng(2)
    for i in range(1, 5):
        for eye in "LR":
            name = f"Image_{i:02d}{eye}"
            Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(tmp_path / f"{name}.jpg")
            Image.fromarray(_crack(i)).save(tmp_path / f"{name}_1stHO.png")
            Image.fromarray(_crack(i + 1)).save(tmp_path / f"{name}_2ndHO.png")
    d = detect(tmp_path)
    assert d.pairing == "content" and (d.n_images, d.n_paired) == (8, 8)
    assert d.source["labels"] == {"kind": "mask-png", "path": str(tmp_path), "pattern": "{rel_stem}_1stHO.png"}
    assert d.source["exclude"] == ["**/*_2ndHO.png"] and d.notes["exclude"] == "another reader's masks"
    assert "_2ndHO.png too: another reader's masks, left out" in d.notes["labels"]
