"""Volume sources (NIfTI, NRRD, MHA): slice records in LPS, channels, volume labels, planning."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from pydantic import TypeAdapter

from segops.config.schema import SourceSpec, VolumeSource
from segops.data.census import header_row
from segops.data.decode import decode_file, list_source_files
from segops.data.pairing import detect
from segops.data.records import STATUS_OK, STATUS_QUARANTINED
from segops.data.series import assemble_series, pixel_to_patient
from segops.data.slice_planes import file_order_geometry
from segops.outputs.case_outputs import OutputConfig, write_volume_outputs
from segops.outputs.layout import mirror_stem

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def _affine(columns: np.ndarray, origin: tuple[float, float, float]) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = columns, origin
    return affine


AFFINES = {
    # radiological storage (x flipped: left-handed), anisotropic
    "flipped": _affine(np.diag([-0.7, 0.9, 3.0]), (40.0, -25.0, 12.5)),
    # axes permuted and two flipped: i runs head to foot, k runs posterior to anterior
    "permuted": _affine(np.array([[0, 0, 1.5], [0, -2.0, 0], [-0.8, 0, 0]]), (-5.0, 60.0, 30.0)),
    # oblique: rotated 25° about a tilted axis, anisotropic
    "oblique": _affine(_rotation(np.array([1.0, 2.0, 0.5]), 25.0) @ np.diag([0.6, 1.1, 2.5]), (3.0, -7.0, 100.0)),
}


def _volume(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(100, 20, size=shape).astype(np.float32)


def _source(path: Path, labels: Path | None = None, **label_options: object) -> VolumeSource:
    spec = {"kind": "volumes", "path": str(path)}
    if labels is not None:
        spec["labels"] = {"kind": "volume", "path": str(labels), **label_options}
    return VolumeSource.model_validate(spec)


def _decode(source: VolumeSource) -> list[dict]:
    return [row for f in list_source_files(source) for row in decode_file(f["path"], f["rel_path"], source)]


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_slice_records_carry_the_files_geometry_in_lps(tmp_path: Path, name: str) -> None:
    affine = AFFINES[name]
    data = _volume((5, 6, 4))
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "ct_007.nii.gz")
    rows = _decode(_source(tmp_path))
    assert [r["frame"] for r in rows] == [0, 1, 2, 3] and {r["status"] for r in rows} == {STATUS_OK}
    assert {r["group_id"] for r in rows} == {"ct_007"} and len({r["case_id"] for r in rows}) == 4
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    for r in rows:
        assert r["image"].shape == (1, 6, 5)  # (C, H = J, W = I)
        assert (r["spacing_y"], r["spacing_x"]) == pytest.approx((spacing[1], spacing[0])) and r["spacing_known"]
        lps = RAS_TO_LPS[:3, :3] @ affine[:3, :3]
        assert r["orientation"] == pytest.approx([*(lps[:, 0] / spacing[0]), *(lps[:, 1] / spacing[1])], abs=1e-6)
    for i, j, k in [(0, 0, 0), (4, 5, 3), (2, 1, 2), (3, 5, 1)]:
        r = rows[k]
        at = pixel_to_patient(np.array([[j, i]]), r["position"], r["orientation"], (r["spacing_y"], r["spacing_x"]))
        expected = (RAS_TO_LPS @ affine @ [i, j, k, 1.0])[:3]
        assert at[0] == pytest.approx(expected, abs=1e-4)
        assert r["image"][0, j, i] == data[i, j, k]


@pytest.mark.slow  # ITK loads its modules on first use (~9 s)
def test_nrrd_and_metaimage_read_in_lps(tmp_path: Path) -> None:
    itk = pytest.importorskip("itk")
    data = _volume((3, 5, 4))  # (z, y, x): ITK's array order
    image = itk.image_from_array(data)
    image.SetSpacing([0.5, 0.8, 2.0])
    image.SetOrigin([10.0, -20.0, 30.0])
    image.SetDirection(itk.matrix_from_array(_rotation(np.array([0.0, 0.0, 1.0]), 90.0)))
    for ext in (".nrrd", ".mha", ".mhd"):
        itk.imwrite(image, str(tmp_path / f"scan{ext}"))
    rows = _decode(_source(tmp_path))
    assert sorted({r["transfer_syntax"] for r in rows}) == ["MetaImage", "NRRD"]
    assert len(rows) == 3 * 3 and {r["status"] for r in rows} == {STATUS_OK}
    for r in rows:
        k = r["frame"]
        assert r["image"].shape == (1, 5, 4)
        assert np.array_equal(r["image"][0], data[k])
        expected = image.TransformIndexToPhysicalPoint([3, 2, k])  # ITK's physical space is LPS
        at = pixel_to_patient(np.array([[2, 3]]), r["position"], r["orientation"], (r["spacing_y"], r["spacing_x"]))
        assert at[0] == pytest.approx(list(expected), abs=1e-4)


def test_channel_files_make_one_case_with_channels_in_suffix_order(tmp_path: Path) -> None:
    affine = AFFINES["flipped"]
    for c in (1, 0):
        nib.save(nib.Nifti1Image(np.full((4, 3, 2), 10.0 * (c + 1), np.float32), affine), tmp_path / f"a_{c:04d}.nii")
    nib.save(nib.Nifti1Image(np.ones((4, 3, 2), np.float32), affine), tmp_path / "b_0000.nii.gz")
    source = _source(tmp_path)
    assert [f["rel_path"] for f in list_source_files(source)] == ["a_0000.nii", "b_0000.nii.gz"]
    rows = _decode(source)
    a = [r for r in rows if r["group_id"] == "a"]
    assert len(a) == 2 and a[0]["image"].shape == (2, 3, 4) and a[0]["channels"] == 2
    assert a[0]["image"][:, 0, 0].tolist() == [10.0, 20.0] and a[0]["rel_path"] == "a_0000.nii"
    assert [r["image"].shape[0] for r in rows if r["group_id"] == "b"] == [1, 1]


def test_channels_on_other_grids_or_with_a_gap_are_quarantined(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(_volume((4, 4, 2)), np.eye(4)), tmp_path / "a_0000.nii.gz")
    nib.save(nib.Nifti1Image(_volume((4, 4, 2)), np.diag([1.0, 1.0, 2.0, 1.0])), tmp_path / "a_0001.nii.gz")
    nib.save(nib.Nifti1Image(_volume((4, 4, 2)), np.eye(4)), tmp_path / "b_0000.nii.gz")
    nib.save(nib.Nifti1Image(_volume((4, 4, 2)), np.eye(4)), tmp_path / "b_0002.nii.gz")
    rows = {r["rel_path"]: r for r in _decode(_source(tmp_path))}
    assert {r["status"] for r in rows.values()} == {STATUS_QUARANTINED} and sorted(rows) == [
        "a_0000.nii.gz",
        "b_0000.nii.gz",
    ]
    assert "a_0001.nii.gz is on another grid" in rows["a_0000.nii.gz"]["error"]
    assert "spacing (1, 1, 2) mm" in rows["a_0000.nii.gz"]["error"]
    assert "_0001'] missing" in rows["b_0000.nii.gz"]["error"]


def test_a_corrupt_nifti_is_quarantined_and_the_rest_read(tmp_path: Path) -> None:
    good = nib.Nifti1Image(_volume((4, 4, 3)), np.eye(4))
    nib.save(good, tmp_path / "good.nii.gz")
    (tmp_path / "bad.nii.gz").write_bytes(gzip.compress(good.to_bytes())[:200])  # truncated
    (tmp_path / "noise.nii").write_bytes(b"not a nifti file at all" * 20)
    rows = _decode(_source(tmp_path))
    bad = [r for r in rows if r["status"] != STATUS_OK]
    assert sorted(r["rel_path"] for r in bad) == ["bad.nii.gz", "noise.nii"]
    assert {(r["stage"], r["error_type"]) for r in bad} == {("read", "DecodeError")}
    assert sum(r["status"] == STATUS_OK for r in rows) == 3


def _labelled_case(tmp_path: Path, label: np.ndarray, label_affine: np.ndarray, **options: object) -> list[dict]:
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    nib.save(nib.Nifti1Image(_volume((6, 5, 4)), AFFINES["oblique"]), tmp_path / "imagesTr" / "liver_3_0000.nii.gz")
    nib.save(nib.Nifti1Image(label, label_affine), tmp_path / "labelsTr" / "liver_3.nii.gz")
    return _decode(_source(tmp_path / "imagesTr", tmp_path / "labelsTr", **options))


def test_a_label_on_the_image_grid_is_sliced_with_it(tmp_path: Path) -> None:
    label = np.zeros((6, 5, 4), np.uint16)
    label[1:4, 2:5, 1:3] = 2
    rows = _labelled_case(tmp_path, label, AFFINES["oblique"])
    assert [r["status"] for r in rows] == [STATUS_OK] * 4
    assert rows[1]["label_uri"] == str((tmp_path / "labelsTr" / "liver_3.nii.gz").resolve())
    for r in rows:
        assert r["label"].dtype == np.uint8 and np.array_equal(r["label"], label[:, :, r["frame"]].T)
    assert rows[0]["label_values"] == [0] and rows[1]["label_values"] == [0, 2] and rows[1]["label_pixels"][1] == 9


def test_a_label_on_another_grid_is_refused_naming_both_geometries(tmp_path: Path) -> None:
    other = AFFINES["oblique"].copy()
    other[:3, 3] += [0.0, 0.0, 1.5]  # shifted 1.5 mm
    rows = _labelled_case(tmp_path, np.zeros((6, 5, 4), np.uint8), other)
    assert [(r["status"], r["stage"], r["error_type"]) for r in rows] == [
        (STATUS_QUARANTINED, "label", "LabelError")
    ] * 4
    assert len({r["case_id"] for r in rows}) == 4
    message = rows[0]["error"]
    assert "label " in message and "liver_3.nii.gz is not on its image's grid" in message
    assert message.count("shape (6, 5, 4)") == 2 and message.count("spacing (0.6, 1.1, 2.5) mm") == 2
    image_origin = (RAS_TO_LPS @ AFFINES["oblique"])[:3, 3]
    label_origin = (RAS_TO_LPS @ other)[:3, 3]
    assert f"origin ({image_origin[0]:.4g}, {image_origin[1]:.4g}, {image_origin[2]:.4g}) mm" in message
    assert f"origin ({label_origin[0]:.4g}, {label_origin[1]:.4g}, {label_origin[2]:.4g}) mm" in message
    assert "resample: true" in message


@pytest.mark.parametrize(("start", "size"), [((2, 1, 1), (3, 3, 2)), ((4, -1, 2), (4, 4, 3))])
def test_a_label_cropped_to_its_segments_is_placed_on_the_image_grid(
    tmp_path: Path, start: tuple[int, int, int], size: tuple[int, int, int]
) -> None:
    """3D Slicer writes a .seg.nrrd holding only the block of the image's voxels its segments cover:
    placed at its voxel offset exactly (no resample needed); a part beyond the image is cut off."""
    block = np.random.default_rng(5).integers(0, 3, size=size).astype(np.uint8)
    moved = AFFINES["oblique"].copy()
    moved[:3, 3] = (AFFINES["oblique"] @ [*start, 1.0])[:3]  # the block's first voxel is image voxel `start`
    rows = _labelled_case(tmp_path, block, moved)
    expected = np.zeros((6, 5, 4), np.uint8)
    lo = [max(s, 0) for s in start]
    hi = [min(s + n, m) for s, n, m in zip(start, size, (6, 5, 4))]
    expected[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = block[
        lo[0] - start[0] : hi[0] - start[0], lo[1] - start[1] : hi[1] - start[1], lo[2] - start[2] : hi[2] - start[2]
    ]
    assert [r["status"] for r in rows] == [STATUS_OK] * 4
    for r in rows:
        assert np.array_equal(r["label"], expected[:, :, r["frame"]].T)


def test_resample_true_takes_the_nearest_label_voxel(tmp_path: Path) -> None:
    fine = AFFINES["oblique"] @ np.diag([0.5, 0.5, 0.5, 1.0])  # half the spacing, same first voxel centre
    label = np.random.default_rng(3).integers(0, 3, size=(12, 10, 8)).astype(np.uint8)
    rows = _labelled_case(tmp_path, label, fine, resample=True)
    assert [r["status"] for r in rows] == [STATUS_OK] * 4
    for r in rows:  # image voxel (i, j, k) sits on label voxel (2i, 2j, 2k)
        assert np.array_equal(r["label"], label[::2, ::2, 2 * r["frame"]].T)


def test_label_values_above_255_or_fractional_are_label_errors(tmp_path: Path) -> None:
    label = np.zeros((6, 5, 4), np.int32)
    label[0, 0, 0] = 300
    rows = _labelled_case(tmp_path, label, AFFINES["oblique"])
    assert {r["error_type"] for r in rows} == {"LabelError"}
    assert "class values 0..300; expected class indices 0..255" in rows[0]["error"]


def test_a_nifti_mask_written_by_segops_aligns_voxel_for_voxel_with_its_input(tmp_path: Path) -> None:
    for name in ("flipped", "oblique"):  # left- and right-handed
        folder = tmp_path / name
        folder.mkdir()
        affine = AFFINES[name]
        nib.save(nib.Nifti1Image(_volume((6, 5, 4)), affine), folder / "case.nii.gz")
        rows = _decode(_source(folder))
        meta = pd.DataFrame([{k: v for k, v in r.items() if k not in ("image", "label")} for r in rows])
        series = assemble_series(meta)
        assert [s.is_volume for s in series] == [True]
        order, geometry = file_order_geometry(meta, series)
        assert order["case"] == [r["case_id"] for r in rows]  # the file's slice order, whatever the handedness
        by_case = {r["case_id"]: r for r in rows}
        mask = np.stack([(by_case[c]["image"][0] > 100).astype(np.uint8) for c in order["case"]])  # (Z, H, W)
        cfg = OutputConfig(str(tmp_path / f"out-{name}"), ("png",), "mirror", {1: "bright"}, 2, "digest")
        written = write_volume_outputs(cfg, {"case_id": "case", "affine": geometry["case"]["affine"]}, mask)
        out = nib.load(written["mask_path"])
        source = nib.load(folder / "case.nii.gz")
        assert out.shape == source.shape and np.allclose(out.affine, source.affine, atol=1e-4)
        assert np.array_equal(np.asarray(out.dataobj), (source.get_fdata() > 100).astype(np.uint8))


def test_header_row_of_a_volume_case(tmp_path: Path) -> None:
    for c in range(2):
        nib.save(nib.Nifti1Image(_volume((7, 5, 3)), np.eye(4)), tmp_path / f"x_{c:04d}.nii.gz")
    source = _source(tmp_path)
    row = header_row(str(tmp_path / "x_0000.nii.gz"), "x_0000.nii.gz", source)
    assert {k: row[k] for k in ("status", "transfer_syntax", "channels", "height", "width", "frames")} == {
        "status": STATUS_OK,
        "transfer_syntax": "NIfTI",
        "channels": 2,
        "height": 5,
        "width": 7,
        "frames": 3,
    }


def _nnunet_dataset(root: Path, dataset_json: dict | None, channels: int = 2) -> None:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for case in ("hepa_001", "hepa_002", "hepa_003"):
        for c in range(channels):
            nib.save(nib.Nifti1Image(_volume((8, 8, 3)), np.eye(4)), root / "imagesTr" / f"{case}_{c:04d}.nii.gz")
        if case != "hepa_003":
            label = np.zeros((8, 8, 3), np.uint8)
            label[2:4, 2:4, 1] = 2
            nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labelsTr" / f"{case}.nii.gz")
    if dataset_json is not None:
        (root / "dataset.json").write_text(json.dumps(dataset_json))


def test_plan_detects_the_nnunet_layout_and_reads_dataset_json(tmp_path: Path) -> None:
    root = tmp_path / "Dataset003_Liver"
    doc = {
        "channel_names": {"0": "CT", "1": "PET"},
        "labels": {"background": 0, "liver": 1, "tumour": 2, "lesion": 3},
        "file_ending": ".nii.gz",
    }
    _nnunet_dataset(root, doc)
    found = detect(tmp_path)
    assert found.source == {
        "kind": "volumes",
        "path": str(root / "imagesTr"),
        "labels": {"kind": "volume", "path": str(root / "labelsTr"), "pattern": "{case}.nii.gz"},
    }
    assert (found.classes, found.task, found.pairing, found.n_images, found.n_paired) == (4, "semantic", "nnunet", 3, 2)
    assert "2 channel(s): CT, PET" in found.notes["labels"]
    assert found.class_names == {1: "liver", 2: "tumour", 3: "lesion"}
    source = TypeAdapter(SourceSpec).validate_python(found.source)
    rows = _decode(source)
    assert {r["modality"] for r in rows} == {"CT"} and {r["channels"] for r in rows} == {2}
    assert sum(r["has_label"] for r in rows) == 6 and len(rows) == 9


def test_plan_without_dataset_json_reads_classes_from_labels(tmp_path: Path) -> None:
    _nnunet_dataset(tmp_path, None)
    found = detect(tmp_path)
    assert found.source["kind"] == "volumes" and found.classes == 3
    assert "largest value in 2 label file(s): 2" in found.notes["labels"]
    assert found.class_names == {}


def test_the_planned_workflow_of_an_nnunet_dataset_is_valid(tmp_path: Path) -> None:
    from segops.config import validate_workflow_text
    from segops.data.planning import PlanSettings, plan_train
    from segops.steps.plan import workflow_yaml

    from ..fingerprints import CT_SLICES

    _nnunet_dataset(tmp_path, {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1}}, channels=1)
    found = detect(tmp_path)
    fp = CT_SLICES
    choices = plan_train(fp, found.classes, PlanSettings(budget_minutes=1), lambda plan: 0.01)
    text = workflow_yaml("liver", tmp_path, found, fp, choices)
    spec = validate_workflow_text(text)
    ingest = spec.steps[0]
    assert ingest.source.kind == "volumes" and ingest.source.path == tmp_path / "imagesTr"
    assert ingest.source.labels.kind == "volume" and ingest.source.labels.path == tmp_path / "labelsTr"
    assert spec.steps[1].model.classes == 2 and "(nnunet, volume masks)" in text
    assert spec.steps[2].segments == {1: "liver"} and spec.steps[2].outputs == ("png",)  # dataset.json's name
    assert ingest.volumes and spec.steps[2].records == "volumes"  # a NIfTI mask per case, scored per case


def test_a_4d_nifti_holds_its_channels_on_its_last_axis(tmp_path: Path) -> None:
    data = np.stack([np.full((4, 3, 2), 5.0, np.float32), np.full((4, 3, 2), 7.0, np.float32)], axis=-1)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "BRATS_001.nii.gz")  # MSD: (x, y, z, modality)
    rows = _decode(_source(tmp_path))
    assert [r["image"].shape for r in rows] == [(2, 3, 4)] * 2 and rows[0]["image"][:, 2, 3].tolist() == [5.0, 7.0]


def test_four_digit_names_without_a_0000_file_are_cases_not_channels(tmp_path: Path) -> None:
    """AMOS and WORD name their cases ``amos_0001.nii.gz`` … in imagesTr and labelsTr: nnU-Net
    channels start at ``_0000``, so without one each file is a case of its own, labelled by its
    whole name, with slice masks named after it (not all ``amos.f0000``)."""
    for folder in ("imagesTr", "labelsTr"):
        (tmp_path / folder).mkdir()
    for n, fill in ((1, 1), (4, 2), (5, 0)):
        nib.save(nib.Nifti1Image(_volume((4, 3, 2), n), np.eye(4)), tmp_path / "imagesTr" / f"amos_{n:04d}.nii.gz")
        label = np.full((4, 3, 2), fill, np.uint8)
        nib.save(nib.Nifti1Image(label, np.eye(4)), tmp_path / "labelsTr" / f"amos_{n:04d}.nii.gz")
    rows = _decode(_source(tmp_path / "imagesTr", tmp_path / "labelsTr"))
    assert {r["status"] for r in rows} == {STATUS_OK} and len(rows) == 3 * 2
    assert sorted({r["group_id"] for r in rows}) == ["amos_0001", "amos_0004", "amos_0005"]
    assert {r["group_id"]: int(r["label"].max()) for r in rows} == {"amos_0001": 1, "amos_0004": 2, "amos_0005": 0}
    stems = {mirror_stem(r["rel_path"], r["frame"]) for r in rows}
    assert len(stems) == 6 and "amos_0004.f0001" in stems
    assert mirror_stem("liver_7_0000.nii.gz", 3) == "liver_7.f0003"  # a channel case keeps its case name
    found = detect(tmp_path)
    assert (found.n_images, found.n_paired) == (3, 3)
    assert found.source["labels"]["pattern"] == "{case}.nii.gz"
