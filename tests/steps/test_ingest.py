"""The ingest step on real Ray with real MLflow: every file accounted for."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image
from pydicom.data import get_testdata_file

from segops.config import validate_workflow_text
from segops.outputs.dicom_seg import build_seg, write_seg
from tests.stores import sqlite_store

from ..data.corrupt import make_corrupt_corpus

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_session")]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, ct_archive: Path) -> Path:
    root = tmp_path_factory.mktemp("ingest")
    shutil.copytree(ct_archive, root / "ct")
    images = root / "ct" / "images"
    make_corrupt_corpus(next(images.rglob("*.dcm")), images / "zz-bad")
    shutil.copy(get_testdata_file("rtplan.dcm"), images / "rtplan.dcm")  # no pixels: skipped
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "ct" / "labels" / "orphan.png")  # matches nothing
    return root


def _run(root: Path, name: str, step: dict):
    from segops.workflows import run_workflow

    text = yaml.safe_dump(
        {
            "name": name,
            "output_dir": str(root / "runs"),
            "tracking": {"uri": sqlite_store(root), "experiment": "ingest"},
            "steps": [step],
        }
    )
    return run_workflow(validate_workflow_text(text), text)


@pytest.fixture(scope="module")
def mask_run(archive: Path):
    ct = archive / "ct"
    return _run(
        archive,
        "ingest-masks",
        {
            "step": "ingest",
            "volumes": True,
            "source": {
                "kind": "dicom",
                "path": str(ct / "images"),
                "labels": {"kind": "mask-png", "path": str(ct / "labels")},
            },
        },
    )


def test_every_file_is_a_record_or_a_quarantine_row(mask_run, archive: Path) -> None:
    images = archive / "ct" / "images"
    n_files = sum(1 for p in images.rglob("*") if p.is_file())
    dataset = pd.read_parquet(mask_run.run_dir / "dataset", columns=["case_id", "status", "has_label"])
    quarantine = pd.read_parquet(mask_run.run_dir / "quarantine.parquet")
    ok = dataset[dataset["status"] == "ok"]
    assert len(ok) == 18 and ok["has_label"].all() and ok["case_id"].is_unique
    assert len(ok) + len(quarantine) == n_files == 18 + 50 + 1
    assert (quarantine["status"] == "quarantined").sum() == 50
    assert quarantine.loc[quarantine["status"] == "skipped", "rel_path"].tolist() == ["rtplan.dcm"]
    assert quarantine["error"].str.len().gt(0).all()


def test_metrics_and_tables_reach_mlflow(mask_run) -> None:
    client = MlflowClient(mask_run.tracking_uri)
    metrics = client.get_run(mask_run.mlflow_run_id).data.metrics
    assert metrics["ingest_quarantined"] == 50 and metrics["ingest_skipped_no_pixels"] == 1
    assert metrics["ingest_records"] == 18 and metrics["ingest_unmatched_labels"] == 1
    assert metrics["ingest_series"] == 3 and metrics["ingest_series_with_problems"] == 0
    names = {a.path for a in client.list_artifacts(mask_run.mlflow_run_id, "ingest")}
    assert {"ingest/quarantine.csv", "ingest/census.csv", "ingest/series.csv", "ingest/unmatched-labels.csv"} <= names


def test_census_and_unmatched_labels(mask_run, archive: Path) -> None:
    census = pd.read_parquet(mask_run.run_dir / "census.parquet")
    assert census["records"].sum() == 18
    assert set(census["modality"]) == {"CT"} and set(census["transfer_syntax"]) == {"1.2.840.10008.1.2.1"}
    unmatched = pd.read_parquet(mask_run.run_dir / "unmatched-labels.parquet")
    assert [Path(p).name for p in unmatched["label_uri"]] == ["orphan.png"]


def test_volumes_are_stacked_along_the_slice_normal(mask_run, archive: Path) -> None:
    volumes = pd.read_parquet(mask_run.run_dir / "volumes")
    assert len(volumes) == 3 and (volumes["slices"] == 6).all() and np.allclose(volumes["spacing_z"], 2.5)
    row = volumes.set_index("case_id").loc[
        pydicom.dcmread(next((archive / "ct/images/series-000").glob("*.dcm"))).SeriesInstanceUID
    ]
    files = sorted((archive / "ct/images/series-000").glob("*.dcm"))  # synth writes slice k at z = 2.5 k
    expected_masks = np.stack(
        [np.asarray(Image.open(archive / "ct/labels/series-000" / f.with_suffix(".png").name)) // 255 for f in files]
    )
    assert row["has_label"]
    np.testing.assert_array_equal(np.asarray(row["label"]), expected_masks)
    first = pydicom.dcmread(files[0])
    hu0 = first.pixel_array * float(first.RescaleSlope) + float(first.RescaleIntercept)
    np.testing.assert_array_equal(np.asarray(row["image"])[0, 0], hu0)


def test_dicom_seg_labels_are_joined_by_sop_instance_uid(archive: Path, tmp_path: Path) -> None:
    series = sorted((archive / "ct/images/series-002").glob("*.dcm"))
    masks = np.stack(
        [np.asarray(Image.open(archive / "ct/labels/series-002" / p.with_suffix(".png").name)) // 255 for p in series]
    )
    write_seg(
        tmp_path / "segs" / "series-002.dcm", build_seg([pydicom.dcmread(p) for p in series], masks, {1: "lesion"})
    )
    run = _run(
        archive,
        "ingest-seg",
        {
            "step": "ingest",
            "source": {
                "kind": "dicom",
                "path": str(archive / "ct/images"),
                "labels": {"kind": "dicom-seg", "path": str(tmp_path / "segs")},
            },
        },
    )
    dataset = pd.read_parquet(run.run_dir / "dataset", columns=["rel_path", "status", "has_label", "label_uri"])
    ok = dataset[dataset["status"] == "ok"]
    labelled = ok[ok["has_label"]]
    assert len(ok) == 18 and sorted(labelled["rel_path"]) == [f"series-002/{p.name}" for p in series]
    assert len(pd.read_parquet(run.run_dir / "unmatched-labels.parquet")) == 0


def test_header_census_matches_the_archive(archive: Path) -> None:
    from segops.cluster.datasets import census_rows
    from segops.config.schema import DicomSource

    rows = census_rows(DicomSource(kind="dicom", path=archive / "ct/images"))
    assert len(rows) == 18 + 50 + 1
    ok = rows[rows["status"] == "ok"]
    # header-only: truncated-pixel files still have complete headers, so only decode finds them
    assert (ok["modality"] == "CT").sum() >= 18
    assert rows.loc[rows["rel_path"] == "rtplan.dcm", "status"].item() == "skipped"


def test_an_image_whose_mask_does_not_fit_is_kept_unlabelled_and_listed(tmp_path: Path) -> None:
    """Two masks exported at half size: their images are still ingested (and so segmented), not
    trained on, and the quarantine table says why."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i in range(4):
        Image.fromarray(np.full((32, 48), 60 * i, np.uint8)).save(images / f"p{i}.png")
        size = (24, 16) if i in (1, 3) else (48, 32)
        Image.fromarray(np.zeros(size[::-1], np.uint8)).save(labels / f"p{i}.png")
    run = _run(
        tmp_path,
        "ingest-half-masks",
        {
            "step": "ingest",
            "source": {"kind": "images", "path": str(images), "labels": {"kind": "mask-png", "path": str(labels)}},
        },
    )
    dataset = pd.read_parquet(run.run_dir / "dataset", columns=["rel_path", "status", "has_label"])
    assert (dataset["status"] == "ok").all() and sorted(dataset.loc[~dataset["has_label"], "rel_path"]) == [
        "p1.png",
        "p3.png",
    ]
    quarantine = pd.read_parquet(run.run_dir / "quarantine.parquet")
    assert sorted(quarantine["rel_path"]) == ["p1.png", "p3.png"] and set(quarantine["status"]) == {"unlabelled"}
    assert quarantine["error"].str.contains("is 24x16 but its image is 48x32").all()
    metrics = MlflowClient(run.tracking_uri).get_run(run.mlflow_run_id).data.metrics
    assert (metrics["ingest_label_problems"], metrics["ingest_quarantined"], metrics["ingest_labelled"]) == (2, 0, 2)


def test_lidc_outlines_label_the_series_their_files_name(archive: Path, tmp_path: Path) -> None:
    """LIDC reading files among the DICOM folders, through Ray's decode tasks: the series a file
    names is labelled (the consensus drawn on its slice), the others unlabelled, and a file naming a
    series the archive lacks is listed as unmatched."""
    from ..data.lidc_archive import Outline, Reader, rectangle, write_lidc_xml

    images = tmp_path / "images"
    shutil.copytree(archive / "ct" / "images", images, ignore=shutil.ignore_patterns("zz-bad", "rtplan.dcm"))
    slices = [pydicom.dcmread(p) for p in sorted((images / "series-001").glob("*.dcm"))]
    outline = Outline(slices[2].SOPInstanceUID, rectangle(10, 12, 17, 20))
    write_lidc_xml(images / "series-001" / "069.xml", slices[0].SeriesInstanceUID, [Reader([[outline]])] * 2)
    write_lidc_xml(images / "gone" / "070.xml", "1.2.3.4", [Reader([[outline]])])
    source = {"kind": "dicom", "path": str(images), "labels": {"kind": "lidc-xml", "path": str(images)}}
    run = _run(archive, "ingest-lidc", {"step": "ingest", "source": source})
    dataset = pd.read_parquet(run.run_dir / "dataset", columns=["rel_path", "status", "has_label", "label_values"])
    ok = dataset[dataset["status"] == "ok"].set_index("rel_path")
    assert len(ok) == 18 and sorted(ok.index[ok["has_label"]]) == [
        f"series-001/{Path(s.filename).name}" for s in slices
    ]
    nodule = {p for p, values in ok["label_values"].items() if 1 in list(values)}
    assert nodule == {f"series-001/{Path(slices[2].filename).name}"}
    unmatched = pd.read_parquet(run.run_dir / "unmatched-labels.parquet")
    assert [Path(u.split("#")[0]).name for u in unmatched["label_uri"]] == ["070.xml"]


def test_images_grouped_by_folder_keep_their_folder_as_split_group(tmp_path: Path, caplog) -> None:
    """``group_by: folder`` through real Ray decode tasks: every record's group is its folder; a
    pattern that matches some paths warns naming the others, one that matches none stops the step."""
    from segops.errors import StepError
    from segops.steps.ingest import check_group_pattern

    images = tmp_path / "parts"
    for part in ("kos01", "kos02"):
        (images / part).mkdir(parents=True)
        for view in range(3):
            Image.fromarray(np.full((16, 24), 40 * view, np.uint8)).save(images / part / f"Part{view}.png")
    run = _run(
        tmp_path,
        "ingest-groups",
        {"step": "ingest", "source": {"kind": "images", "path": str(images), "group_by": "folder"}},
    )
    dataset = pd.read_parquet(run.run_dir / "dataset", columns=["rel_path", "group_id"])
    assert dict(zip(dataset["rel_path"], dataset["group_id"], strict=True)) == {
        f"{part}/Part{view}.png": part for part in ("kos01", "kos02") for view in range(3)
    }
    ok = dataset.assign(status="ok")
    check_group_pattern(r"kos(\d+)/", ok)  # every path matches: silent
    caplog.clear()
    check_group_pattern(r"kos0(1)/", ok)
    assert "matched 3 of 6 images' paths; the other 3 are each their own split group (kos02/Part0.png" in caplog.text
    with pytest.raises(
        StepError,
        match=r"source.group_by 'patient_\(\\\\d\+\)' matched none of the 6 images' paths \(e.g. kos01/Part0.png",
    ):
        check_group_pattern(r"patient_(\d+)", ok)
