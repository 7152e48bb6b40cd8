"""DICOM series labelled by label volumes (a NIfTI per series, as ITK-SNAP and 3D Slicer save one):
each slice's label is the volume read at the slice's pixel centres (no Ray)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from segops.config.schema import DicomSource
from segops.data.decode import decode_file, list_source_files
from segops.data.records import STATUS_OK
from segops.synth import make_ct_archive

RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _archive(root: Path) -> tuple[dict[str, list[dict]], dict[str, np.ndarray]]:
    """Two synthetic CT series (DICOM) and, per series, its slices' masks stacked as (I, J, K) =
    (column, row, slice) with the LPS affine of the series' voxel grid."""
    make_ct_archive(root, series=2, slices=4, seed=7)
    source = DicomSource.model_validate({"kind": "dicom", "path": str(root / "images")})
    rows: dict[str, list[dict]] = {}
    for f in list_source_files(source):
        rows.setdefault(f["rel_path"].split("/")[0], []).extend(decode_file(f["path"], f["rel_path"], source))
    stacks = {}
    for series, slices in rows.items():
        slices.sort(key=lambda r: r["position"][2])
        first = slices[0]
        row_dir, col_dir = np.asarray(first["orientation"][:3]), np.asarray(first["orientation"][3:])
        step = np.asarray(slices[1]["position"]) - np.asarray(first["position"])
        affine = np.eye(4)
        affine[:3, 0] = row_dir * first["spacing_x"]  # i: one column to the right
        affine[:3, 1] = col_dir * first["spacing_y"]  # j: one row down
        affine[:3, 2] = step
        affine[:3, 3] = first["position"]
        masks = [
            np.asarray(Image.open(root / "labels" / series / Path(r["rel_path"]).name.replace(".dcm", ".png")))
            for r in slices
        ]
        stacks[series] = (np.stack([(m > 0).astype(np.uint8).T for m in masks], axis=-1), affine)
    return rows, stacks


def _save(path: Path, array: np.ndarray, affine_lps: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, RAS_FROM_LPS @ affine_lps), path)


def _decode(root: Path, labels: dict) -> dict[str, dict]:
    source = DicomSource.model_validate({"kind": "dicom", "path": str(root / "images"), "labels": labels})
    files = list_source_files(source)
    return {f["rel_path"]: row for f in files for row in decode_file(f["path"], f["rel_path"], source)}


def test_each_slice_takes_its_plane_of_the_series_label_volume(tmp_path: Path) -> None:
    rows, stacks = _archive(tmp_path)
    for series, (stack, affine) in stacks.items():
        _save(tmp_path / "seg" / f"{series}.nii.gz", stack, affine)
    labels = {"kind": "volume", "path": str(tmp_path / "seg"), "pattern": "{case}.nii.gz"}
    decoded = _decode(tmp_path, labels)
    assert len(decoded) == 8 and all(r["status"] == STATUS_OK and r["has_label"] for r in decoded.values())
    for series, slices in rows.items():
        stack = stacks[series][0]
        for k, r in enumerate(slices):
            got = decoded[r["rel_path"]]
            assert got["label_uri"] == str((tmp_path / "seg" / f"{series}.nii.gz").resolve())
            assert np.array_equal(got["label"], stack[:, :, k].T)
    assert sum(int(r["label"].sum()) for r in decoded.values()) > 0  # the synthetic lesions are there


def test_a_cropped_label_is_placed_and_an_off_grid_one_is_refused_or_resampled(tmp_path: Path) -> None:
    rows, stacks = _archive(tmp_path)
    stack, affine = stacks["series-000"]
    block = stack[10:, 5:, 1:3]  # 3D Slicer: only the voxels the segments cover
    moved = affine.copy()
    moved[:3, 3] = (affine @ [10, 5, 1, 1.0])[:3]
    _save(tmp_path / "seg" / "series-000.nii.gz", block, moved)
    labels = {"kind": "volume", "path": str(tmp_path / "seg"), "pattern": "{case}.nii.gz"}
    decoded = _decode(tmp_path, labels)
    expected = np.zeros_like(stack)
    expected[10:, 5:, 1:3] = block
    for k, r in enumerate(rows["series-000"]):
        assert np.array_equal(decoded[r["rel_path"]]["label"], expected[:, :, k].T)
    assert not any(decoded[r["rel_path"]]["has_label"] for r in rows["series-001"])  # no file: unlabelled

    shifted = affine.copy()
    shifted[:3, 3] += affine[:3, 0] * 0.5  # half a column off the slices' pixel centres
    _save(tmp_path / "seg" / "series-000.nii.gz", stack, shifted)
    refused = _decode(tmp_path, labels)[rows["series-000"][0]["rel_path"]]
    assert refused["status"] == STATUS_OK and not refused["has_label"] and refused["stage"] == "label"
    assert "does not share the voxel grid" in refused["error"] and "resample: true" in refused["error"]
    resampled = _decode(tmp_path, {**labels, "resample": True})
    assert all(resampled[r["rel_path"]]["has_label"] for r in rows["series-000"])


def test_volume_labels_with_structures_are_refused_on_a_dicom_source() -> None:
    labels = {"kind": "volume", "path": "/y", "pattern": "{case}/{structure}.nii.gz", "structures": {"a": 1}}
    with pytest.raises(ValueError, match="structures .* are read for volume sources only"):
        DicomSource.model_validate({"kind": "dicom", "path": "/x", "labels": labels})


def test_plan_pairs_case_folders_with_label_volumes_by_case_number(tmp_path: Path) -> None:
    """NIH Pancreas-CT: ``Pancreas-CT/PANCREAS_0001/<study>/<series>/*.dcm`` with the labels apart,
    ``labels/label0001.nii.gz``."""
    import shutil

    from segops.data.pairing import detect

    rows, stacks = _archive(tmp_path / "synth")
    root = tmp_path / "data"
    for n, (series, (stack, affine)) in enumerate(sorted(stacks.items()), start=1):
        shutil.copytree(tmp_path / "synth" / "images" / series, root / "Pancreas-CT" / f"PANCREAS_{n:04d}" / "s" / "1")
        _save(root / "labels" / f"label{n:04d}.nii.gz", stack, affine)
    d = detect(root)
    assert d.source["kind"] == "dicom" and d.source["path"] == str(root / "Pancreas-CT")
    assert d.source["labels"] == {
        "kind": "volume",
        "path": str(root),
        "pattern": "labels/label{case_number}.nii.gz",
    }
    assert (d.n_images, d.n_paired, d.classes) == (2, 2, 2)
    source = DicomSource.model_validate(d.source)
    rel = "PANCREAS_0002/s/1/" + Path(rows["series-001"][2]["rel_path"]).name
    (row,) = decode_file(str(root / "Pancreas-CT" / rel), rel, source)
    assert row["label_uri"] == str(root / "labels" / "label0002.nii.gz")
    assert np.array_equal(row["label"], stacks["series-001"][0][:, :, 2].T)
