"""Masks in MATLAB ``.mat`` files (CrackForest's and BSDS500's ``groundTruth``), written here with
scipy, read back as label maps, planned and decoded as a new user's folder would be."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from segops.config.schema import ImageSource, MaskPngLabels
from segops.data.decode import decode_file, list_source_files
from segops.data.mat_masks import read_mat_mask
from segops.data.pairing import detect
from segops.errors import LabelError


def _crack(rng: np.random.Generator, shape=(48, 64)) -> np.ndarray:
    """CrackForest's Segmentation: 1 background, 2 crack (a wandering line)."""
    seg = np.ones(shape, np.uint8)
    y = int(rng.integers(8, shape[0] - 8))
    for x in range(4, shape[1] - 4):
        y = min(max(y + int(rng.integers(-1, 2)), 1), shape[0] - 2)
        seg[y - 1 : y + 1, x] = 2
    return seg


def test_the_segmentation_of_a_groundtruth_struct_or_a_files_one_array_is_the_mask(tmp_path: Path) -> None:
    seg = _crack(np.random.default_rng(0))
    savemat(tmp_path / "cfd.mat", {"groundTruth": {"Segmentation": seg, "Boundaries": seg == 2}})
    np.testing.assert_array_equal(read_mat_mask(tmp_path / "cfd.mat"), seg)
    annotators = np.empty((1, 2), dtype=object)  # BSDS500: a cell array, one struct per annotator
    annotators[0, 0] = {"Segmentation": seg, "Boundaries": seg == 2}
    annotators[0, 1] = {"Segmentation": 3 - seg, "Boundaries": seg == 1}
    savemat(tmp_path / "bsds.mat", {"groundTruth": annotators})
    np.testing.assert_array_equal(read_mat_mask(tmp_path / "bsds.mat"), seg)  # the first annotator's
    savemat(tmp_path / "double.mat", {"mask": (seg == 2).astype(np.float64)})  # MATLAB's default class
    assert read_mat_mask(tmp_path / "double.mat").tolist() == (seg == 2).astype(int).tolist()
    savemat(tmp_path / "logical.mat", {"bw": seg == 2})
    logical = read_mat_mask(tmp_path / "logical.mat")
    assert logical.dtype == np.uint8 and int(logical.sum()) == int((seg == 2).sum())


def test_a_mat_file_without_one_mask_or_not_matlab_is_a_label_error_naming_it(tmp_path: Path) -> None:
    savemat(tmp_path / "two.mat", {"a": np.zeros((4, 4)), "b": np.ones((4, 4)), "note": "x"})
    with pytest.raises(LabelError, match=r"two.mat holds 2 2-D arrays to read as a mask \(variables: a, b, note\)"):
        read_mat_mask(tmp_path / "two.mat")
    savemat(tmp_path / "soft.mat", {"p": np.full((4, 4), 0.5)})  # a probability map is no label map
    with pytest.raises(LabelError, match="holds 0 2-D arrays"):
        read_mat_mask(tmp_path / "soft.mat")
    (tmp_path / "text.mat").write_text("not matlab")
    with pytest.raises(LabelError, match=r"cannot read mask .*text.mat as a MATLAB file"):
        read_mat_mask(tmp_path / "text.mat")


def test_a_crackforest_folder_is_planned_and_decoded_with_its_mat_masks(tmp_path: Path) -> None:
    """CFD's layout: ``image/001.jpg``, ``groundTruth/001.mat`` (1/2), and ``seg/001.seg`` text files."""
    rng = np.random.default_rng(1)
    root = tmp_path / "CrackForest"
    for folder in ("image", "groundTruth", "seg"):
        (root / folder).mkdir(parents=True)
    segs = {}
    for i in range(1, 9):
        seg = segs[i] = _crack(rng)
        image = np.where(seg == 2, 60, rng.normal(140, 8, seg.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(np.stack([image] * 3, -1)).save(root / "image" / f"{i:03d}.jpg")
        savemat(root / "groundTruth" / f"{i:03d}.mat", {"groundTruth": {"Segmentation": seg, "Boundaries": seg == 2}})
        (root / "seg" / f"{i:03d}.seg").write_text("format ascii cr\n")
    detection = detect(root)
    assert detection.source["labels"] == {
        "kind": "mask-png",
        "path": str(root / "groundTruth"),
        "pattern": "{rel_stem}.mat",
        "values": {1: 0, 2: 1},
    }
    assert (detection.pairing, detection.mask_kind, detection.classes) == ("parallel-tree", "binary", 2)
    assert "path" not in detection.notes  # 1/2 masks are labels, not one repeated field of view
    labels = detection.source["labels"]
    source = ImageSource(kind="images", path=root / "image", labels=MaskPngLabels(**labels))
    rows = [r for f in list_source_files(source) for r in decode_file(f["path"], f["rel_path"], source)]
    assert [r["status"] for r in rows] == ["ok"] * 8 and all(r["has_label"] for r in rows)
    first = next(r for r in rows if r["rel_path"] == "001.jpg")
    assert first["label_uri"].endswith("groundTruth/001.mat")
    assert list(first["label_values"]) == [0, 1]  # 1 → background, 2 → the crack, class 1
    assert list(first["label_pixels"]) == [int((segs[1] == 1).sum()), int((segs[1] == 2).sum())]


def test_a_mask_read_from_a_file_object_is_not_taken_for_a_mat_file() -> None:
    """Masks come as file objects from an object store (S3): read as images, as before .mat existed."""
    import io

    from segops.data.array_masks import is_array_mask as is_mat
    from segops.data.mask_files import read_mask_png

    buffer = io.BytesIO()
    Image.fromarray(_square_mask()).save(buffer, format="PNG")
    buffer.seek(0)
    assert not is_mat(buffer) and is_mat("groundTruth/001.MAT")
    assert read_mask_png(buffer, (8, 8)).tolist() == (_square_mask() > 0).astype(int).tolist()


def _square_mask() -> np.ndarray:
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 3:6] = 255
    return mask
