"""The drift check: is the input like the data the model was trained on?

In the segment step (:func:`check_drift`), before any actor starts: the first ``segment.drift.sample``
images of the input are fingerprinted (a Ray Data pass over that many only) and compared with
the ``fingerprint.json`` stored with the model (:func:`segops.data.drift.compare`). ``warn`` logs
the table of what moved and goes on, ``stop`` fails the step with it; either way ``drift.json``
and ``drift.html`` go to the step's folder and MLflow (metrics ``drift_psi_intensity``,
``drift_features_moved``).

``segops drift DIR --model REF`` (:func:`drift_check`) runs the same check alone and adds the
encoder-embedding distance of the sampled images to the training cases' (``embeddings.npz``
beside the model).
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from segops.cluster.datasets import load_dataset, read_source
from segops.cluster.embeddings import dataset_embeddings
from segops.cluster.fingerprint import FINGERPRINT_FILE, fingerprint_sample
from segops.cluster.runtime import ensure_ray
from segops.config.schema import (
    ClusterSpec,
    DatasetSource,
    DicomSource,
    EvaluateStep,
    ImageSource,
    SegmentStep,
    VolumeSource,
)
from segops.config.steps import DriftSpec
from segops.data.dicom_roles import SECONDARY
from segops.data.drift import DriftReport, DriftRow, compare, embedding_row, missing_row
from segops.data.fingerprint import Fingerprint
from segops.data.slice_planes import trained_plane
from segops.engine.checkpoint import META_FILE, LoadedModel, load_checkpoint
from segops.engine.embeddings import EMBEDDINGS_FILE, EmbeddingReference
from segops.errors import StepError
from segops.outputs.atomic import atomic_write_text
from segops.steps.context import RunContext
from segops.steps.model_refs import parse_models_uri
from segops.steps.results import IngestResult
from segops.tracking import download_checkpoint, is_model_uri

log = logging.getLogger(__name__)

DRIFT_JSON = "drift.json"
DRIFT_HTML = "drift.html"
StepT = TypeVar("StepT", SegmentStep, EvaluateStep)
#: A DICOM Modality value a source's ``modalities`` takes (``DicomSelection.modalities``).
_MODALITY = re.compile(r"[A-Z0-9]{1,16}")
#: Input kinds ``segops drift`` reads.
KINDS = ("images", "dicom", "volumes", "dataset")


def model_embeddings(checkpoint: Path, step: SegmentStep) -> EmbeddingReference | None:
    """The training cases' embeddings stored with the model, for the actors' per-case distances;
    None with ``drift.action: off`` or for a model trained before they were stored."""
    path = Path(checkpoint) / EMBEDDINGS_FILE
    return EmbeddingReference.load(path) if step.drift.action != "off" and path.is_file() else None


def check_drift(
    step: SegmentStep, ctx: RunContext, checkpoint: Path, loaded: LoadedModel, root: Path, artifact_dir: str
) -> DriftReport | None:
    """The segment step's drift check (see the module docstring); None when ``action: off`` or
    the model has no stored fingerprint.

    Raises:
        StepError: ``action: stop`` and a feature moved (the message holds the table).
    """
    spec = step.drift
    if spec.action == "off":
        return None
    train = read_model_fingerprint(checkpoint)
    if train is None:
        log.warning(
            "drift check skipped: the model in %s has no %s (trained by an older segops)", checkpoint, FINGERPRINT_FILE
        )
        return None
    edges = train.intensity_histogram.edges if train.intensity_histogram is not None else None
    new = fingerprint_sample(_step_input(step, ctx), spec.sample, loaded.model_spec.task, ctx.spec.seed, edges)
    report = compare(train, new, spec)
    paths = write_report(report, root, f"drift check of {artifact_dir}")
    prefix = "" if artifact_dir == "segment" else f"{artifact_dir}_"
    ctx.tracker.log_metrics({prefix + key: value for key, value in report.metrics().items()})
    for path in paths:
        ctx.tracker.log_artifact(path, artifact_dir)
    if not report.moved:
        log.info("drift check: nothing moved over %d sampled input images (see %s)", new.n_images, paths[0])
        return report
    names = ", ".join(r.feature for r in report.moved)
    if spec.action == "stop":
        raise StepError(
            f"segment.drift: the input moved from the training data ({names}) over {new.n_images} sampled "
            f"images; no image was segmented (segment.drift.action: stop; set warn to segment anyway):\n"
            f"{report.text(only_moved=True)}\nfull table: {paths[0]}"
        )
    log.warning(
        "drift check: the input moved from the training data (%s) over %d sampled images; segmenting anyway "
        "(segment.drift.action: warn):\n%s",
        names,
        new.n_images,
        report.text(only_moved=True),
    )
    return report


def with_model_inputs(step: StepT, checkpoint: str | Path) -> StepT:
    """``step`` (segment, evaluate) whose source reads what the model was trained on where it does
    not say (:func:`as_trained`); else as it is."""
    source = as_trained(step.source, read_model_fingerprint(checkpoint))
    return step if source is step.source else step.model_copy(update={"source": source})


def as_trained(source: object, train: Fingerprint | None):
    """``source`` with the slice plane, DICOM modalities and image roles of ``train`` where it does
    not name its own (:func:`in_model_plane`, :func:`in_model_modalities`, :func:`in_model_roles`)."""
    return in_model_roles(in_model_modalities(in_model_plane(source, train), train), train)


def in_model_plane(source: object, train: Fingerprint | None):
    """A volume source without a ``slice_plane`` of its own, cut in the plane ``train``'s slices lay
    in: a model trained on KiTS' files cut axially is given axial slices of the next ones too."""
    if not isinstance(source, VolumeSource) or "slice_plane" in source.model_fields_set or train is None:
        return source
    plane = trained_plane(train.planes)
    if plane is None or plane == source.slice_plane:
        return source
    log.info(
        "source.slice_plane: %s, the plane of the model's training slices (%d of %d); set it to cut another",
        plane,
        train.planes[plane],
        sum(train.planes.values()),
    )
    return source.model_copy(update={"slice_plane": plane})


def in_model_modalities(source: object, train: Fingerprint | None):
    """A DICOM source without ``modalities`` of its own, reading the modalities ``train``'s images
    had (a CT model given a PET/CT archive segments its CTs and lists the PET as skipped); as it is
    where the training images were no DICOM (photos, volume files: no modality that names them)."""
    if not isinstance(source, DicomSource) or "modalities" in source.model_fields_set or train is None:
        return source
    trained = sorted(m.strip().upper() for m in train.modalities)
    if not trained or not all(_MODALITY.fullmatch(m) for m in trained):
        return source
    log.info("source.modalities: %s, the model's training images' (set it to read others)", ", ".join(trained))
    return source.model_copy(update={"modalities": tuple(trained)})


def in_model_roles(source: object, train: Fingerprint | None):
    """A DICOM source without ``skip`` of its own, skipping secondary captures too where none of
    ``train``'s images was one: a CT model given a hospital's export segments its slices and lists
    the dose-report screenshots as skipped. As it is where the fingerprint does not know the roles
    (written before records kept them) or the model trained on secondary captures."""
    if not isinstance(source, DicomSource) or "skip" in source.model_fields_set or train is None:
        return source
    if not train.roles or train.roles.get(SECONDARY, 0) or SECONDARY in source.skip:
        return source
    log.info("source.skip: secondary captures too, as none of the model's %d training images was one", train.n_images)
    return source.model_copy(update={"skip": (*source.skip, SECONDARY)})


def read_model_fingerprint(checkpoint: str | Path) -> Fingerprint | None:
    """The training fingerprint stored in a checkpoint folder, or None when it has none."""
    path = Path(checkpoint) / FINGERPRINT_FILE
    return Fingerprint.from_json(path.read_text(encoding="utf-8")) if path.is_file() else None


def segment_input_path(step: SegmentStep, ctx: RunContext) -> Path | None:
    """The Parquet dataset a segment step reads (the step and this check share it): its own dataset
    source, else the ingest step's dataset (its volumes with ``records: volumes``); None when the
    source is a folder of files, read as files.

    Raises:
        StepError: no source and no ingest step before it, or ``records: volumes`` with no volumes.
    """
    if isinstance(step.source, DatasetSource):
        return step.source.path
    if step.source is not None:
        return None
    ingest = ctx.require(IngestResult, "segment has no source and no ingest step before it")
    if step.records != "volumes":
        return ingest.dataset
    if ingest.volumes is None:
        raise StepError("records: volumes, but the ingest step found no series with regular geometry")
    return ingest.volumes


def _step_input(step: SegmentStep, ctx: RunContext):
    """The segment step's input, read lazily (the same choice as the step itself makes)."""
    path = segment_input_path(step, ctx)
    return read_source(step.source, streaming=True) if path is None else load_dataset(path, materialize=False)


def embedding_drift(distances: np.ndarray, checkpoint: str | Path, threshold: float) -> DriftRow:
    """The encoder-embedding row for per-case ``distances`` (from
    :meth:`~segops.engine.embeddings.EmbeddingReference.distance`); listed as not compared when the
    model has no ``embeddings.npz``."""
    path = Path(checkpoint) / EMBEDDINGS_FILE
    if not path.is_file():
        return missing_row(
            "encoder embedding",
            "median distance / training p95",
            threshold,
            f"no {EMBEDDINGS_FILE} stored with the model (trained by an older segops)",
        )
    return embedding_row(EmbeddingReference.load(path).p95, distances, threshold)


def report_embedding_drift(
    report: DriftReport | None,
    distances: np.ndarray,
    checkpoint: Path,
    step: SegmentStep,
    ctx: RunContext,
    root: Path,
    artifact_dir: str,
) -> DriftReport | None:
    """After the actors segmented: add their per-case embedding ``distances`` to the drift check's
    ``report`` (from :func:`check_drift`; None: no check ran, nothing is added), rewrite and re-log
    drift.json/html and log ``drift_embedding_ratio``. A moved embedding only warns: the images
    are segmented by then."""
    if report is None:
        return None
    row = embedding_drift(np.asarray(distances, np.float64), checkpoint, step.drift.max_embedding)
    report = report.with_row(row)
    prefix = "" if artifact_dir == "segment" else f"{artifact_dir}_"
    ctx.tracker.log_metrics({prefix + key: value for key, value in report.metrics().items()})
    for path in write_report(report, root, f"drift check of {artifact_dir}"):
        ctx.tracker.log_artifact(path, artifact_dir)
    if row.moved:
        log.warning(
            "drift check: the segmented cases' encoder embeddings moved from the training cases' (median distance "
            "%.2f x the training 95th percentile, threshold %.2f)",
            row.distance,
            row.threshold,
        )
    return report


def write_report(report: DriftReport, folder: Path, title: str) -> tuple[Path, Path]:
    """``drift.json`` and ``drift.html`` in ``folder``; returns both."""
    folder.mkdir(parents=True, exist_ok=True)
    return (
        atomic_write_text(folder / DRIFT_JSON, report.to_json()),
        atomic_write_text(folder / DRIFT_HTML, report_html(report, title)),
    )


def report_html(report: DriftReport, title: str) -> str:
    """A self-contained HTML page: the verdict and every row, moved ones highlighted."""
    head = "".join(
        f"<th>{h}</th>" for h in ("feature", "test", "train", "new", "distance", "threshold", "moved", "note")
    )
    body = []
    for r in report.rows:
        cells = (
            r.feature,
            r.test,
            r.train,
            r.new,
            _num(r.distance),
            _num(r.threshold),
            "yes" if r.moved else "no",
            r.note,
        )
        style = ' style="background:#fdd"' if r.moved else ""
        body.append(f"<tr{style}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    verdict = f"{len(report.moved)} feature(s) moved" if report.moved else "nothing moved"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{verdict}: {report.n_new} sampled images vs {report.n_train} "
        f"training images.</p><table border='1' cellspacing='0' cellpadding='4'><tr>{head}</tr>{''.join(body)}"
        "</table></body></html>\n"
    )


def _num(value: float) -> str:
    return "-" if np.isnan(value) else f"{value:.4g}"


@dataclass(frozen=True)
class DriftCheck:
    """What ``segops drift`` found and wrote."""

    report: DriftReport
    json_path: Path
    html_path: Path
    checkpoint: Path


def drift_check(
    folder: Path,
    model: str,
    tracking_uri: str,
    out_dir: Path,
    spec: DriftSpec | None = None,
    kind: str | None = None,
    num_cpus: int | None = None,
    seed: int = 0,
) -> DriftCheck:
    """The whole drift check of ``folder`` against ``model`` (a checkpoint folder or a model URI):
    image statistics and census of the first ``spec.sample`` images, and their encoder embeddings.

    Raises:
        StepError: no such model, a model without a fingerprint, or an unknown ``kind``.
    """
    spec = spec or DriftSpec()
    checkpoint = resolve_model(model, tracking_uri, out_dir / "model")
    train = read_model_fingerprint(checkpoint)
    if train is None:
        raise StepError(f"{model}: no {FINGERPRINT_FILE} stored with this model (trained by an older segops)")
    loaded = load_checkpoint(checkpoint)
    ensure_ray(ClusterSpec(num_cpus=num_cpus))
    ds = _folder_input(folder, kind or guess_kind(folder), train).limit(spec.sample).materialize()
    edges = train.intensity_histogram.edges if train.intensity_histogram is not None else None
    new = fingerprint_sample(ds, spec.sample, loaded.model_spec.task, seed, edges)
    report = compare(train, new, spec)
    report = report.with_row(embedding_drift(dataset_embeddings(ds, loaded), checkpoint, spec.max_embedding))
    json_path, html_path = write_report(report, out_dir, f"drift check of {folder} against {model}")
    return DriftCheck(report, json_path, html_path, checkpoint)


def resolve_model(ref: str, tracking_uri: str, dst: Path) -> Path:
    """A checkpoint folder, or the checkpoint of a model URI (``models:/name@alias``, ``models:/name/3``,
    ``runs:/…``) downloaded into ``dst``."""
    if is_model_uri(ref):
        if ref.startswith("models:/"):
            parse_models_uri(ref)  # a malformed reference says what it expected
        return download_checkpoint(ref, tracking_uri, dst)
    path = Path(ref)
    if not (path / META_FILE).is_file():
        raise StepError(f"{ref} is neither a model URI (models:/name@alias) nor a checkpoint folder (no {META_FILE})")
    return path


def guess_kind(folder: Path) -> str:
    """``dataset`` for a folder of Parquet files, ``dicom`` when a ``.dcm`` file or a file with the DICM
    preamble is among the first 200 files, ``volumes`` for NIfTI/NRRD/MHA files, else ``images``."""
    if not folder.is_dir():
        raise StepError(f"{folder} is not a folder")
    if any(folder.glob("*.parquet")):
        return "dataset"
    files = [p for _, p in zip(range(200), (p for p in sorted(folder.rglob("*")) if p.is_file()))]
    names = [p.name.lower() for p in files]
    if any(n.endswith(".dcm") for n in names) or any(_has_preamble(p) for p in files[:20]):
        return "dicom"
    if any(n.endswith((".nii", ".nii.gz", ".nrrd", ".mha")) for n in names):
        return "volumes"
    return "images"


def _has_preamble(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(132)[128:] == b"DICM"


def _folder_input(folder: Path, kind: str, train: Fingerprint):
    if kind not in KINDS:
        raise StepError(f"--kind {kind!r} is not one of {', '.join(KINDS)}")
    if kind == "dataset":
        return load_dataset(folder, materialize=False)
    source = {"images": ImageSource, "dicom": DicomSource, "volumes": VolumeSource}[kind](kind=kind, path=folder)
    return read_source(as_trained(source, train), streaming=True)
