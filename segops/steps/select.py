"""``segops select RUN --budget N``: which cases of a finished run to label next, as a labelling package.

Reads a finished run (its ``manifest.json`` and ``workflow.yaml``), takes the last segment step's
``outputs.parquet``, embeds the candidate cases (unlabelled ones, unless told otherwise) with the
model that segmented them, picks ``budget`` of them by risk-weighted k-center greedy
(:mod:`segops.data.selection`) and writes a package a labeller can work from:

``manifest.csv``
    one row per pick in pick order: rank, case id, source path, ``rel_path``, frame, risk and its
    reasons, embedding distance to the training cases, distance to the earlier picks, and the
    package paths of the image, pre-annotation and the label the labeller is to write.
``images/<rel_path>``
    a copy of each picked case's source file (2D images and DICOM files alike, so the package is
    self-contained and a new ingest reads it as the run did).
``previews/<rel stem>.png``
    DICOM only: an 8-bit rendering (1st-99th percentile) to draw on in a 2D labelling tool.
``pre-annotations/``
    the run's masks in the format ingest reads with ``labels: {kind: mask-png}`` (class indices,
    binary masks as 0/255); instance models add ``coco.json`` (their detections, RLE).
``labels/``
    empty: the labeller saves corrected masks here, under the same names.
``ingest-step.yaml``, ``README.txt``
    the ingest step that reads the labelled package, and what to do.

Images are re-read from the run's ingested dataset (a Ray Data read) or decoded again from the
segment step's source folder (no Ray).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from segops.cluster.datasets import take_records
from segops.cluster.folds import driver_device
from segops.cluster.runtime import ensure_ray
from segops.config.load import apply_tracking_env, validate_workflow_text
from segops.config.schema import ClusterSpec, DatasetSource, DicomSource, ImageSource, SegmentStep, WorkflowSpec
from segops.data.labels import mask_png_path
from segops.data.selection import RISK_WEIGHT, select_cases
from segops.engine.checkpoint import META_FILE, load_checkpoint
from segops.engine.embeddings import embed
from segops.errors import DecodeError, StepError
from segops.outputs.atomic import atomic_write_bytes, atomic_write_text
from segops.outputs.case_outputs import checkpoint_digest
from segops.outputs.layout import mirror_stem
from segops.outputs.manifest import MANIFEST_FILE, load_manifest
from segops.outputs.overlays import decode_case, guess_source, percentile_scale
from segops.outputs.storage import read_bytes, with_options
from segops.steps.drift import resolve_model
from segops.steps.results import SegmentResult
from segops.tracking import is_model_uri

log = logging.getLogger(__name__)

#: Cases embedded at a time (their pixels are in memory together).
CHUNK = 64
#: The package's files and folders.
PACKAGE_MANIFEST = "manifest.csv"
INGEST_SNIPPET = "ingest-step.yaml"
MANIFEST_COLUMNS = (
    "rank",
    "case_id",
    "source_uri",
    "rel_path",
    "frame",
    "risk",
    "risk_reasons",
    "embedding_distance",
    "selection_distance",
    "image",
    "preview",
    "pre_annotation",
    "label",
)


@dataclass(frozen=True)
class FinishedRun:
    """What ``select`` reads of a finished run.

    Attributes:
        step: the segment step's spec; ``segment``: its result (tables).
        dataset: the records it segmented (an ingest's or a dataset source), or None when it
            read a folder (``source``) itself.
        kind: ``images`` or ``dicom``: how a new ingest reads the package's ``images/``.
    """

    run_dir: Path
    spec: WorkflowSpec
    step: SegmentStep
    segment: SegmentResult
    dataset: Path | None
    source: DicomSource | ImageSource | None
    checkpoint: Path
    kind: str


@dataclass(frozen=True)
class LabellingPackage:
    """Where ``select`` wrote the package, and its manifest rows (pick order)."""

    folder: Path
    manifest: pd.DataFrame
    candidates: int
    pattern: str


def find_run(run: str | Path, runs_dir: Path = Path("runs")) -> Path:
    """A run folder: ``run`` itself when it holds a manifest, else ``runs_dir/run``.

    Raises:
        StepError: neither holds a ``manifest.json``.
    """
    for folder in (Path(run), runs_dir / str(run)):
        if (folder / MANIFEST_FILE).is_file():
            return folder.resolve()
    raise StepError(f"{run}: no {MANIFEST_FILE} there nor in {runs_dir / str(run)}; give a run folder or a run id")


def read_run(run_dir: Path, model_dst: Path) -> FinishedRun:
    """The last finished segment step of a run, its input and its model (a model URI that the run
    did not download is downloaded into ``model_dst``).

    Raises:
        StepError: no finished segment step, a 3D run, or a step that read no 2D source.
    """
    manifest = load_manifest(run_dir)
    spec = apply_tracking_env(validate_workflow_text((run_dir / "workflow.yaml").read_text(), check_paths=False))
    done = [s for s in manifest["steps"] if s["state"] == "done"]
    index = next((s["index"] for s in reversed(done) if s["step"] == "segment"), None)
    if index is None:
        raise StepError(f"{run_dir}: the run has no finished segment step, so there is nothing to pick from")
    step: SegmentStep = spec.steps[index]
    segment = SegmentResult.from_manifest(manifest["steps"][index]["outputs"])
    ingest = next((s for s in reversed(done) if s["step"] == "ingest" and s["index"] < index), None)
    if step.records == "volumes" or (step.source is not None and step.source.kind == "volumes"):
        raise StepError("select writes 2D labelling packages; this run segmented volumes")
    source, dataset = None, None
    if isinstance(step.source, DatasetSource):
        dataset = step.source.path
    elif step.source is not None:
        source = step.source
    elif ingest is not None:
        dataset, source = Path(ingest["outputs"]["dataset"]), spec.steps[ingest["index"]].source
    else:
        raise StepError(f"{run_dir}: the segment step has no source and no ingest step before it")
    kind = source.kind if source is not None else _kind_of(pd.read_parquet(segment.outputs, columns=["source_uri"]))
    if kind not in ("images", "dicom"):
        raise StepError(f"select writes 2D labelling packages of images or DICOM files; this run read {kind}")
    checkpoint = _checkpoint(run_dir, spec, step, segment, done, index, model_dst)
    return FinishedRun(run_dir, spec, step, segment, dataset, source, checkpoint, kind)


def _checkpoint(
    run_dir: Path, spec: WorkflowSpec, step: SegmentStep, segment: SegmentResult, done: list, index: int, dst: Path
) -> Path:
    """The model the segment step used: the run's trained one, a local folder, or a model URI's
    checkpoint (the copy the run downloaded when its weights match the outputs' model digest)."""
    if step.model is None:
        train = next((s for s in reversed(done) if s["step"] == "train" and s["index"] < index), None)
        if train is None:
            raise StepError(f"{run_dir}: the segment step names no model and no train step ran before it")
        return Path(train["outputs"]["checkpoint"])
    if not is_model_uri(step.model):
        return Path(step.model)
    downloaded = run_dir / "model-download"
    found = sorted((p.parent for p in downloaded.rglob(META_FILE)), key=lambda p: len(p.parts))
    match = next((p for p in found if checkpoint_digest(p) == segment.model_digest), None)
    return match if match is not None else resolve_model(step.model, spec.tracking.uri, dst)


def candidate_cases(outputs: pd.DataFrame, include_labelled: bool = False, pool: int | None = None) -> pd.DataFrame:
    """The cases ``select`` may pick: unlabelled ones (every one with ``include_labelled``) that got
    a PNG mask, the ``pool`` riskiest when given; sorted by case id. A run segmented with
    ``review.enabled: false`` has no risk: every case's counts as unknown (NaN), so the picks are
    the most diverse cases and ``pool`` keeps the first by case id."""
    if "risk" not in outputs:
        log.warning("the run computed no risk (segment.review.enabled: false): picking by diversity alone")
        outputs = outputs.assign(risk=np.nan, risk_reasons="")
    rows = outputs[outputs["mask_path"].astype(str).str.endswith(".png")]
    if not include_labelled:
        rows = rows[~rows["has_label"].astype(bool)]
    if pool is not None:
        rows = rows.assign(_r=pd.to_numeric(rows["risk"], errors="coerce").fillna(-np.inf))
        rows = rows.sort_values(["_r", "case_id"], ascending=[False, True]).head(pool).drop(columns="_r")
    return rows.sort_values("case_id").reset_index(drop=True)


def case_images(run: FinishedRun, rows: pd.DataFrame) -> list[np.ndarray | None]:
    """Each row's image (C, H, W) as the model saw it, in row order; None for a case that no longer
    reads (its file moved or no longer decodes)."""
    if run.dataset is not None:
        found = {r["case_id"]: np.asarray(r["image"]) for r in take_records(run.dataset, rows["case_id"].tolist())}
        return [found.get(c) for c in rows["case_id"]]
    images: list[np.ndarray | None] = []
    for row in rows.to_dict("records"):
        try:
            record = decode_case(row["source_uri"], row["rel_path"], row["case_id"], run.source, int(row["frame"]))
            images.append(np.asarray(record["image"]))
        except (DecodeError, FileNotFoundError, OSError) as exc:
            log.warning("case %s no longer reads (%s): left out", row["case_id"], exc)
            images.append(None)
    return images


def embed_cases(run: FinishedRun, rows: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """(the rows whose image still reads, their (N, D) embeddings), :data:`CHUNK` cases at a time."""
    loaded = load_checkpoint(run.checkpoint, driver_device())
    if loaded.model_spec.spatial_dims == 3:
        raise StepError("select writes 2D labelling packages; this run's model is 3D")
    kept, parts = [], []
    for start in range(0, len(rows), CHUNK):
        chunk = rows.iloc[start : start + CHUNK]
        images = case_images(run, chunk)
        ok = [i for i, image in enumerate(images) if image is not None]
        if ok:
            kept.append(chunk.iloc[ok])
            parts.append(embed(loaded, [images[i] for i in ok], driver_device()))
        log.info("embedded %d of %d candidate case(s)", min(start + CHUNK, len(rows)), len(rows))
    if not parts:
        return rows.iloc[:0], np.zeros((0, 0), np.float32)
    return pd.concat(kept, ignore_index=True), np.concatenate(parts)


def select_for_labelling(
    run: str | Path,
    budget: int,
    out_dir: Path | None = None,
    include_labelled: bool = False,
    num_cpus: int | None = None,
    pool: int | None = None,
    risk_weight: float = RISK_WEIGHT,
) -> LabellingPackage:
    """Pick ``budget`` cases of a finished run to label next and write their labelling package
    (module docstring) into ``out_dir`` (default ``<run folder>/select-<budget>``).

    Raises:
        StepError: no such run, no finished segment step, a 3D run, or no candidate case.
    """
    run_dir = find_run(run)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / f"select-{budget}"
    finished = read_run(run_dir, out_dir / ".model")
    outputs = pd.read_parquet(finished.segment.outputs)
    rows = candidate_cases(outputs, include_labelled, pool)
    if rows.empty:
        what = "segmented" if include_labelled else "unlabelled"
        raise StepError(
            f"{run_dir}: no {what} case with a PNG mask to pick from (--include-labelled adds labelled ones)"
        )
    if finished.dataset is not None:
        ensure_ray(ClusterSpec(num_cpus=num_cpus))
    if checkpoint_digest(finished.checkpoint) != finished.segment.model_digest:
        log.warning("the model in %s is not the one that segmented the run (weights differ)", finished.checkpoint)
    rows, embeddings = embed_cases(finished, rows)
    risk = pd.to_numeric(rows["risk"], errors="coerce").to_numpy(float)
    picked = select_cases(rows["case_id"].tolist(), risk, embeddings, budget, risk_weight)
    picks = rows.iloc[picked.indices].reset_index(drop=True).assign(selection_distance=picked.distances)
    log.info("picked %d of %d candidate case(s)", len(picks), len(rows))
    return write_package(finished, picks, out_dir, len(rows))


def label_pattern(frames: pd.Series) -> str:
    """The mask-png ``pattern`` of the package's masks: ``{rel_stem}.png``, or with the frame
    number when a picked case is a frame of a multi-frame file."""
    return "{rel_stem}.png" if (frames.astype(int) == 0).all() else "{rel_stem}.f{frame:04d}.png"


def write_package(run: FinishedRun, picks: pd.DataFrame, out_dir: Path, candidates: int) -> LabellingPackage:
    """The labelling package of ``picks`` (rows of ``outputs.parquet`` in pick order, with their
    ``selection_distance``) in ``out_dir``; see the module docstring."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "labels").mkdir(exist_ok=True)
    pattern = label_pattern(picks["frame"])
    kind = run.kind
    previews = case_images(run, picks) if kind == "dicom" else [None] * len(picks)
    rows = []
    for rank, (row, image) in enumerate(zip(picks.to_dict("records"), previews), start=1):
        rel, frame = str(row["rel_path"]), int(row["frame"])
        mask_rel = mask_png_path("", pattern, rel, frame).as_posix()
        rows.append(
            {
                "rank": rank,
                **{k: row[k] for k in ("case_id", "source_uri", "rel_path", "frame", "risk", "risk_reasons")},
                "embedding_distance": row.get("embedding_distance", float("nan")),
                "selection_distance": row["selection_distance"],
                "image": _copy_image(row["source_uri"], out_dir / "images" / rel, f"images/{rel}"),
                "preview": _preview(image, out_dir, f"previews/{mirror_stem(rel, frame)}.png"),
                "pre_annotation": _copy_mask(row["mask_path"], run, out_dir / "pre-annotations" / mask_rel, mask_rel),
                "label": f"labels/{mask_rel}",
            }
        )
    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    if (picks.get("coco_path", pd.Series(dtype=str)).astype(str) != "").any():
        _write_coco(picks, run, out_dir / "pre-annotations" / "coco.json")
    atomic_write_text(out_dir / PACKAGE_MANIFEST, manifest.to_csv(index=False))
    atomic_write_text(out_dir / INGEST_SNIPPET, ingest_snippet(out_dir, kind, pattern, run))
    atomic_write_text(out_dir / "README.txt", package_readme(run, out_dir, manifest, kind, pattern, candidates))
    return LabellingPackage(out_dir, manifest, candidates, pattern)


def _kind_of(outputs: pd.DataFrame) -> str:
    """How a dataset source's cases were read, from their files' names: ``images``, ``dicom``,
    ``volumes``, ``mixed files`` or ``no files``."""
    kinds = {guess_source(Path(str(u))).kind for u in outputs["source_uri"]}
    return kinds.pop() if len(kinds) == 1 else ("mixed files" if kinds else "no files")


def _copy_image(source_uri: str, dst: Path, rel: str) -> str:
    """Copy a case's source file into the package (once per file); "" when it is not on this machine."""
    if dst.is_file():
        return rel
    if not Path(source_uri).is_file():
        log.warning("image %s is not on this machine: not copied into the package", source_uri)
        return ""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source_uri, dst)
    return rel


def _preview(image: np.ndarray | None, out_dir: Path, rel: str) -> str:
    """An 8-bit PNG rendering of a DICOM case at ``out_dir/rel``, for 2D labelling tools; "" for other cases."""
    if image is None:
        return ""
    from PIL import Image

    pixels = (percentile_scale(np.asarray(image, np.float32)) * 255).round().astype(np.uint8)
    (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(out_dir / rel, format="PNG")
    return rel


def _copy_mask(mask_path: str, run: FinishedRun, dst: Path, rel: str) -> str:
    """The run's mask PNG (class indices, binary as 0/255: what mask-png ingest reads) into the package."""
    data = read_bytes(with_options(str(mask_path), run.spec.cluster.storage))
    atomic_write_bytes(dst, data)
    return f"pre-annotations/{rel}"


def _write_coco(picks: pd.DataFrame, run: FinishedRun, path: Path) -> Path:
    """The picks' detections as one COCO file (images by ``rel_path``, RLE masks), for instance labelling."""
    images, annotations = [], []
    rows = picks[picks["coco_path"].astype(str) != ""]
    for image_id, coco_file in enumerate(rows["coco_path"], start=1):
        doc = json.loads(read_bytes(with_options(str(coco_file), run.spec.cluster.storage)))
        images.append({"id": image_id, "file_name": doc["rel_path"], "height": doc["height"], "width": doc["width"]})
        images[-1] |= {"frame": doc["frame"], "case_id": doc["case_id"]}
        for result in doc["results"]:
            annotations.append(result | {"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0})
    classes = load_checkpoint(run.checkpoint).model_spec.classes
    categories = [{"id": c, "name": run.step.segments.get(c, f"class {c}")} for c in range(1, classes)]
    doc = {"images": images, "categories": categories, "annotations": annotations}
    return atomic_write_text(path, json.dumps(doc))


def ingest_snippet(out_dir: Path, kind: str, pattern: str, run: FinishedRun) -> str:
    """The ingest step that reads the labelled package (``images/`` and ``labels/``), as YAML: mask-png
    labels, or for an instance model (a ``coco.json`` pre-annotation) COCO instances in ``labels/coco.json``."""
    labels: dict[str, Any] = {"kind": "mask-png", "path": str((out_dir / "labels").resolve())}
    if (out_dir / "pre-annotations" / "coco.json").is_file():
        labels = {"kind": "coco", "path": str((out_dir / "labels" / "coco.json").resolve()), "instances": True}
    elif pattern != "{rel_stem}.png":
        labels["pattern"] = pattern
    step = {"step": "ingest", "source": {"kind": kind, "path": str((out_dir / "images").resolve()), "labels": labels}}
    text = yaml.safe_dump([step], sort_keys=False)
    if run.dataset is not None:
        text += f"# the run's own labelled cases, for the train step:\n# extra_datasets: [{run.dataset.resolve()}]\n"
    return text


def package_readme(
    run: FinishedRun, out_dir: Path, manifest: pd.DataFrame, kind: str, pattern: str, candidates: int
) -> str:
    """What the labeller and whoever retrains do with the package."""
    coco = (out_dir / "pre-annotations" / "coco.json").is_file()
    what = "DICOM files (draw on previews/, which have the same pixel grid)" if kind == "dicom" else "images"
    instances = (
        "\n                  coco.json: the model's instances (COCO, RLE masks, file_name = rel_path);\n"
        "                  for an instance model, correct it and save it as labels/coco.json"
        if coco
        else ""
    )
    labels = "coco (instances: true)" if coco else f"mask-png, pattern: {pattern}"
    dataset = run.dataset.resolve() if run.dataset is not None else "<the dataset folder of an earlier ingest>"
    return f"""Labelling package from run {run.run_dir.name}: {len(manifest)} case(s) of {candidates} candidate(s),
picked by `segops select` (risky cases first, near-duplicates left out).

manifest.csv      one row per case, in the order to label them (rank 1 first), with why the model
                  doubts it (risk, risk_reasons) and the files below
images/           copies of the source {what}
pre-annotations/  the model's current masks as PNG: pixel value = class; a two-class mask is
                  0 = background, 255 = foreground{instances}
labels/           empty: your corrected masks go here

For the labeller:
  1. For each row of manifest.csv, open the `image` (or `preview`) and its `pre_annotation`.
  2. Correct the mask (or draw it anew) at the image's exact size, single channel, same values
     (0/255 for two classes), and save it as the row's `label` path (labels/..., the same name as
     the pre-annotation). Do not copy uncorrected pre-annotations into labels/: the model would
     learn its own mistakes.
  3. Cases left without a file in labels/ stay unlabelled: training ignores them.

To retrain (workflows/retrain.yaml):
  1. Replace its ingest step with the one in {INGEST_SNIPPET} (source kind: {kind}, labels kind:
     {labels}); its model, preprocessing, evaluate and promote steps stay as they are.
  2. To keep training on the run's own labelled cases, add its dataset to the train step:
     extra_datasets: [{dataset}]
  3. segops validate <workflow>; then segops run <workflow>.
"""
