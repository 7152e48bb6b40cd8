"""Volume files cut in a named plane (``VolumeSource.slice_plane``): which axes, the records' geometry
and labels, and the plane ``segops plan`` chooses from the files' headers."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segops.config.schema import VolumeSource
from segops.data.census import header_row
from segops.data.decode import decode_file, list_source_files
from segops.data.records import STATUS_OK
from segops.data.series import RAS_TO_LPS, pixel_to_patient, slice_normal
from segops.data.slice_planes import FILE_ORDER, plan_slice_plane, plane_axes, plane_of, to_file_order
from segops.data.volume_layout import planned_slice_plane

# KiTS' storage: i runs foot to head... here head to foot (3 mm), j back to front, k right to left (0.8 mm)
KITS = np.array([[0.0, 0.0, -0.8, 40.0], [0.0, -0.8, 0.0, 30.0], [-3.0, 0.0, 0.0, 90.0], [0.0, 0.0, 0.0, 1.0]])
# the usual NIfTI storage: i right to left, j back to front, k foot to head (3 mm)
USUAL = np.diag([-0.8, -0.8, 3.0, 1.0])


def _rows(folder: Path, plane: str, labels: bool = False) -> list[dict]:
    spec = {"kind": "volumes", "path": str(folder), "slice_plane": plane}
    if labels:
        spec["labels"] = {"kind": "volume", "path": str(folder), "pattern": "{rel_dir}/segmentation.nii.gz"}
    source = VolumeSource.model_validate(spec)
    return [row for f in list_source_files(source) for row in decode_file(f["path"], f["rel_path"], source)]


def test_plane_axes_pick_the_axis_across_each_plane_and_keep_pictures_upright() -> None:
    lps = RAS_TO_LPS @ KITS
    assert plane_axes(lps, "axial") == (2, 1, 0)  # slices along i (foot-head); columns along k (left-right)
    assert plane_axes(lps, "coronal") == (2, 0, 1)  # slices along j (back-front); columns left-right
    assert plane_axes(lps, "sagittal") == (1, 0, 2)  # slices along k (left-right); columns back-front
    assert plane_axes(lps, "file") == FILE_ORDER
    assert plane_axes(lps, "axial", shape=(1, 64, 64)) == FILE_ORDER  # one picture: cut as stored
    assert plane_axes(RAS_TO_LPS @ USUAL, "axial") == FILE_ORDER


def test_an_axial_cut_of_a_kits_file_gives_axial_slices_with_their_labels(tmp_path: Path) -> None:
    data = np.random.default_rng(0).normal(0, 100, size=(5, 6, 4)).astype(np.float32)
    label = np.zeros(data.shape, np.uint8)
    label[1:3, 2:5, 1:3] = 1
    case = tmp_path / "case_00000"
    case.mkdir()
    nib.save(nib.Nifti1Image(data, KITS), case / "imaging.nii.gz")
    nib.save(nib.Nifti1Image(label, KITS), case / "segmentation.nii.gz")

    rows = _rows(tmp_path, "axial", labels=True)
    assert [r["status"] for r in rows] == [STATUS_OK] * 5 and [r["frame"] for r in rows] == list(range(5))
    lps = RAS_TO_LPS @ KITS
    for i, r in enumerate(rows):
        assert r["image"].shape == (1, 6, 4) and r["file_axes"] == [2, 1, 0]  # rows along j, columns along k
        assert (r["spacing_y"], r["spacing_x"]) == pytest.approx((0.8, 0.8))
        assert abs(slice_normal(r["orientation"])[2]) == pytest.approx(1.0)  # axial: the normal is foot-head
        assert np.array_equal(r["image"][0], data[i]) and np.array_equal(r["label"], label[i])
        for j, k in [(0, 0), (5, 3), (2, 1)]:
            at = pixel_to_patient(np.array([[j, k]]), r["position"], r["orientation"], (r["spacing_y"], r["spacing_x"]))
            assert at[0] == pytest.approx((lps @ [i, j, k, 1.0])[:3], abs=1e-4)

    file_rows = _rows(tmp_path, "file", labels=True)  # the default: along k, sagittal here
    assert len(file_rows) == 4 and file_rows[0]["image"].shape == (1, 6, 5) and file_rows[0]["file_axes"] == [0, 1, 2]
    source = VolumeSource(kind="volumes", path=tmp_path, slice_plane="axial")
    header = header_row(str(case / "imaging.nii.gz"), "case_00000/imaging.nii.gz", source)  # the census's row
    assert (header["height"], header["width"], header["frames"]) == (6, 4, 5)


def test_to_file_order_undoes_the_cut() -> None:
    volume = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    affine = RAS_TO_LPS @ KITS
    for axes in [(2, 1, 0), (2, 0, 1), (1, 0, 2)]:
        cut = np.transpose(volume, axes)
        cut_affine = affine.copy()
        cut_affine[:3, :3] = affine[:3, list(axes)]
        back, back_affine = to_file_order(cut, cut_affine, axes)
        assert np.array_equal(back, volume) and np.allclose(back_affine, affine)
    assert to_file_order(volume, affine, ())[0] is volume


def test_the_plan_cuts_across_the_coarsest_axis_only_where_files_do_not() -> None:
    kits = [((3.0, 0.8, 0.8), RAS_TO_LPS @ KITS)] * 3
    usual = [((0.8, 0.8, 3.0), RAS_TO_LPS @ USUAL)] * 3
    plane, why = plan_slice_plane(kits)
    assert plane == "axial"
    assert why.startswith("3 of 3 sampled case(s) are not stored with their foot-head axis third")
    assert "median spacing 3 mm foot-head against 0.8 mm" in why
    assert plan_slice_plane(usual) is None
    assert plan_slice_plane(kits[:1] + usual)[0] == "axial"  # mixed storage: one plane for every case
    thin = [((0.5, 0.8, 0.8), RAS_TO_LPS @ KITS)] + kits[:1] + usual  # a thin-slice case does not decide alone
    assert plan_slice_plane(thin)[0] == "axial"
    # unit voxels along KiTS' axes: i foot-head, j back-front, k left-right
    iso_kits = [((1.0, 1.0, 1.0), np.array([[0, 0, 1.0, 0], [0, 1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1]]))]
    assert plan_slice_plane(iso_kits * 2) is None  # isotropic, one storage order: as stored
    iso_usual = [((1.0, 1.0, 1.0), np.eye(4))]
    assert plan_slice_plane(iso_kits + iso_usual)[0] == "axial"  # isotropic, mixed orders: axial
    # a knee MR of thick sagittal slices stored third: i back-front, j foot-head, k left-right (4 mm)
    sagittal = np.array([[0, 0, 4.0, 0], [0.5, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 0, 1]])
    assert plan_slice_plane([((0.5, 0.5, 4.0), sagittal)] * 2) is None


def test_planned_slice_plane_reads_the_headers_and_leaves_out_what_it_cannot(tmp_path: Path) -> None:
    paths = []
    for n in range(3):
        path = tmp_path / f"case_{n}.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((6, 8, 8), np.float32), KITS), path)
        paths.append(str(path))
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    nib.save(nib.Nifti1Image(np.zeros((1, 8, 8), np.float32), KITS), tmp_path / "one_slice.nii.gz")
    found = planned_slice_plane([*paths, str(tmp_path / "broken.nii.gz"), str(tmp_path / "one_slice.nii.gz")])
    assert found is not None and found[0] == "axial" and found[1].startswith("3 of 3 sampled")


def test_plane_of_names_the_plane_a_slice_lies_in() -> None:
    assert plane_of([1, 0, 0, 0, 1, 0]) == "axial"  # rows along x, columns along y: normal z
    assert plane_of([1, 0, 0, 0, 0, -1]) == "coronal"
    assert plane_of([0, 1, 0, 0, 0, -1]) == "sagittal"
    tilted = np.radians(20.0)  # a gantry tilt of 20 degrees is still axial; 45 is oblique
    assert plane_of([1, 0, 0, 0, np.cos(tilted), np.sin(tilted)]) == "axial"
    assert plane_of([1, 0, 0, 0, np.cos(np.pi / 4), np.sin(np.pi / 4)]) == "oblique"
    assert plane_of([]) == "" and plane_of(None) == ""


def test_the_fingerprint_counts_the_planes_its_slices_lie_in(tmp_path: Path) -> None:
    """A model trained on axial cuts of KiTS files keeps ``planes`` in its fingerprint; the same
    files cut as stored are sagittal slices, which the drift check's census then names."""
    import pickle

    from segops.cluster.fingerprint import _stats_batch
    from segops.config.steps import DriftSpec
    from segops.data.drift import compare
    from segops.data.fingerprint import FingerprintAccumulator
    from segops.data.records import META_COLUMNS, PIXEL_COLUMNS

    nib.save(nib.Nifti1Image(np.zeros((5, 6, 4), np.float32), KITS), tmp_path / "imaging.nii.gz")
    prints = {}
    for plane in ("axial", "file"):
        rows = _rows(tmp_path, plane)
        batch = {c: np.array([r[c] for r in rows] + [None], dtype=object)[:-1] for c in (*META_COLUMNS, *PIXEL_COLUMNS)}
        acc = FingerprintAccumulator()
        for blob in _stats_batch(batch, "semantic", 8, 0)["stats"]:
            row = pickle.loads(blob)
            meta = row.pop("meta")
            acc.add(
                row,
                meta["group_id"],
                meta["modality"],
                plane=meta["plane"],
                spacing_known=meta["spacing_known"] == "True",
            )
        prints[plane] = acc.result()
    assert prints["axial"].planes == {"axial": 5} and prints["file"].planes == {"sagittal": 4}
    assert prints["axial"].spacing_known == 5  # a volume file's affine gives every slice's spacing
    row = compare(prints["axial"], prints["file"], DriftSpec()).row("slice plane")
    assert row.moved and row.distance == 1.0 and (row.train, row.new) == ("axial 100%", "sagittal 100%")


def test_trained_plane_needs_nearly_every_training_slice_in_one_plane() -> None:
    from segops.data.slice_planes import trained_plane

    assert trained_plane({"axial": 95, "oblique": 5}) == "axial"
    assert trained_plane({"axial": 94, "sagittal": 6}) is None
    assert trained_plane({"": 40}) is None and trained_plane({}) is None
    assert trained_plane({"oblique": 10}) is None
