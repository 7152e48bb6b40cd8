"""The segment step on real Ray: outputs, DICOM SEG, sanitised paths, actor crashes, resume."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import highdicom as hd
import numpy as np
import pandas as pd
import psutil
import pydicom
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from segops.config import validate_workflow_text
from segops.config.schema import DicomSource, PreprocessSpec, UNetSpec, WindowIntensity
from segops.data.decode import decode_file
from segops.data.mask_files import read_mask_png
from segops.engine.checkpoint import load_checkpoint, save_checkpoint
from segops.engine.predict import class_probabilities, predict, probability_class_map
from segops.models import build_model
from segops.outputs.manifest import load_manifest
from segops.outputs.probabilities import read_probabilities
from segops.synth import make_ct_archive
from tests.stores import sqlite_store

from ..processes import kill_session, subprocess_run

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small untrained U-Net: outputs need not be good, only deterministic."""
    torch.manual_seed(0)
    spec = UNetSpec(arch="unet", channels=(4, 8, 16), strides=(2, 2), num_res_units=0)
    pre = PreprocessSpec(intensity=WindowIntensity(kind="window", lower=-160, upper=240), patch_size=(32, 32))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model", build_model(spec), spec, pre)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    make_ct_archive(root, series=2, slices=5, seed=11)
    hostile = sorted((root / "images" / "series-001").glob("*.dcm"))[0]
    ds = pydicom.dcmread(hostile)
    ds.PatientID = "../../escape"  # a tag that must never become a path
    ds.save_as(hostile)
    (root / "images" / "series-000" / "zz-broken.dcm").write_bytes(b"\x00" * 300)
    return root


def _workflow(root: Path, out: Path, checkpoint: Path, **segment) -> str:
    step = {
        "step": "segment",
        "model": str(checkpoint),
        "source": {
            "kind": "dicom",
            "path": str(root / "images"),
            "labels": {"kind": "mask-png", "path": str(root / "labels")},
        },
        "batch_size": 2,
        "overlays": 0,
    } | segment
    return yaml.safe_dump(
        {
            "name": "seg",
            "output_dir": str(out),
            "cluster": {"num_cpus": 2},
            "tracking": {"uri": sqlite_store(out), "experiment": "seg"},
            "steps": [step],
        }
    )


def _run(text: str):
    from segops.workflows import run_workflow

    return run_workflow(validate_workflow_text(text), text)


def test_dicom_seg_outputs_reference_their_sources_and_tag_paths_are_sanitised(
    ray_session, archive, checkpoint, tmp_path
) -> None:
    run = _run(
        _workflow(
            archive, tmp_path, checkpoint, outputs=["png", "dicom-seg"], layout="dicom-tags", segments={1: "lesion"}
        )
    )
    outputs = pd.read_parquet(run.run_dir / "outputs.parquet")
    assert len(outputs) == 10 and outputs["seg_path"].str.len().gt(0).all()
    for path in [*outputs["mask_path"], *outputs["seg_path"]]:
        assert Path(path).resolve().is_relative_to(run.run_dir), path
    assert not (tmp_path.parent / "escape").exists()
    assert any("/____escape/" in p and ".." not in p for p in outputs["mask_path"])
    for row in outputs.head(3).itertuples():
        source = pydicom.dcmread(row.source_uri)
        seg = hd.seg.segread(row.seg_path)
        assert seg.Modality == "SEG" and seg.SegmentSequence[0].SegmentLabel == "lesion"
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
        pixels = seg.get_pixels_by_source_instance([source.SOPInstanceUID], combine_segments=True)[0]
        np.testing.assert_array_equal(pixels, read_mask_png(row.mask_path, pixels.shape))
    quarantine = pd.read_parquet(run.run_dir / "segment-quarantine.parquet")
    assert [Path(p).name for p in quarantine["source_uri"]] == ["zz-broken.dcm"]


def test_mirrored_segmentation_writes_each_cases_probabilities_beside_its_mask(
    ray_session, archive, checkpoint, tmp_path
) -> None:
    """``tta: {flip_axes: [0, 1]}`` with ``outputs: [png, probabilities]``: each case's .npz holds the
    engine's mirrored softmax in float16, its mask is that softmax's argmax, and MLflow has the setting.
    ``review: {enabled: false}``: no risk columns, no review queue, no flagged-cases metric."""
    workflow = _workflow(
        archive,
        tmp_path,
        checkpoint,
        outputs=["png", "probabilities"],
        tta={"flip_axes": [0, 1]},
        review={"enabled": False},
    )
    run = _run(workflow)
    outputs = pd.read_parquet(run.run_dir / "outputs.parquet")
    assert len(outputs) == 10 and outputs["probabilities_path"].str.endswith(".npz").all()
    assert "risk" not in outputs.columns and "risk" not in pd.read_parquet(run.run_dir / "report.parquet").columns
    assert not (run.run_dir / "review.parquet").exists() and not (run.run_dir / "review").exists()
    (segment,) = run.results
    assert (segment.review, segment.review_page, segment.risk) == (None, None, False)
    assert "segment_flagged_cases" not in segment.metrics and run.outputs[0]["risk"] is False
    loaded, source = load_checkpoint(checkpoint), DicomSource(kind="dicom", path=archive / "images")
    for row in outputs.head(4).itertuples():
        assert row.probabilities_path == str(run.run_dir / "probabilities" / Path(row.rel_path).with_suffix(".npz"))
        stored = read_probabilities(row.probabilities_path)
        (record,) = decode_file(row.source_uri, row.rel_path, source)
        # amp as the step has it (bfloat16 on a CPU with bf16 in hardware)
        (expected,) = predict(loaded, [record["image"]], amp=True, flip_axes=(0, 1), head=class_probabilities)
        assert stored.case_id == row.case_id and stored.probabilities.dtype == np.float16
        assert stored.probabilities.shape == (2, *record["image"].shape[1:])
        np.testing.assert_allclose(stored.probabilities, expected, atol=1e-3)
        mask = read_mask_png(row.mask_path, expected.shape[1:])
        np.testing.assert_array_equal(mask, probability_class_map(expected))
    mlflow_run = MlflowClient(run.tracking_uri).get_run(run.mlflow_run_id)
    assert mlflow_run.data.params["segment.tta.flip_axes"] == "[0, 1]"
    assert mlflow_run.data.params["segment.segments"] == '{"1": "foreground"}'  # class numbers by name
    assert "segment_flagged_cases" not in mlflow_run.data.metrics and "segment_outputs" in mlflow_run.data.metrics


def test_streaming_reads_decode_one_unit_per_task_and_keep_a_bounded_budget(ray_session, tmp_path) -> None:
    import math

    from ray.data import DataContext

    from segops.cluster.datasets import read_source
    from segops.cluster.infer import IN_FLIGHT_PER_ACTOR, MIN_IN_FLIGHT, PoolSize, bound_in_flight
    from segops.cluster.runtime import limit_data_memory
    from segops.config.schema import DicomSource

    make_ct_archive(tmp_path, series=12, slices=2, seed=14)  # 12 listing units, more than 4 per CPU
    source = DicomSource(kind="dicom", path=tmp_path / "images")
    streamed, coarse = read_source(source, streaming=True).materialize(), read_source(source).materialize()
    assert streamed.num_blocks() == 12 and coarse.num_blocks() == 8
    ids = lambda ds: sorted(ds.to_pandas()["case_id"])  # noqa: E731
    assert len(ids(streamed)) == 24 and ids(streamed) == ids(coarse)

    pool = PoolSize(min_actors=1, max_actors=4, cpus_per_actor=0.5, gpus_per_actor=0.0, torch_threads=1)
    budget = lambda ds: ds.context.execution_options.resource_limits.object_store_memory  # noqa: E731
    ds = read_source(source, streaming=True)
    bound_in_flight(ds, pool)
    assert budget(ds) == 4 * IN_FLIGHT_PER_ACTOR > MIN_IN_FLIGHT
    ds = read_source(source, streaming=True)
    bound_in_flight(ds, PoolSize(1, 1, 0.5, 0.0, 1))
    assert budget(ds) == MIN_IN_FLIGHT
    assert math.isinf(DataContext.get_current().execution_options.resource_limits.object_store_memory)
    try:
        limit_data_memory(0.125)  # cluster.data_memory_gb: the driver's budget wins
        ds = read_source(source, streaming=True)
        bound_in_flight(ds, pool)
        assert budget(ds) == 0.125 * 2**30
    finally:
        options = DataContext.get_current().execution_options
        options.resource_limits = options.resource_limits.copy(object_store_memory=math.inf)


def test_killing_an_actor_mid_run_loses_nothing(ray_session, archive, checkpoint, tmp_path) -> None:
    big = tmp_path / "big"
    make_ct_archive(big, series=6, slices=20, seed=12)
    text = _workflow(big, tmp_path / "out", checkpoint, batch_size=1)
    killed: list[int] = []

    def kill_one_actor() -> None:
        deadline = time.time() + 120
        parts = tmp_path / "out"
        while time.time() < deadline and not killed:
            if len(list(parts.rglob("segment-parts/part-*.parquet"))) >= 5:
                for proc in psutil.process_iter(["pid", "cmdline"]):
                    if any("_Segmenter" in part for part in proc.info["cmdline"] or []):
                        os.kill(proc.info["pid"], signal.SIGKILL)
                        killed.append(proc.info["pid"])
                        return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_actor)
    killer.start()
    run = _run(text)
    killer.join()
    assert killed, "no inference actor was found to kill"
    outputs = pd.read_parquet(run.run_dir / "outputs.parquet")
    assert len(outputs) == 120 and outputs["case_id"].is_unique
    masks = list((run.run_dir / "masks").rglob("*.png"))
    assert len(masks) == 120 and not list((run.run_dir / "masks").rglob(".*.tmp"))


def test_sigkilled_run_resumes_to_identical_outputs_in_the_same_mlflow_run(
    ray_session, archive, checkpoint, tmp_path
) -> None:
    """``segops run`` killed (SIGKILL, its whole session) mid-segment; the same workflow run again
    (here in this process, on the module's Ray) finishes in the same run folder and MLflow run, and
    its masks equal, byte for byte, those of a run that was never interrupted."""
    big = tmp_path / "big"
    make_ct_archive(big, series=4, slices=15, seed=13)
    n = 60
    wf_resumed = tmp_path / "resumed.yaml"
    wf_resumed.write_text(_workflow(big, tmp_path / "resumed", checkpoint, batch_size=1))

    first = subprocess_run(wf_resumed)
    deadline = time.time() + 240
    while time.time() < deadline and len(list((tmp_path / "resumed").rglob("segment-parts/part-*.parquet"))) < 10:
        assert first.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.05)
    kill_session(first)
    (run_dir,) = [p.parent for p in (tmp_path / "resumed").glob("*/manifest.json")]
    interrupted = load_manifest(run_dir)
    assert interrupted["steps"][0]["state"] == "running"
    n_before = len(list((run_dir / "masks").rglob("*.png")))
    assert 10 <= n_before < n

    assert _run(wf_resumed.read_text()).run_dir == run_dir
    clean_dir = _run(_workflow(big, tmp_path / "clean", checkpoint, batch_size=1)).run_dir
    resumed = load_manifest(run_dir)
    assert resumed["state"] == "done" and resumed["mlflow_run_id"] == interrupted["mlflow_run_id"]
    assert resumed["steps"][0]["outputs"]["segment_skipped_done"] >= 10
    resumed_masks = {p.relative_to(run_dir / "masks"): p.read_bytes() for p in (run_dir / "masks").rglob("*.png")}
    clean_masks = {p.relative_to(clean_dir / "masks"): p.read_bytes() for p in (clean_dir / "masks").rglob("*.png")}
    assert len(resumed_masks) == n and resumed_masks == clean_masks
    assert not [p for p in (run_dir / "masks").rglob("*") if p.name.startswith(".")]
    outputs = pd.read_parquet(run_dir / "outputs.parquet")
    assert len(outputs) == n and outputs["case_id"].is_unique
    client = MlflowClient(f"sqlite:///{tmp_path / 'resumed'}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("seg").experiment_id])
    assert [r.info.run_id for r in runs] == [interrupted["mlflow_run_id"]]
    assert runs[0].info.status == "FINISHED"


def test_volume_records_give_one_nifti_and_one_seg_per_series(ray_session, archive, checkpoint, tmp_path) -> None:
    import nibabel as nib

    from segops.workflows import run_workflow

    images = archive / "images"
    text = yaml.safe_dump(
        {
            "name": "vol",
            "output_dir": str(tmp_path),
            "tracking": {"uri": sqlite_store(tmp_path), "experiment": "vol"},
            "steps": [
                {
                    "step": "ingest",
                    "volumes": True,
                    "source": {
                        "kind": "dicom",
                        "path": str(images),
                        "labels": {"kind": "mask-png", "path": str(archive / "labels")},
                    },
                },
                {
                    "step": "segment",
                    "model": str(checkpoint),
                    "records": "volumes",
                    "outputs": ["png", "dicom-seg"],
                    "overlays": 2,
                },
                {"step": "segment", "model": str(checkpoint), "outputs": ["png"], "overlays": 0},
            ],
        }
    )
    run = run_workflow(validate_workflow_text(text), text)
    volumes = pd.read_parquet(run.run_dir / "volumes", columns=["case_id", "source_uris", "slices"])
    assert len(volumes) == 2 and (volumes["slices"] == 5).all()
    report = pd.read_parquet(run.outputs[1]["report"])
    assert len(report) == 2  # one 3D Dice per labelled series
    dice = report.set_index("case_id")["dice"]
    outputs = pd.read_parquet(run.outputs[1]["outputs"]).set_index("case_id")
    slices = pd.read_parquet(run.outputs[2]["outputs"]).set_index("source_uri")
    for series_uid, row in volumes.set_index("case_id").iterrows():
        nifti = nib.load(outputs.loc[series_uid, "mask_path"])
        mask = np.transpose(np.asarray(nifti.dataobj), (2, 1, 0))  # (x, y, z) → (z, y, x)
        per_slice = np.stack(
            [read_mask_png(slices.loc[uri, "mask_path"], mask.shape[1:]) for uri in row["source_uris"]]
        )
        np.testing.assert_array_equal(mask, per_slice)  # slice-wise 2D inference, in slice order
        labels = [archive / "labels" / Path(uri).relative_to(images).with_suffix(".png") for uri in row["source_uris"]]
        truth = np.stack([read_mask_png(path, mask.shape[1:]) for path in labels]).astype(bool)
        denom = mask.astype(bool).sum() + truth.sum()
        expected = 1.0 if denom == 0 else 2 * np.logical_and(mask.astype(bool), truth).sum() / denom
        assert dice[series_uid] == pytest.approx(expected)  # over the whole volume, not a mean of slices
        first = pydicom.dcmread(row["source_uris"][0])
        assert np.allclose(np.abs(np.diag(nifti.affine))[:3], [*map(float, first.PixelSpacing[::-1]), 2.5])
        seg = hd.seg.segread(outputs.loc[series_uid, "seg_path"])
        for z, uri in enumerate(row["source_uris"]):
            sop = pydicom.dcmread(uri, stop_before_pixels=True).SOPInstanceUID
            np.testing.assert_array_equal(seg.get_pixels_by_source_instance([sop], combine_segments=True)[0], mask[z])
    client = MlflowClient(run.tracking_uri)
    metrics = client.get_run(run.mlflow_run_id).data.metrics
    assert metrics["segment_outputs"] == 2 and metrics["segment1_outputs"] == 10  # two steps, two names
    assert (run.run_dir / "segment-1" / "masks").is_dir()
