"""The rare-defect generator: same-folder image/mask pairs, stray figures, rare defects of very different sizes."""

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from segops.synth import make_defect_archive


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_masks_beside_images_and_stray_figures(tmp_path: Path) -> None:
    summary = make_defect_archive(tmp_path, count=40, seed=1, size=96)
    assert summary.images == summary.labels == tmp_path and summary.n_images == 40
    assert (tmp_path / "README.png").is_file() and (tmp_path / "dataset.jpg").is_file()
    photos = sorted(tmp_path.glob("*/*.jpg"))
    masks = sorted(tmp_path.glob("*/*.png"))
    assert len(photos) == len(masks) == 40
    assert [m.with_suffix(".jpg") for m in masks] == photos  # same folder, same stem
    fractions, edge_values = [], 0
    for jpg in photos:
        image, mask = Image.open(jpg), np.asarray(Image.open(jpg.with_suffix(".png")))
        assert image.mode == "L" and mask.dtype == np.uint8 and mask.shape == (image.height, image.width)
        assert 64 <= min(mask.shape) and max(mask.shape) <= 96
        fractions.append(float((mask >= 128).mean()))
        edge_values += int(((mask > 0) & (mask < 255)).any())
        assert (jpg.parent.name == "free") == (mask.max() == 0)
    defect = [f for f in fractions if f > 0]
    assert summary.n_foreground == len(defect) == 14  # 26 of 40 (65 %) defect-free at this seed
    assert min(defect) < 0.004 and max(defect) > 0.15  # blowholes of ~0.3 % up to uneven regions of ~20 %
    assert edge_values == 14  # every defect mask is anti-aliased


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    make_defect_archive(tmp_path / "a", count=6, seed=3, size=64)
    make_defect_archive(tmp_path / "b", count=6, seed=3, size=64)
    make_defect_archive(tmp_path / "c", count=6, seed=4, size=64)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")
    assert len(_digest(tmp_path / "a")) == 14  # 6 photos, 6 masks, README.png, dataset.jpg
