"""Mask-kind guesses from stored values: regions numbered per mask (VisA) against classes that lie
side by side or nested, and the plan of a VisA-layout folder."""

from pathlib import Path

import numpy as np
from PIL import Image

from segops.data.detection import PlanOverrides
from segops.data.mask_kinds import classify_masks, mask_census
from segops.data.pairing import detect

YY, XX = np.mgrid[:60, :80]


def _disc(cy: int, cx: int, r: int) -> np.ndarray:
    return (YY - cy) ** 2 + (XX - cx) ** 2 < r * r


def _save(folder: Path, masks: list[np.ndarray]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, m in enumerate(masks):
        paths.append(folder / f"{i:03d}.png")
        Image.fromarray(m.astype(np.uint8)).save(paths[-1])
    return paths


def _numbered_defects(n: int = 12) -> list[np.ndarray]:
    """VisA's ``Masks/Anomaly``: a part's first listed defect stored as 1, a second as 2, apart."""
    masks = []
    for i in range(n):
        m = np.zeros((60, 80), np.uint8)
        m[_disc(15 + i % 3, 15 + 2 * i, 6)] = 1
        if i % 3 == 0:
            m[_disc(45, 60 - i, 5)] = 2
        masks.append(m)
    return masks


def test_regions_numbered_per_mask_are_one_foreground_class(tmp_path: Path) -> None:
    census = mask_census(_save(tmp_path / "visa", _numbered_defects()))
    assert census.id_single_share == 8 / 12 and census.touching_share == 0.0
    fields, task, classes, kind, why = classify_masks(census)
    assert (fields, task, classes, kind) == ({"kind": "mask-png", "threshold": 1}, "semantic", 2, "binary")
    assert "number each mask's regions" in why
    # the user's --task instance keeps each region apart
    assert classify_masks(census, task="instance")[:3] == ({"kind": "instance-png"}, "instance", 2)


def test_nested_or_adjacent_classes_stay_classes(tmp_path: Path) -> None:
    """A lesion inside its organ (liver 1, tumour 2): 2 only where 1 is, as numbered regions are, but
    touching it; and two structures in every mask (lungs 1, heart 2) apart from each other: no mask
    with one region, so the two stay classes."""
    nested = []
    for i in range(12):
        m = np.zeros((60, 80), np.uint8)
        m[_disc(30, 40, 20)] = 1
        if i % 3 == 0:
            m[_disc(30 + i % 5, 40, 6)] = 2
        nested.append(m)
    fields, task, classes, kind, _ = classify_masks(mask_census(_save(tmp_path / "liver", nested)))
    assert (fields, task, classes, kind) == ({"kind": "mask-png"}, "semantic", 3, "multi-class")
    both = [np.where(_disc(30, 20, 10), 1, np.where(_disc(30, 60, 8 + i % 3), 2, 0)) for i in range(10)]
    fields, task, classes, kind, _ = classify_masks(mask_census(_save(tmp_path / "chest", both)))
    assert (fields, task, classes, kind) == ({"kind": "mask-png"}, "semantic", 3, "multi-class")


def test_numbers_varying_per_mask_are_objects_or_regions_and_classes_when_the_user_says_semantic(
    tmp_path: Path,
) -> None:
    """1..k per mask, k from 1 to 4: PennFudan's pedestrians (one blob each) are objects; numbers
    each covering several blobs (a defect kind drawn in two places, as VisA's can be) are one
    foreground class; the user's ``--task semantic`` keeps the numbers as classes (vertebrae
    numbered in order are)."""
    blobs, split = [], []
    for i in range(12):
        m = np.zeros((60, 80), np.uint8)
        for k in range(1 + i % 4):
            m[10:50, 4 + 19 * k : 14 + 19 * k] = k + 1
        blobs.append(m)
        two = m.copy()
        two[25:35] = 0  # every region cut in two
        split.append(two)
    census = mask_census(_save(tmp_path / "peds", blobs))
    assert classify_masks(census)[1:3] == ("instance", 2)
    assert classify_masks(census, task="semantic")[:4] == ({"kind": "mask-png"}, "semantic", 5, "multi-class")
    census = mask_census(_save(tmp_path / "kinds", split))
    assert census.blob_share == 0.0 and census.id_single_share == 0.25
    assert classify_masks(census)[:4] == ({"kind": "mask-png", "threshold": 1}, "semantic", 2, "binary")


def test_a_visa_root_plans_one_category_binary_with_its_normal_parts_empty(tmp_path: Path) -> None:
    """VisA: ``<category>/Data/Images/{Anomaly,Normal}/*.JPG``, ``<category>/Data/Masks/Anomaly/*.png``
    (regions numbered per mask), ``image_anno.csv`` per category and ``split_csv/`` at the root."""
    rng = np.random.default_rng(0)
    for category, normals in (("candle", 8), ("pcb1", 6)):
        data = tmp_path / category / "Data"
        _save(data / "Masks" / "Anomaly", _numbered_defects(9))
        for folder, count in (("Anomaly", 9), ("Normal", normals)):
            (data / "Images" / folder).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(data / "Images" / folder / f"{i:03d}.JPG", quality=90)
        (tmp_path / category / "image_anno.csv").write_text("image,label,mask\n")
    (tmp_path / "split_csv").mkdir()
    (tmp_path / "split_csv" / "1cls.csv").write_text("object,split,label,image,mask\n")
    found = detect(tmp_path, PlanOverrides())
    labels = found.source["labels"]
    assert found.source["path"] == str(tmp_path / "candle" / "Data" / "Images")
    assert (labels["threshold"], labels["empty_when_missing"], found.classes) == (1, ["Normal/**"], 2)
    assert (found.n_images, found.n_paired) == (17, 17)
    assert "(candle, pcb1): separate datasets" in found.notes["path"]
    assert found.notes["path"].endswith(f"segops plan {tmp_path / 'pcb1'}")
