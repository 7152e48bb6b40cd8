"""End to end on real Ray (2 CPUs), real MLflow (sqlite), real DICOM files: one small run.

The run is done once per module (it trains with Ray Train, ~30 s) and every test inspects it.
Its defaults for actors and training workers are the ones users get on a 2-CPU machine, so
this also guards against the actor-pool / read-task deadlock noted in field-notes.md.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pydicom
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from segops.config import validate_workflow_text
from segops.data.mask_files import read_mask_png
from segops.engine.checkpoint import load_checkpoint
from segops.engine.predict import predict_masks
from segops.engine.risk_rule import CALIBRATION_FILE, RiskCalibration
from segops.outputs.manifest import load_manifest
from segops.steps.results import IngestResult, SegmentResult, TrainResult
from tests.stores import sqlite_store

pytestmark = [pytest.mark.ray, pytest.mark.slow]

MODEL_NAME = "e2e-unet"


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, ct_archive: Path) -> dict:
    root = tmp_path_factory.mktemp("e2e")
    shutil.copytree(ct_archive, root / "ct")
    images, labels = root / "ct" / "images", root / "ct" / "labels"
    (images / "series-000" / "zz-garbage.dcm").write_bytes(b"this is not a DICOM file" * 20)
    real = next((images / "series-001").glob("*.dcm")).read_bytes()
    (images / "series-001" / "zz-truncated.dcm").write_bytes(real[: len(real) // 3])
    unlabelled = sorted((labels / "series-002").glob("*.png"))[:2]
    for p in unlabelled:
        p.unlink()
    return {"root": root, "images": images, "labels": labels, "n_ok": 18, "n_unlabelled": 2, "n_bad": 2}


def _workflow(archive: dict, steps: list[dict], name: str) -> str:
    root = archive["root"]
    return yaml.safe_dump(
        {
            "name": name,
            "output_dir": str(root / "runs"),
            "tracking": {"uri": sqlite_store(root), "experiment": "e2e", "registered_model": MODEL_NAME},
            "cluster": {"num_cpus": 2},
            "steps": steps,
        }
    )


def _e2e_text(archive: dict) -> str:
    return _workflow(
        archive,
        [
            {
                "step": "ingest",
                "source": {
                    "kind": "dicom",
                    "path": str(archive["images"]),
                    "labels": {"kind": "mask-png", "path": str(archive["labels"])},
                },
            },
            {
                "step": "train",
                "model": {"arch": "unet", "channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1},
                "preprocess": {"intensity": {"kind": "window", "lower": -160, "upper": 240}, "patch_size": [64, 64]},
                "split": {"val_fraction": 0.34},
                "epochs": 2,
                "batch_size": 4,
                "samples_per_epoch": 3,  # an epoch draws 3 training slices (2 per worker): an archive's short epochs
            },
            {"step": "segment", "overlays": 2, "outputs": ["png", "rtstruct"]},
        ],
        "e2e",
    )


@pytest.fixture(scope="module")
def run(ray_session, archive: dict):
    from segops.workflows import run_workflow

    text = _e2e_text(archive)
    return run_workflow(validate_workflow_text(text), text)


def test_rerunning_a_finished_workflow_changes_nothing(run, archive: dict) -> None:
    from segops.workflows import run_workflow

    before = {p: p.stat().st_mtime_ns for p in (run.run_dir / "masks").rglob("*.png")}
    again = run_workflow(validate_workflow_text(_e2e_text(archive)))
    assert again.resumed and again.run_dir == run.run_dir and again.mlflow_run_id == run.mlflow_run_id
    assert {p: p.stat().st_mtime_ns for p in (run.run_dir / "masks").rglob("*.png")} == before
    assert repr(again.results) == repr(run.results)  # repr: a NaN metric (no case to rank) equals itself
    client = MlflowClient(run.tracking_uri)
    assert (
        len(
            client.search_runs(
                [client.get_experiment_by_name("e2e").experiment_id], filter_string="tags.`segops.workflow` = 'e2e'"
            )
        )
        == 1
    )


def test_every_readable_input_has_exactly_one_mask(run, archive: dict) -> None:
    masks = sorted(p.relative_to(run.run_dir / "masks").as_posix() for p in (run.run_dir / "masks").rglob("*"))
    masks = [m for m in masks if m.endswith(".png")]
    inputs = sorted(
        p.relative_to(archive["images"]).with_suffix(".png").as_posix()
        for p in archive["images"].rglob("*.dcm")
        if not p.name.startswith("zz-")
    )
    assert masks == inputs and len(masks) == archive["n_ok"]
    assert not list((run.run_dir / "masks").rglob("*.tmp")) and not list((run.run_dir / "masks").rglob(".*"))
    outputs = pd.read_parquet(run.run_dir / "outputs.parquet")
    assert len(outputs) == archive["n_ok"] and outputs["case_id"].is_unique
    first = outputs.iloc[0]
    ds = pydicom.dcmread(first["source_uri"])
    assert first["case_id"] == ds.SOPInstanceUID
    assert read_mask_png(first["mask_path"], ds.pixel_array.shape).shape == ds.pixel_array.shape


def test_report_has_one_row_per_labelled_input(run, archive: dict) -> None:
    report = pd.read_parquet(run.run_dir / "report.parquet")
    csv = pd.read_csv(run.run_dir / "report.csv")
    assert len(report) == len(csv) == archive["n_ok"] - archive["n_unlabelled"]
    assert (report["iou"] <= report["dice"] + 1e-9).all()  # IoU never exceeds Dice
    # 3 series: test drawn first (round(0.2 * 3) = 1), then validation (round(0.34 * 3) = 1), 1 trains
    split = json.loads((run.run_dir / "split.json").read_text())
    assert {k: len(v) for k, v in split.items()} == {"train": 1, "val": 1, "test": 1}
    assert set(report["split"]) == {"train", "val", "test"}
    metrics = run.latest(SegmentResult).metrics
    assert metrics["segment_heldout_cases"] == (report["split"] == "test").sum()
    assert metrics["segment_heldout_dice_mean"] == pytest.approx(report.loc[report["split"] == "test", "dice"].mean())
    assert metrics["segment_val_dice_mean"] == pytest.approx(report.loc[report["split"] == "val", "dice"].mean())
    # every report Dice and IoU is recomputed independently from the written masks and the label files
    for _, row in report.iterrows():
        label_path = archive["labels"] / Path(row["rel_path"]).with_suffix(".png")
        truth = (np.asarray(Image.open(label_path)) // 255).astype(bool)
        pred = read_mask_png(row["mask_path"], truth.shape).astype(bool)
        both, either = np.logical_and(pred, truth).sum(), np.logical_or(pred, truth).sum()
        denom = pred.sum() + truth.sum()
        assert row["dice"] == pytest.approx(1.0 if denom == 0 else 2 * both / denom)
        assert row["iou"] == pytest.approx(1.0 if either == 0 else both / either)


def test_every_dicom_series_has_one_rtstruct_that_reads_back_as_its_masks(run, archive: dict) -> None:
    from segops.data.rtstruct import rasterise_slice, read_structure_set

    from .data.rtstruct_archive import header_geometry

    outputs = pd.read_parquet(run.run_dir / "outputs.parquet")
    masks = {Path(r).as_posix(): m for r, m in zip(outputs["rel_path"], outputs["mask_path"])}
    files = sorted((run.run_dir / "rtstruct").rglob("*.dcm"))
    series = sorted(p for p in archive["images"].iterdir() if p.is_dir())
    assert len(files) == len(series) == 3 and run.latest(SegmentResult).metrics["segment_rtstruct_series"] == 3
    by_series = {
        pydicom.dcmread(f)
        .ReferencedFrameOfReferenceSequence[0]
        .RTReferencedStudySequence[0]
        .RTReferencedSeriesSequence[0]
        .SeriesInstanceUID: f
        for f in files
    }
    for folder in series:
        headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob("slice-*.dcm"))]
        path = by_series[str(headers[0].SeriesInstanceUID)]
        assert path == run.run_dir / "rtstruct" / folder.name / f"{headers[0].SeriesInstanceUID}.dcm"
        ds = pydicom.dcmread(path)
        uids = {str(h.SOPInstanceUID) for h in headers}
        listed = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
        assert {i.ReferencedSOPInstanceUID for i in listed.ContourImageSequence} == uids
        assert [r.ROIName for r in ds.StructureSetROISequence] == ["foreground"]
        contours = ds.ROIContourSequence[0].get("ContourSequence", [])
        assert {c.ContourImageSequence[0].ReferencedSOPInstanceUID for c in contours} <= uids
        structure = read_structure_set(path)
        for h in headers:  # the reader gives back the mask PNG of every slice
            geometry = header_geometry(h)
            mask = read_mask_png(masks[f"{folder.name}/{Path(h.filename).name}"], geometry.shape)
            np.testing.assert_array_equal(rasterise_slice(structure, geometry, {"foreground": 1}).label, mask)


def test_corrupt_files_are_quarantined_and_run_completes(run, archive: dict) -> None:
    quarantine = pd.read_parquet(run.run_dir / "quarantine.parquet")
    assert sorted(Path(p).name for p in quarantine["source_uri"]) == ["zz-garbage.dcm", "zz-truncated.dcm"]
    assert (quarantine["status"] == "quarantined").all() and quarantine["error"].str.len().gt(10).all()
    manifest = load_manifest(run.run_dir)
    assert manifest["state"] == "done" and [s["state"] for s in manifest["steps"]] == ["done"] * 3
    assert manifest["steps"][0]["outputs"]["ingest_quarantined"] == archive["n_bad"]


def test_one_mlflow_run_with_params_metrics_and_artifacts(run) -> None:
    client = MlflowClient(run.tracking_uri)
    experiment = client.get_experiment_by_name("e2e")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`segops.run_id` = '{run.run_id}'")
    assert [r.info.run_id for r in runs] == [run.mlflow_run_id]
    data = runs[0].data
    assert runs[0].info.status == "FINISHED"
    assert (
        data.params["model.arch"] == "unet"
        and data.params["workflow.spec_hash"] == load_manifest(run.run_dir)["spec_hash"]
    )
    assert [m.step for m in client.get_metric_history(run.mlflow_run_id, "train_loss")] == [0, 1]
    assert [m.step for m in client.get_metric_history(run.mlflow_run_id, "val_fg_dice")] == [0, 1]
    # samples_per_epoch 3 over 2 workers: ceil(3 / 2) = 2 slices per worker, 1 patch each, every epoch
    assert int(data.params["train.cases"]) >= 6  # each worker's share (>= 3) is more than its draw
    epochs = [json.loads(line) for line in (run.run_dir / "ray-train" / "progress.jsonl").read_text().splitlines()]
    assert [row["train_samples"] for row in epochs] == [4.0, 4.0]
    assert data.params["train.select_metric"] in ("val_dice", "val_fg_dice") and "best_val_fg_dice" in data.metrics
    report = pd.read_parquet(run.run_dir / "report.parquet")
    assert data.metrics["segment_dice_mean"] == pytest.approx(report["dice"].mean())
    assert data.metrics["segment_dice_median"] == pytest.approx(report["dice"].median())
    assert data.metrics["ingest_quarantined"] == 2
    artifacts = {a.path for a in client.list_artifacts(run.mlflow_run_id, "segment")}
    assert {"segment/report.csv", "segment/report.parquet", "segment/outputs.csv", "segment/overlays"} <= artifacts
    assert len(client.list_artifacts(run.mlflow_run_id, "segment/overlays")) == 2
    assert {a.path for a in client.list_artifacts(run.mlflow_run_id, "workflow")} >= {"workflow/workflow.yaml"}


def test_registered_model_loads_and_predicts_like_the_checkpoint(run, archive: dict) -> None:
    client = MlflowClient(run.tracking_uri, registry_uri=run.tracking_uri)
    version = client.get_model_version(MODEL_NAME, "1")
    assert version.tags["segops.run_id"] == run.mlflow_run_id
    mlflow.set_tracking_uri(run.tracking_uri)
    mlflow.set_registry_uri(run.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/1")
    ds = pydicom.dcmread(next((archive["images"] / "series-000").glob("slice-*.dcm")))
    hu = (ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)).astype(np.float32)
    masks = model.predict(hu[None, None])
    expected = predict_masks(load_checkpoint(run.latest(TrainResult).checkpoint), [hu[None]])[0]
    assert masks.shape == (1, *hu.shape) and masks.dtype == np.uint8
    np.testing.assert_array_equal(masks[0], expected)


def test_segment_only_workflow_with_model_alias_and_own_source(run, archive: dict, tmp_path: Path) -> None:
    from segops.workflows import run_workflow

    MlflowClient(run.tracking_uri, registry_uri=run.tracking_uri).set_registered_model_alias(
        MODEL_NAME, "champion", "1"
    )
    text = _workflow(
        archive,
        [
            {
                "step": "segment",
                "model": f"models:/{MODEL_NAME}@champion",
                "source": {"kind": "dicom", "path": str(archive["images"] / "series-000")},
            }
        ],
        "e2e-segment",
    )
    second = run_workflow(validate_workflow_text(text), text)
    outputs = pd.read_parquet(second.run_dir / "outputs.parquet")
    assert len(outputs) == 6
    bad = pd.read_parquet(second.run_dir / "segment-quarantine.parquet")
    assert [Path(p).name for p in bad["source_uri"]] == ["zz-garbage.dcm"]
    assert len(pd.read_parquet(second.run_dir / "report.parquet")) == 0  # no labels given
    # same model, same pixels → same masks as the first run
    first = pd.read_parquet(run.run_dir / "outputs.parquet").set_index("rel_path")
    for _, row in outputs.iterrows():
        a = Path(row["mask_path"]).read_bytes()
        b = Path(first.loc["series-000/" + row["rel_path"], "mask_path"]).read_bytes()
        assert a == b


def test_review_queue_ranks_every_segmented_case_and_is_in_mlflow(run) -> None:
    review = pd.read_parquet(run.run_dir / "review.parquet")
    outputs = pd.read_parquet(run.run_dir / "outputs.parquet")
    assert sorted(review["case_id"]) == sorted(outputs["case_id"]) and outputs["risk"].notna().all()
    assert review["risk"].is_monotonic_decreasing and list(review["rank"]) == list(range(1, len(review) + 1))
    segment = run.latest(SegmentResult)
    assert segment.review_page == run.run_dir / "review" / "index.html" and segment.review_page.is_file()
    assert segment.flagged == int(review["flagged"].sum())
    # the risk is calibrated on the model's validation cases, and flags from their threshold
    train = run.latest(TrainResult)
    calibration = RiskCalibration.from_json((train.checkpoint / CALIBRATION_FILE).read_text())
    meta = pd.read_parquet(run.latest(IngestResult).dataset, columns=["group_id", "status", "has_label"])
    validation = meta[meta["group_id"].isin(train.val_groups) & (meta["status"] == "ok") & meta["has_label"]]
    assert calibration.cases == len(validation) == len(calibration.dice) > 0
    assert review["flagged"].tolist() == (review["risk"] >= calibration.flag_risk).tolist()
    client = MlflowClient(run.tracking_uri)
    params = client.get_run(run.mlflow_run_id).data.params
    assert float(params["segment.review.flag_risk"]) == pytest.approx(calibration.flag_risk, abs=1e-4)
    metrics = client.get_run(run.mlflow_run_id).data.metrics
    assert metrics["segment_flagged_cases"] == review["flagged"].sum()
    assert metrics["segment_risk_cases"] == len(pd.read_parquet(run.run_dir / "report.parquet"))
    artifacts = {a.path for a in client.list_artifacts(run.mlflow_run_id, "segment")}
    assert {"segment/review.csv", "segment/review"} <= artifacts
    page = {a.path for a in client.list_artifacts(run.mlflow_run_id, "segment/review")}
    assert "segment/review/index.html" in page


def test_objects_are_measured_in_mm_from_pixel_spacing_with_their_totals_per_case(run) -> None:
    objects = pd.read_parquet(run.run_dir / "measurements.parquet")
    outputs = pd.read_parquet(run.run_dir / "outputs.parquet")
    dataset = pd.read_parquet(run.latest(IngestResult).dataset, columns=["case_id", "spacing_y", "spacing_x"])
    spacing = dataset.set_index("case_id")
    assert len(objects) and set(objects["units"]) == {"mm"}  # the CT slices carry PixelSpacing
    for _, row in outputs.iterrows():  # totals agree with the written mask and the object rows
        mask = read_mask_png(row["mask_path"], np.asarray(Image.open(row["mask_path"])).shape)  # 0/255 → 0/1
        area = (mask == 1).sum() * spacing.loc[row["case_id"], "spacing_y"] * spacing.loc[row["case_id"], "spacing_x"]
        assert row["meas_area_mm2_1"] == pytest.approx(area)
        mine = objects[objects["case_id"] == row["case_id"]]
        assert row["meas_components_1"] == len(mine) and mine["area_mm2"].sum() == pytest.approx(area)
    assert run.latest(SegmentResult).measurements == run.run_dir / "measurements.parquet"


def test_select_packages_the_unlabelled_cases_and_a_retrain_trains_on_them(run, archive: dict) -> None:
    from segops.cluster.datasets import take_records
    from segops.steps.select import select_for_labelling
    from segops.workflows import run_workflow

    out = archive["root"] / "to-label"
    package = select_for_labelling(run.run_dir, 5, out)  # more than the candidates: every unlabelled case
    outputs = pd.read_parquet(run.run_dir / "outputs.parquet").set_index("case_id")
    unlabelled = set(outputs.index[~outputs["has_label"]])
    manifest = pd.read_csv(out / "manifest.csv", dtype={"case_id": str})
    assert len(unlabelled) == archive["n_unlabelled"] and set(manifest["case_id"]) == unlabelled
    assert manifest["rank"].tolist() == [1, 2] and package.candidates == 2
    for row in manifest.to_dict("records"):
        source = outputs.loc[row["case_id"]]
        assert (out / row["image"]).read_bytes() == Path(source["source_uri"]).read_bytes()  # the DICOM file itself
        shape = pydicom.dcmread(source["source_uri"]).pixel_array.shape
        assert np.asarray(Image.open(out / row["preview"])).shape == shape
        mask = read_mask_png(out / row["pre_annotation"], shape)
        np.testing.assert_array_equal(mask, read_mask_png(source["mask_path"], shape))
        (out / row["label"]).parent.mkdir(parents=True, exist_ok=True)  # the labeller's corrected mask
        (out / row["label"]).write_bytes((out / row["pre_annotation"]).read_bytes())
    ingest = yaml.safe_load((out / "ingest-step.yaml").read_text())[0]
    assert ingest["source"]["kind"] == "dicom" and ingest["source"]["labels"]["kind"] == "mask-png"
    dataset = run.latest(IngestResult).dataset
    # workflows/retrain.yaml with the package as its new ingest, the run's dataset as old labels
    retrain = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflows" / "retrain.yaml").read_text())
    retrain["steps"][0] = ingest
    retrain["steps"][1]["extra_datasets"] = [str(dataset)]
    labels = {"kind": "mask-png", "path": str(archive["labels"])}
    retrain["steps"][2]["source"] = {"kind": "dicom", "path": str(archive["images"]), "labels": labels}  # held out
    validate_workflow_text(yaml.safe_dump(retrain))
    # retrain: the package's ingest reads its images with their labels, and training takes them with the old ones
    train = {
        "step": "train",
        "extra_datasets": [str(dataset)],
        "model": {"arch": "unet", "channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1},
        "preprocess": {"intensity": {"kind": "window", "lower": -160, "upper": 240}, "patch_size": [64, 64]},
        "split": {"val_fraction": 0.34, "test_fraction": 0.0},
        "epochs": 1,
        "batch_size": 4,
        "register_model": False,
    }
    text = _workflow(archive, [ingest, train], "select-retrain")
    retrained = run_workflow(validate_workflow_text(text), text)
    assert retrained.latest(TrainResult).checkpoint.is_dir()
    params = MlflowClient(retrained.tracking_uri).get_run(retrained.mlflow_run_id).data.params
    old = int(outputs["has_label"].sum())
    assert int(params["train.cases"]) + int(params["val.cases"]) == old + len(unlabelled)
    records = take_records(retrained.latest(IngestResult).dataset, sorted(unlabelled))
    assert len(records) == 2 and all(r["has_label"] for r in records)
    for record in records:
        pre = out / manifest.set_index("case_id").loc[record["case_id"], "pre_annotation"]
        label = np.asarray(record["label"])
        np.testing.assert_array_equal(label, read_mask_png(pre, label.shape))
