"""``segment``: streaming actor-pool inference → outputs per case, report, overlays; resumable."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as pads

from segops.cluster.datasets import load_dataset, read_source, take_records
from segops.cluster.fingerprint import FINGERPRINT_FILE
from segops.cluster.infer import iter_parts, segment_dataset, size_actor_pool
from segops.cluster.label_check import check_dataset_labels, check_source_labels
from segops.config.schema import DatasetSource, SegmentStep
from segops.config.sources import ignores_void
from segops.data.laterality import side_pairs
from segops.data.mask_files import read_mask_png
from segops.data.records import STATUS_FAILED, STATUS_OK, quarantine_table
from segops.data.transforms import prepare_image
from segops.engine.cases import InferenceSettings
from segops.engine.checkpoint import LoadedModel, load_checkpoint
from segops.engine.instance_eval import entries_ap
from segops.engine.postprocess import postprocessing_from_meta
from segops.engine.risk import RISK_COLUMNS, RiskReference
from segops.errors import DecodeError, StepError
from segops.outputs.atomic import atomic_write, atomic_write_text, remove_stale_temps
from segops.outputs.case_outputs import OutputConfig, checkpoint_digest
from segops.outputs.measurements import write_measurement_chunks
from segops.outputs.overlays import decode_case, overlay_rgb
from segops.outputs.reports import (
    REPORT_PARTS,
    SplitGroups,
    build_outputs,
    build_report,
    component_chunks,
    report_metrics,
    split_column,
    write_table,
)
from segops.outputs.review import build_review, write_review_page
from segops.outputs.series_rtstruct import (
    Geometry,
    record_geometry,
    volume_rtstructs,
    write_series_rtstructs,
)
from segops.outputs.storage import is_uri, join, read_bytes, with_options
from segops.steps.actor_memory import sized_for_run
from segops.steps.context import RunContext
from segops.steps.drift import (
    check_drift,
    model_embeddings,
    report_embedding_drift,
    segment_input_path,
    with_model_inputs,
)
from segops.steps.model_refs import step_checkpoint
from segops.steps.results import IngestResult, SegmentResult, TrainResult

log = logging.getLogger(__name__)

#: The order cases are numbered in for COCO: ``coco_results.json`` and the step's mask AP use the same
#: ids (COCOeval breaks score ties between images by id).
FILE_ORDER = ["rel_path", "frame"]


def run(step: SegmentStep, ctx: RunContext) -> SegmentResult:
    # the first segment step writes into the run folder; a k-th one into segment-<k>/, and its
    # MLflow metrics and artifacts are named segment<k>, so no step overwrites another's
    index = ctx.count(SegmentResult)
    split = _split_groups(ctx)
    sub = () if index == 0 else (f"segment-{index}",)
    root, node_root = ctx.run_dir.joinpath(*sub), ctx.node_dir(*sub)  # tables here; actors write there
    artifact_dir = "segment" if index == 0 else f"segment{index}"
    # the step's model (a folder or a model URI, aliases pinned) or this run's trained one
    checkpoint, _ = step_checkpoint(step.model, ctx, "segment", "model-download")
    step = with_model_inputs(step, checkpoint)  # a source's slice plane and modalities: the model's if unsaid
    loaded = load_checkpoint(checkpoint)  # fail fast on the driver, before any actor starts
    instance = loaded.model_spec.task == "instance"
    _check_model_fits_step(step, loaded)
    drift = check_drift(step, ctx, checkpoint, loaded, root, artifact_dir)  # before any actor starts; stop raises
    digest = checkpoint_digest(checkpoint)
    pool = size_actor_pool(step.actors, ctx.resources)
    ds, total, dataset_path = _input_dataset(step, ctx, pool.read_cpus, loaded.model_spec)
    log.info(
        "segmenting with %d-%d actor(s) x %s CPU%s",
        pool.min_actors,
        pool.max_actors,
        pool.cpus_per_actor,
        " + 1 GPU" if pool.gpus_per_actor else "",
    )
    config = OutputConfig(
        str(node_root),
        tuple(step.outputs),
        step.layout,
        dict(step.segments),
        loaded.model_spec.classes,
        digest,
        ctx.run_id,
    )
    # the training fingerprint the risk compares each case with: read once here, shipped to the actors
    reference = RiskReference.from_model_dir(checkpoint, FINGERPRINT_FILE)
    settings = replace(
        InferenceSettings.from_step(step), reference=reference, embeddings=model_embeddings(checkpoint, step)
    )
    # Ray packs actors by what they ask for: ask for what the model was measured to take; the
    # pipeline keeps room for the actors' batches at the largest image's size
    pool = sized_for_run(pool, loaded, settings, step.batch_size, dataset_path, checkpoint, ctx.resources.get("memory"))
    post = postprocessing_from_meta(loaded.meta) if step.postprocess else None
    ctx.tracker.log_params(
        {
            f"{artifact_dir}.tta.flip_axes": list(step.tta.flip_axes),
            f"{artifact_dir}.postprocess": "none" if post is None else post.describe(),
            # class numbers → names, so class_<c>_dice_mean metrics can be read by name in MLflow
            f"{artifact_dir}.segments": json.dumps({str(c): name for c, name in sorted(step.segments.items())}),
        }
    )
    if post is not None:
        log.info("postprocessing stored with the model (%s): %s", post.source, post.describe())
    parts = join(node_root, "segment-parts")
    run_ = segment_dataset(ds, checkpoint, config, parts, pool, step.batch_size, settings, total)
    written = ("masks", "segs", "rtstruct", "rtstruct-slices", "instances", "coco", "probabilities", "segment-parts")
    stale = sum(remove_stale_temps(join(node_root, d)) for d in written)
    if stale:
        log.info("removed %d temp file(s) left by writers that were killed mid-write", stale)

    results = run_.results
    ok = results[results["status"] == STATUS_OK]
    rtstructs = write_rtstructs(ok, step, ctx, config) if "rtstruct" in step.outputs else None
    outputs_path, outputs_csv = write_table(without_risk(build_outputs(ok), step), root / "outputs")
    measurements, measurements_csv = write_measurement_chunks(
        component_chunks(iter_parts(parts, ["case_id", "source_uri", "components"], ok["case_id"])), root
    )
    ctx.tracker.log_artifact(measurements_csv, artifact_dir)
    distances = pd.to_numeric(ok["embedding_distance"], errors="coerce").to_numpy(float)
    report_embedding_drift(drift, distances, checkpoint, step, ctx, root, artifact_dir)
    report = without_risk(build_report(ok, split, instances=instance), step)
    report_path, report_csv = write_table(report, root / "report")
    metrics = {
        "segment_outputs": float(len(ok)),
        "segment_failed": float((results["status"] == STATUS_FAILED).sum()),
        "segment_skipped_done": float(run_.skipped),
        "segment_images_per_s": run_.processed / run_.seconds if run_.seconds > 0 and run_.processed else float("nan"),
        "segment_actor_utilisation": run_.actor_seconds / (run_.seconds * pool.max_actors)
        if run_.seconds > 0
        else float("nan"),
        "segment_empty_prediction_fraction": empty_prediction_fraction(ok["fg_fraction"]),
    } | {f"segment_{k}": v for k, v in report_metrics(report).items()}
    if rtstructs is not None:
        metrics["segment_rtstruct_series"] = float(rtstructs)
    review = write_review_queue(ok, step, ctx, loaded, root, artifact_dir, settings.reference.flag_risk)
    if review is not None:
        metrics["segment_flagged_cases"] = float(review.flagged)
    if metrics["segment_empty_prediction_fraction"] == 1.0:
        log.warning(
            "the model predicted no foreground on any of the %d segmented images: it has most likely "
            "learnt to predict background only (see val_fg_dice in the training history)",
            len(ok),
        )
    if split is not None and not split.test:
        log.warning(
            "the train step held out no test set (split.test_fraction: 0 or too few groups): no held-out figures"
        )
    if instance:
        metrics |= {f"segment_{k}": v for k, v in mask_ap_metrics(ok, split, loaded.model_spec.classes).items()}
    coco_path = qpath = None
    if "coco-rle" in step.outputs:
        coco_path = write_coco_results(ok, step.segments, loaded.model_spec.classes, root / "coco_results.json")
        ctx.tracker.log_artifact(coco_path, artifact_dir)
    # label problems of an ingested dataset are in the ingest's quarantine table already
    folder = step.source is not None and not isinstance(step.source, DatasetSource)
    bad = quarantine_table(results, with_label_problems=folder)
    if len(bad):
        qpath, qcsv = write_table(bad, root / "segment-quarantine")
        ctx.tracker.log_artifact(qcsv, artifact_dir)
    ctx.tracker.log_metrics({key.replace("segment_", f"{artifact_dir}_", 1): v for key, v in metrics.items()})
    for path in (report_csv, report_path, outputs_csv):
        ctx.tracker.log_artifact(path, artifact_dir)
    overlay_dir = write_overlays(report, step, ctx, loaded, root / "overlays", step.overlays)
    if overlay_dir is not None:
        ctx.tracker.log_artifact(overlay_dir, f"{artifact_dir}/overlays")
    return SegmentResult(
        outputs_path,
        report_path,
        digest,
        root,
        str(node_root),
        metrics,
        coco_path,
        qpath,
        None if review is None else review.table,
        None if review is None else review.page,
        Path(measurements),
        risk=step.review.enabled,
        class_names=dict(step.segments),
    )


@dataclass(frozen=True)
class ReviewQueue:
    """What :func:`write_review_queue` wrote: ``review.parquet``, its page (None with ``review.top: 0``)
    and how many cases it flagged."""

    table: Path
    page: Path | None
    flagged: int


def write_review_queue(
    ok: pd.DataFrame,
    step: SegmentStep,
    ctx: RunContext,
    loaded: LoadedModel,
    root: Path,
    artifact_dir: str,
    model_flag_risk: float,
) -> ReviewQueue | None:
    """The review queue of the segmented cases ``ok`` (``review.parquet``/``.csv`` and
    ``review/index.html`` under ``root``), logged to MLflow; None, and nothing written, with
    ``review.enabled: false`` (no case has a risk to rank by).

    Args:
        model_flag_risk: the threshold the model implies (:attr:`RiskReference.flag_risk`), used
            unless the step sets ``review.flag_risk``.
    """
    if not step.review.enabled:
        log.info("review queue: off (review.enabled: false): no risk computed, no queue written")
        return None
    flag_risk = model_flag_risk if step.review.flag_risk is None else step.review.flag_risk
    review = build_review(ok, flag_risk)
    table, csv = write_table(review, root / "review")
    ctx.tracker.log_artifact(csv, artifact_dir)
    page = write_review(review, step, ctx, loaded, root / "review")
    if page is not None:
        ctx.tracker.log_artifact(page.parent, f"{artifact_dir}/review")
    flagged = int(review["flagged"].sum())
    log.info("review queue: %d of %d case(s) flagged (risk >= %.3g)", flagged, len(review), flag_risk)
    ctx.tracker.log_params({f"{artifact_dir}.review.flag_risk": round(flag_risk, 4)})
    return ReviewQueue(table, page, flagged)


def without_risk(table: pd.DataFrame, step: SegmentStep) -> pd.DataFrame:
    """``table`` without its risk columns when ``review.enabled`` is false: no risk was computed, so
    the columns are absent rather than NaN."""
    if step.review.enabled:
        return table
    return table.drop(columns=[c for c in RISK_COLUMNS if c in table.columns])


def write_review(
    review: pd.DataFrame, step: SegmentStep, ctx: RunContext, loaded: LoadedModel, out_dir: Path
) -> Path | None:
    """``review/index.html``: the ``review.top`` riskiest cases as overlays (2D masks; a volume's
    row has no picture); None when ``review.top`` is 0."""
    if step.review.top == 0:
        return None
    top = review.head(step.review.top)
    pictured = top[top["mask_path"].astype(str).str.endswith(".png")]
    records = dict(zip(pictured["case_id"], _records(pictured, step, ctx))) if len(pictured) else {}

    def thumbnail(row: dict[str, Any]) -> np.ndarray | None:
        record = records.get(row["case_id"])
        return None if record is None else _overlay(row, record, loaded, ctx)

    return Path(write_review_page(review, step.review.top, out_dir, thumbnail))


def write_rtstructs(ok: pd.DataFrame, step: SegmentStep, ctx: RunContext, config: OutputConfig) -> int:
    """``outputs: [rtstruct]``: one RTSTRUCT per segmented DICOM series, once every case is done
    (a volume record's actor wrote its own); returns how many series have one (written now or by an
    earlier run of this step: a rerun writes none twice). Slice geometry comes from the records
    of the step's dataset, else (a folder source) from each slice's header."""
    dicom = ok[ok["transfer_syntax"].astype(str).str[:1].str.isdigit()]
    series = dicom["group_id"].nunique()
    if step.records == "volumes":
        found = volume_rtstructs(config, dicom)
        log.info("RTSTRUCT: %d of %d DICOM series have one", found, series)
        return found
    written, existing = write_series_rtstructs(config, dicom, _record_geometry(step, ctx, list(dicom["case_id"])))
    log.info("RTSTRUCT: wrote %d, %d already written, of %d DICOM series", written, existing, series)
    return written + existing


def _record_geometry(step: SegmentStep, ctx: RunContext, case_ids: list[str]) -> dict[str, Geometry]:
    """Case id → slice geometry from the step's dataset records ({} for a folder source)."""
    if isinstance(step.source, DatasetSource):
        path = step.source.path
    elif step.source is None:
        path = _ingested(ctx).dataset
    else:
        return {}
    dataset = pads.dataset(str(path), format="parquet")
    wanted = ["case_id", "instance_uid", "position", "orientation", "spacing_y", "spacing_x"]
    columns = [c for c in wanted if c in dataset.schema.names]  # older datasets lack instance_uid
    table = dataset.to_table(columns=columns, filter=pc.field("case_id").isin(case_ids))
    return {
        r["case_id"]: record_geometry(r)
        for r in table.to_pylist()
        if len(r["position"] or ()) == 3 and len(r["orientation"] or ()) == 6
    }


def empty_prediction_fraction(fg_fractions: pd.Series) -> float:
    """Share of segmented images with no predicted foreground pixel (NaN when none was segmented).
    1.0 means the model predicts background everywhere: a collapsed training."""
    return float((fg_fractions == 0).mean()) if len(fg_fractions) else float("nan")


def _check_model_fits_step(step: SegmentStep, loaded: LoadedModel) -> None:
    task, dims = loaded.model_spec.task, loaded.model_spec.spatial_dims
    if task == "instance" and step.records == "volumes":
        raise StepError("records: volumes needs a semantic model; Mask R-CNN segments 2D images (use records: slices)")
    if dims == 3 and step.records != "volumes":
        raise StepError(
            f"this model is a 3D U-Net (model.spatial_dims: 3): it segments volume records, not {step.records!r}; "
            "set records: volumes (with an ingest step with volumes: true, or a source of kind dataset that "
            "is a volumes folder)"
        )
    roi = step.sliding_window.roi_size
    if roi is not None and len(roi) != dims:
        raise StepError(f"sliding_window.roi_size {list(roi)} has {len(roi)} sizes; this {dims}D model needs {dims}")
    if task != "instance" and "coco-rle" in step.outputs:
        raise StepError(
            f"outputs: coco-rle needs an instance model (arch: maskrcnn); this model is {loaded.model_spec.arch!r}"
        )
    if step.boundary_class is not None and step.boundary_class >= loaded.model_spec.classes:
        raise StepError(
            f"boundary_class {step.boundary_class} is not a class of this model (classes "
            f"0..{loaded.model_spec.classes - 1})"
        )
    InferenceSettings.from_step(step).check_model(loaded.model_spec, "segment")  # tta, probabilities
    pairs = side_pairs(step.segments) if step.tta.flip_axes else []
    if pairs:
        log.warning(
            "tta.flip_axes %s mirrors the images, and segments names classes told apart by side (%s): a mirrored "
            "prediction calls the left one right. Mirror only an axis that does not swap the sides, or drop tta",
            list(step.tta.flip_axes),
            ", ".join(f"{a} / {b}" for a, b in pairs[:3]),
        )


def _split_groups(ctx: RunContext) -> SplitGroups | None:
    """The split of this run's train step (None without one); its train groups from ``split.json``
    when it lists them, so a case of a group the split never saw is marked ``-``, not ``train``."""
    train = ctx.latest(TrainResult)
    if train is None:
        return None
    split_file = ctx.run_dir / "split.json"
    listed = json.loads(split_file.read_text(encoding="utf-8")).get("train") if split_file.exists() else None
    trained = None if listed is None else frozenset(listed)
    return SplitGroups(frozenset(train.val_groups), frozenset(train.test_groups), trained)


def mask_ap_metrics(results: pd.DataFrame, split: SplitGroups | None, classes: int) -> dict[str, float]:
    """Mask AP / AP50 / AP75 over all labelled cases (``mask_ap``…), the held-out test cases
    (``heldout_mask_ap``…) and the validation cases (``val_mask_ap``…); a part without cases has none.

    Images are numbered in file order (``rel_path``, ``frame``), as in ``coco_results.json``, not in
    the order the actors finished them: COCOeval breaks ties between equal scores of different
    images by image id, so the same predictions read in another order could score another AP."""
    labelled = results[results["eval_json"].astype(str) != ""].sort_values(FILE_ORDER, kind="stable")
    parts = pd.Series(split_column(labelled, split), index=labelled.index)
    metrics: dict[str, float] = {}
    for prefix, name in REPORT_PARTS:
        part = labelled if name is None else labelled[parts == name]
        if part.empty:
            continue
        entries = [json.loads(text) for text in part["eval_json"]]
        for image_id, entry in enumerate(entries, start=1):
            entry["image"]["id"] = image_id
            for ann in entry["gt"] + entry["dt"]:
                ann["image_id"] = image_id
        ap = entries_ap(entries, classes)
        metrics |= {f"{prefix}mask_ap": ap["ap"], f"{prefix}mask_ap50": ap["ap50"], f"{prefix}mask_ap75": ap["ap75"]}
    return metrics


def write_coco_results(results: pd.DataFrame, segments: dict[int, str], classes: int, path: Path) -> Path:
    """One COCO-format file of every case's detections (``images``, ``categories``, ``annotations``
    with RLE masks and scores), loadable with ``pycocotools.coco.COCO``; built from the per-case
    files, so it is complete after a resumed run too."""
    rows = results[results["coco_path"].astype(str) != ""].sort_values(FILE_ORDER)
    images, annotations = [], []
    for image_id, coco_file in enumerate(rows["coco_path"], start=1):
        doc = json.loads(Path(coco_file).read_text())
        images.append(
            {
                "id": image_id,
                "file_name": doc["rel_path"],
                "frame": doc["frame"],
                "case_id": doc["case_id"],
                "height": doc["height"],
                "width": doc["width"],
            }
        )
        for result in doc["results"]:
            annotations.append(result | {"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0})
    categories = [{"id": c, "name": segments.get(c, f"class {c}")} for c in range(1, classes)]
    text = json.dumps({"images": images, "categories": categories, "annotations": annotations})
    return atomic_write_text(path, text)


def reload(step: SegmentStep, outputs: dict[str, Any], ctx: RunContext) -> SegmentResult:
    """A finished segment step's result (tables, outputs root, metrics) from its manifest outputs."""
    return SegmentResult.from_manifest(outputs)


def _ingested(ctx: RunContext) -> IngestResult:
    """The ingest step's result, for a segment step without a source of its own."""
    return ctx.require(IngestResult, "segment has no source and no ingest step before it")


def _input_dataset(step: SegmentStep, ctx: RunContext, read_cpus: float, model_spec: Any):
    """(dataset, expected row count or None, its Parquet path or None) for the step's source; read
    tasks ask ``read_cpus``.

    Label values are checked against ``model_spec.classes`` first: a dataset's from its label
    census columns, a folder source's from its masks alone or the classes its labels declare."""
    path = segment_input_path(step, ctx)
    if path is None:
        check_source_labels(step.source, model_spec.classes, model_spec.task == "instance")  # before any actor starts
        return read_source(step.source, streaming=True, num_cpus=read_cpus), None, None  # bad files become rows
    ingest = ctx.latest(IngestResult) if step.source is None else None
    ignore = ingest is not None and ignores_void(ingest.source.labels)
    check_dataset_labels(path, model_spec.classes, model_spec.task == "instance", ignore)  # before any actor starts
    status = pads.dataset(str(path), format="parquet").to_table(columns=["status"])["status"]
    # a small dataset is read by the driver (no read-task workers to start), a large one streams
    ds = load_dataset(path, materialize=False, num_cpus=read_cpus)
    return ds, sum(1 for s in status.to_pylist() if s == STATUS_OK), Path(path)


def write_overlays(
    report: pd.DataFrame, step: SegmentStep, ctx: RunContext, loaded: LoadedModel, out_dir: Path, n: int
) -> Path | None:
    """Overlay PNGs of the worst and best labelled cases: held-out (test) ones when there are any, else
    validation ones, else all."""
    if n == 0 or report.empty or not report["mask_path"].str.endswith(".png").all():
        return None  # overlays are 2D pictures: not for volumes
    pool = next((report[report["split"] == s] for s in ("test", "val") if (report["split"] == s).any()), report)
    ranked = pool.sort_values("dice")
    best = ranked[ranked["label_fg_fraction"] > 0].tail(n // 2)  # an empty slice scored 1.0 shows nothing
    picks = pd.concat([ranked.head(n - len(best)), best]).drop_duplicates("case_id")
    for row, record in zip(picks.to_dict("records"), _records(picks, step, ctx)):
        if record is None:
            continue
        rgb = _overlay(row, record, loaded, ctx)
        name = f"dice{row['dice']:.3f}_{Path(row['rel_path']).stem}_{str(row['case_id'])[-8:]}.png"
        atomic_write(out_dir / name, lambda tmp, rgb=rgb: _save_png(rgb, tmp))
    return out_dir


def _overlay(row: dict[str, Any], record: dict[str, Any], loaded: LoadedModel, ctx: RunContext) -> np.ndarray:
    """A case's image (normalised as the model saw it) with its PNG mask tinted and its label outlined."""
    image = prepare_image(record["image"], loaded.preprocess.intensity, 1)[0]
    image01 = (image - image.min()) / max(float(np.ptp(image)), 1e-6)
    mask = row["mask_path"]
    mask_file = io.BytesIO(read_bytes(with_options(mask, ctx.spec.cluster.storage))) if is_uri(mask) else mask
    pred = read_mask_png(mask_file, image.shape)
    return overlay_rgb(image01, pred, record["label"])


def _records(picks: pd.DataFrame, step: SegmentStep, ctx: RunContext) -> list[dict[str, Any] | None]:
    """Pixels and labels of a few cases: re-read from the dataset, or re-decoded from the source."""
    source = step.source
    if source is None or isinstance(source, DatasetSource):
        dataset = source.path if source is not None else _ingested(ctx).dataset
        found = {r["case_id"]: r for r in take_records(dataset, picks["case_id"].tolist())}
        return [found.get(cid) for cid in picks["case_id"]]
    out = []
    for row in picks.to_dict("records"):
        try:
            out.append(decode_case(row["source_uri"], row["rel_path"], row["case_id"], source))
        except DecodeError:
            out.append(None)  # no longer decodes: no overlay for this case
    return out


def _save_png(rgb: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(rgb).save(path, format="PNG")
