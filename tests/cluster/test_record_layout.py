"""Datasets written through Ray (ingest's records, volume records) have the record layout of
:data:`segops.data.records.RECORD_SCHEMA`, column for column and type for type."""

import shutil
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pydicom
import pytest

from segops.cluster.datasets import _stack_group, read_source, write_dataset, write_volumes
from segops.config.schema import DicomSource, MaskPngLabels
from segops.data.decode import decode_file
from segops.data.records import DICOM_ID_COLUMNS, META_COLUMNS, PIXEL_COLUMNS, RECORD_SCHEMA, dataset_meta

_VOLUME_COLUMNS = ("slices", "spacing_z", "affine", "source_uris")


def _source(ct_archive: Path) -> DicomSource:
    return DicomSource(
        kind="dicom", path=ct_archive / "images", labels=MaskPngLabels(kind="mask-png", path=ct_archive / "labels")
    )


def _series_batch(ct_archive: Path, drop: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The decoded rows of series-000 as the numpy batch map_groups hands :func:`_stack_group`."""
    source = _source(ct_archive)
    files = sorted((ct_archive / "images" / "series-000").glob("*.dcm"))
    rows = [row for f in files for row in decode_file(str(f), f"series-000/{f.name}", source)]
    names = [c for c in (*META_COLUMNS, *PIXEL_COLUMNS) if c not in drop]
    return {c: np.array([r[c] for r in rows] + [None], dtype=object)[:-1] for c in names}


@pytest.mark.parametrize("old", [False, True])
def test_volume_rows_have_the_record_layout_with_or_without_identifiers(ct_archive: Path, old: bool) -> None:
    batch = _series_batch(ct_archive, drop=DICOM_ID_COLUMNS if old else ())
    uid = str(batch["group_id"][0])
    order = {uid: list(batch["case_id"])}
    table = _stack_group(batch, order, {uid: {"spacing_z": 2.0, "affine": np.eye(4).ravel().tolist()}})
    assert table.schema.names == [*META_COLUMNS, *_VOLUME_COLUMNS, *PIXEL_COLUMNS]
    assert table.select(list(META_COLUMNS)).schema == RECORD_SCHEMA
    row = table.select(list(META_COLUMNS)).to_pylist()[0]
    header = pydicom.dcmread(ct_archive / "images" / "series-000" / "slice-0000.dcm", stop_before_pixels=True)
    expected = ["", "", "", ""] if old else [header.PatientID, header.StudyInstanceUID, header.SeriesInstanceUID, ""]
    assert [row[c] for c in DICOM_ID_COLUMNS] == expected
    assert (row["case_id"], row["channels"], row["has_label"], row["instance_number"]) == (uid, 1, True, -1)
    assert table.column("slices").to_pylist() == [6]
    assert (row["height"], row["width"]) == batch["image"][0].shape[1:] == (header.Rows, header.Columns)


@pytest.mark.ray
@pytest.mark.usefixtures("ray_session")
def test_ingest_writes_the_record_schema_and_volumes_keep_it(ct_archive: Path, tmp_path: Path) -> None:
    dataset = tmp_path / "dataset"
    write_dataset(read_source(_source(ct_archive)), dataset)
    schema = pads.dataset(str(dataset), format="parquet").schema
    assert schema.names == [*META_COLUMNS, *PIXEL_COLUMNS]
    for field in RECORD_SCHEMA:
        assert schema.field(field.name).type == field.type, field.name
    meta = dataset_meta(dataset)
    assert len(meta) == 18 and meta["patient_id"].str.startswith("SYNTH").all()
    assert (meta["series_uid"] == meta["group_id"]).all() and (meta["instance_uid"] == meta["case_id"]).all()

    first = meta.sort_values("rel_path").groupby("group_id")["case_id"].apply(list).to_dict()
    geometry = {uid: {"spacing_z": 2.0, "affine": np.eye(4).ravel().tolist()} for uid in first}
    write_volumes(dataset, first, geometry, tmp_path / "volumes")
    volumes = pads.dataset(str(tmp_path / "volumes"), format="parquet")
    assert volumes.schema.names == [*META_COLUMNS, *_VOLUME_COLUMNS, *PIXEL_COLUMNS]
    for field in RECORD_SCHEMA:
        assert volumes.schema.field(field.name).type == field.type, field.name
    rows = volumes.to_table(columns=["case_id", "series_uid", "slices"]).to_pylist()
    assert sorted((r["case_id"], r["series_uid"], r["slices"]) for r in rows) == sorted((u, u, 6) for u in first)


def _rows(records: list[dict]) -> dict[str, tuple[bytes, bytes]]:
    return {r["case_id"]: (np.asarray(r["image"]).tobytes(), np.asarray(r["label"]).tobytes()) for r in records}


@pytest.mark.ray
@pytest.mark.usefixtures("ray_session")
def test_small_datasets_load_on_the_driver_with_the_same_rows_as_ray_datas_read(
    ct_archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import segops.cluster.datasets as datasets

    archive = tmp_path / "ct"
    shutil.copytree(ct_archive, archive)
    for label in sorted((archive / "labels" / "series-001").glob("*.png"))[:3]:
        label.unlink()  # three unlabelled slices
    dataset = tmp_path / "dataset"
    datasets.write_dataset(datasets.read_source(_source(archive)), dataset)
    meta = dataset_meta(dataset)
    groups = sorted(meta["group_id"].unique())[1:]  # series 001 and 002
    excluded = sorted(meta.loc[meta["group_id"] == groups[1], "case_id"])[:2]
    kwargs = {"labelled_only": True, "groups": groups, "columns": ["case_id", "image", "label"]}
    expected = _rows(datasets.read_dataset(dataset, exclude_cases=excluded, **kwargs).take_all())
    assert len(expected) == 12 - 3 - 2  # two series, less the unlabelled and the excluded slices
    monkeypatch.setattr(datasets, "DRIVER_BLOCK_ROWS", 4)
    driver = datasets.load_dataset(dataset, exclude_cases=excluded, **kwargs)
    assert _rows(driver.take_all()) == expected and driver.num_blocks() == 2  # 7 rows in blocks of 4
    monkeypatch.setattr(datasets, "DRIVER_READ_BYTES", 0)  # too large for the driver: Ray Data reads it
    assert _rows(datasets.load_dataset(dataset, exclude_cases=excluded, **kwargs).take_all()) == expected
    picked = sorted(expected)[:3]
    assert _rows(datasets.take_records(dataset, picked)) == {c: expected[c] for c in picked}


def test_a_volume_file_case_in_a_subfolder_is_named_by_its_path_once(tmp_path: Path) -> None:
    import nibabel as nib

    from segops.config.schema import VolumeSource

    folder = tmp_path / "training" / "patient001"
    folder.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.zeros((8, 6, 3), np.float32), np.eye(4)), folder / "patient001_frame01.nii.gz")
    source = VolumeSource(kind="volumes", path=tmp_path)
    rows = decode_file(
        str(folder / "patient001_frame01.nii.gz"), "training/patient001/patient001_frame01.nii.gz", source
    )
    names = [c for c in (*META_COLUMNS, *PIXEL_COLUMNS)]
    batch = {c: np.array([r[c] for r in rows] + [None], dtype=object)[:-1] for c in names}
    uid = str(batch["group_id"][0])
    table = _stack_group(
        batch, {uid: list(batch["case_id"])}, {uid: {"spacing_z": 1.0, "affine": np.eye(4).ravel().tolist()}}
    )
    assert uid == "training/patient001/patient001_frame01"
    assert table.column("rel_path").to_pylist() == [uid]  # not training/patient001/training/patient001/…


def test_a_case_cut_in_another_plane_gets_its_mask_back_in_the_files_order(tmp_path: Path) -> None:
    """KiTS' (slices, rows, columns) file cut axially: its volume record keeps the cut's axes, and
    the NIfTI mask written from it has the file's shape, affine and voxel order."""
    import nibabel as nib
    import pandas as pd

    from segops.config.schema import VolumeSource
    from segops.data.series import assemble_series
    from segops.data.slice_planes import file_order_geometry
    from segops.outputs.case_outputs import OutputConfig, write_volume_outputs

    affine = np.array([[0.0, 0.0, -0.8, 40.0], [0.0, -0.8, 0.0, 30.0], [-3.0, 0.0, 0.0, 90.0], [0, 0, 0, 1.0]])
    data = np.random.default_rng(1).normal(100, 20, size=(5, 6, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "imaging.nii.gz")
    source = VolumeSource(kind="volumes", path=tmp_path, slice_plane="axial")
    rows = decode_file(str(tmp_path / "imaging.nii.gz"), "imaging.nii.gz", source)
    meta = pd.DataFrame([{k: v for k, v in r.items() if k not in PIXEL_COLUMNS} for r in rows])
    order, geometry = file_order_geometry(meta, assemble_series(meta))
    batch = {c: np.array([r[c] for r in rows] + [None], dtype=object)[:-1] for c in (*META_COLUMNS, *PIXEL_COLUMNS)}
    volume = _stack_group(batch, order, geometry).to_pylist()[0]
    assert volume["file_axes"] == [2, 1, 0] and volume["slices"] == 5
    mask = (np.stack([r["image"][0] for r in rows]) > 100).astype(np.uint8)  # (Z, H, W) in slice order
    cfg = OutputConfig(str(tmp_path / "out"), ("png",), "mirror", {1: "bright"}, 2, "digest")
    written = write_volume_outputs(cfg, volume, mask)
    out = nib.load(written["mask_path"])
    assert out.shape == data.shape and np.allclose(out.affine, affine, atol=1e-4)
    assert np.array_equal(np.asarray(out.dataobj), (data > 100).astype(np.uint8))
