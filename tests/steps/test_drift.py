"""The segment step's drift check on Ray: ``stop`` fails before any actor starts and leaves no
outputs, with the table in drift.json and MLflow; a fresh sample of the training generator passes.

Also the builders the CLI test shares: generated archives and a tiny model that carries what
training stores for drift (fingerprint.json, embeddings.npz written by the train step's function)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segops.cluster.datasets import read_source, write_dataset
from segops.cluster.embeddings import write_model_embeddings
from segops.cluster.fingerprint import fingerprint_source, write_fingerprint
from segops.config.schema import ImageSource, SegmentStep, VolumeSource
from segops.data.drift import DriftReport
from segops.data.records import dataset_meta
from segops.engine.checkpoint import load_checkpoint
from segops.engine.embeddings import EMBEDDINGS_FILE, EmbeddingReference
from segops.errors import StepError
from segops.steps import segment
from segops.steps.drift import check_drift, report_embedding_drift, resolve_model, segment_input_path
from segops.steps.results import IngestResult
from segops.synth import make_inspection_archive

from .contexts import make_context, tiny_checkpoint


def drift_archives(root: Path, count: int = 30) -> dict[str, Path]:
    """Image folders: ``train`` (inspection generator, seed 0), ``fresh`` (seed 1) and ``brighter``
    (the fresh images with intensity x 1.5)."""
    make_inspection_archive(root / "train", count=count, seed=0)
    make_inspection_archive(root / "fresh", count=count, seed=1)
    brighter = root / "brighter" / "images"
    brighter.mkdir(parents=True)
    for f in sorted((root / "fresh" / "images").glob("*.png")):
        pixels = np.asarray(Image.open(f), np.float32) * 1.5
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(brighter / f.name)
    return {name: root / name / "images" for name in ("train", "fresh", "brighter")}


def drift_model(root: Path, train_images: Path) -> Path:
    """A tiny (untrained) U-Net checkpoint with the fingerprint of ``train_images`` and the embedding
    reference of their ingested dataset, as the train step writes them."""
    source = ImageSource(kind="images", path=train_images)
    checkpoint = tiny_checkpoint(root / "model", seed=0)
    write_fingerprint(fingerprint_source(source), checkpoint)
    dataset = root / "dataset"
    write_dataset(read_source(source), dataset)
    groups = sorted(set(dataset_meta(dataset)["group_id"]))
    assert write_model_embeddings(dataset, checkpoint, groups) == checkpoint / EMBEDDINGS_FILE
    return checkpoint


@pytest.mark.slow
@pytest.mark.ray
def test_stop_fails_before_any_actor_and_a_fresh_sample_passes(ray_session, tmp_path: Path) -> None:
    images = drift_archives(tmp_path / "data")
    checkpoint = drift_model(tmp_path, images["train"])
    reference = EmbeddingReference.load(checkpoint / EMBEDDINGS_FILE)
    assert reference.sample.shape == (30, 8)  # every training image, the tiny U-Net's 8 bottom channels

    ctx = make_context(tmp_path, run="stopped")
    source = {"kind": "images", "path": str(images["brighter"])}
    step = SegmentStep(step="segment", model=str(checkpoint), source=source, drift={"action": "stop"})
    with pytest.raises(StepError, match=r"^segment\.drift: the input moved .*\(intensity histogram, image mean"):
        segment.run(step, ctx)
    written = sorted(p.name for p in ctx.run_dir.iterdir())
    assert written == ["drift.html", "drift.json"]  # no masks, no segment-parts, no tables
    body = json.loads((ctx.run_dir / "drift.json").read_text())
    assert body["verdict"] == "drift" and body["n_new"] == 30
    metrics = ctx.tracker.client.get_run(ctx.run_id).data.metrics
    assert metrics["drift_features_moved"] == 2.0 and metrics["drift_psi_intensity"] > 1.0
    logged = {f.path for f in ctx.tracker.client.list_artifacts(ctx.run_id, "segment")}
    assert logged == {"segment/drift.json", "segment/drift.html"}

    fresh = make_context(tmp_path, run="fresh")
    step = SegmentStep(step="segment", model=str(checkpoint), source={"kind": "images", "path": str(images["fresh"])})
    report = check_drift(step, fresh, checkpoint, load_checkpoint(checkpoint), fresh.run_dir, "segment")
    assert report is not None and report.verdict == "ok", report.text()


def test_the_actors_embedding_distances_join_the_report(tmp_path: Path) -> None:
    """No Ray: the per-case distances the actors computed are added to the check's report after segmenting."""
    checkpoint = tiny_checkpoint(tmp_path / "model", seed=0)
    reference = EmbeddingReference.from_embeddings(np.random.default_rng(0).normal(size=(40, 8)))
    reference.save(checkpoint / EMBEDDINGS_FILE)
    ctx, step, before = make_context(tmp_path), SegmentStep(step="segment"), DriftReport((), 40, 10)
    far = np.full(10, 3 * reference.p95)
    report = report_embedding_drift(before, far, checkpoint, step, ctx, ctx.run_dir, "segment1")
    row = report.row("encoder embedding")
    assert row.moved and row.distance == pytest.approx(3.0) and row.threshold == 1.0
    assert json.loads((ctx.run_dir / "drift.json").read_text())["rows"][-1]["feature"] == "encoder embedding"
    metrics = ctx.tracker.client.get_run(ctx.run_id).data.metrics
    assert metrics["segment1_drift_embedding_ratio"] == pytest.approx(3.0)
    assert metrics["segment1_drift_features_moved"] == 1.0
    assert report_embedding_drift(None, far, checkpoint, step, ctx, ctx.run_dir, "segment") is None  # no check ran
    older = tiny_checkpoint(tmp_path / "older", seed=1)  # a model trained before embeddings.npz existed
    row = report_embedding_drift(before, far, older, step, ctx, ctx.run_dir, "segment").row("encoder embedding")
    assert not row.moved and "no embeddings.npz" in row.note


def test_model_references_resolve_to_checkpoints_that_carry_their_drift_files(tmp_path: Path) -> None:
    """No Ray: ``segops drift --model`` takes a registered model by alias or version, or a folder."""
    checkpoint = tiny_checkpoint(tmp_path / "model", seed=0)
    EmbeddingReference.from_embeddings(np.random.default_rng(0).normal(size=(8, 4))).save(checkpoint / EMBEDDINGS_FILE)
    ctx = make_context(tmp_path)
    ctx.tracker.log_model(checkpoint, "drifty", np.zeros((1, 1, 16, 16), np.float32))
    ctx.tracker.set_alias("drifty", "champion", "1")
    uri = ctx.spec.tracking.uri
    fetched = resolve_model("models:/drifty@champion", uri, tmp_path / "fetched")
    assert (
        fetched != checkpoint
        and (fetched / EMBEDDINGS_FILE).read_bytes() == (checkpoint / EMBEDDINGS_FILE).read_bytes()
    )
    assert resolve_model(str(checkpoint), uri, tmp_path / "unused") == checkpoint
    with pytest.raises(StepError, match=r"is not a registered model reference"):
        resolve_model("models:/drifty", uri, tmp_path / "bad")
    with pytest.raises(StepError, match=r"neither a model URI .* nor a checkpoint folder"):
        resolve_model(str(tmp_path), uri, tmp_path / "bad")


def test_segment_input_is_the_steps_dataset_or_the_ingests_and_says_what_is_missing(tmp_path: Path) -> None:
    """The one answer the segment step and its drift check share to "which Parquet dataset does it read"."""
    folder = ImageSource(kind="images", path=tmp_path / "photos")
    with pytest.raises(StepError, match="segment has no source and no ingest step before it"):
        segment_input_path(SegmentStep(step="segment"), make_context(tmp_path, run="none"))
    ingest = IngestResult(folder, tmp_path / "dataset", {})
    ctx = make_context(tmp_path, [ingest], run="ingested")
    assert segment_input_path(SegmentStep(step="segment"), ctx) == tmp_path / "dataset"
    with pytest.raises(StepError, match="records: volumes, but the ingest step found no series with regular"):
        segment_input_path(SegmentStep(step="segment", records="volumes"), ctx)
    with_volumes = make_context(tmp_path, [IngestResult(folder, tmp_path / "dataset", {}, tmp_path / "vol")], run="v")
    assert segment_input_path(SegmentStep(step="segment", records="volumes"), with_volumes) == tmp_path / "vol"
    own = {"kind": "dataset", "path": str(tmp_path / "held-out")}
    assert segment_input_path(SegmentStep(step="segment", source=own), ctx) == tmp_path / "held-out"
    assert segment_input_path(SegmentStep(step="segment", source=folder), ctx) is None  # files, read as files


def test_a_volume_source_naming_no_slice_plane_is_cut_in_the_models_plane(tmp_path: Path) -> None:
    from dataclasses import replace

    from segops.steps.drift import in_model_plane, with_model_inputs

    from ..fingerprints import ct_slices

    axial = replace(ct_slices(2), planes={"axial": 300, "oblique": 2})  # a model trained on axial cuts
    source = VolumeSource(kind="volumes", path=tmp_path)
    assert in_model_plane(source, axial).slice_plane == "axial"
    named = VolumeSource(kind="volumes", path=tmp_path, slice_plane="file")
    assert in_model_plane(named, axial) is named  # what the workflow says wins
    assert in_model_plane(source, replace(axial, planes={"axial": 50, "sagittal": 50})) is source  # no one plane
    assert in_model_plane(source, replace(axial, planes={"": 40})) is source  # photos
    assert in_model_plane(source, None) is source
    images = ImageSource(kind="images", path=tmp_path)
    assert in_model_plane(images, axial) is images
    write_fingerprint(axial, tmp_path / "model")
    step = SegmentStep(step="segment", model=str(tmp_path / "model"), source={"kind": "volumes", "path": str(tmp_path)})
    assert with_model_inputs(step, tmp_path / "model").source.slice_plane == "axial"
    assert with_model_inputs(step, tmp_path / "nothing").source.slice_plane == "file"  # no fingerprint stored
    from segops.config.schema import EvaluateStep

    held_out = EvaluateStep(step="evaluate", source={"kind": "volumes", "path": str(tmp_path)})
    assert with_model_inputs(held_out, tmp_path / "model").source.slice_plane == "axial"  # as the challenger trained


def test_a_dicom_source_naming_no_modalities_reads_the_models(tmp_path: Path) -> None:
    from dataclasses import replace

    from segops.config.schema import DicomSource
    from segops.steps.drift import in_model_modalities

    from ..fingerprints import ct_slices

    ct = replace(ct_slices(2), modalities={"CT": 300})
    source = DicomSource(kind="dicom", path=tmp_path)
    assert in_model_modalities(source, ct).modalities == ("CT",)
    named = DicomSource(kind="dicom", path=tmp_path, modalities=[])
    assert in_model_modalities(named, ct) is named  # [] says: every modality
    assert in_model_modalities(source, replace(ct, modalities={"": 20})) is source  # volume files: no modality
    assert in_model_modalities(source, replace(ct, modalities={"CT": 5, "MR": 5})).modalities == ("CT", "MR")
    volumes = VolumeSource(kind="volumes", path=tmp_path)
    assert in_model_modalities(volumes, ct) is volumes


def test_a_dicom_source_naming_no_skip_leaves_out_secondary_captures_the_model_never_saw(tmp_path: Path) -> None:
    from dataclasses import replace

    from segops.config.schema import DicomSource
    from segops.steps.drift import as_trained, in_model_roles

    from ..fingerprints import ct_slices

    ct = replace(ct_slices(2), modalities={"CT": 300}, roles={"": 300})
    source = DicomSource(kind="dicom", path=tmp_path)
    assert in_model_roles(source, ct).skip == ("localizer", "secondary")
    assert as_trained(source, ct).skip == ("localizer", "secondary") and as_trained(source, ct).modalities == ("CT",)
    named = DicomSource(kind="dicom", path=tmp_path, skip=["localizer"])
    assert in_model_roles(named, ct) is named  # the source said what to skip
    assert in_model_roles(source, replace(ct, roles={"": 280, "secondary": 20})) is source  # trained on some
    assert in_model_roles(source, replace(ct, roles={})) is source  # a fingerprint that does not know the roles
    volumes = VolumeSource(kind="volumes", path=tmp_path)
    assert in_model_roles(volumes, ct) is volumes
