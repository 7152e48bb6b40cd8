"""``segment``: actor-pool inference → one mask per input, per-case report, overlays."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segops.cluster.datasets import read_dataset, read_source
from segops.cluster.infer import segment_dataset, size_actor_pool
from segops.config.schema import SegmentStep
from segops.data.decode import decode_file
from segops.data.records import STATUS_OK
from segops.data.transforms import prepare_image
from segops.engine.checkpoint import load_checkpoint
from segops.data.labels import read_mask_png
from segops.outputs.atomic import atomic_write
from segops.outputs.overlays import overlay_rgb
from segops.outputs.reports import build_outputs, build_report, report_metrics, write_table
from segops.steps.context import RunContext
from segops.steps.ingest import QUARANTINE_COLUMNS, dataset_meta
from segops.tracking import download_checkpoint, is_model_uri

log = logging.getLogger(__name__)


def resolve_checkpoint(step: SegmentStep, ctx: RunContext) -> Path:
    """The checkpoint directory to segment with: the step's ``model`` or the train step's."""
    if step.model is None:
        return Path(ctx.state["checkpoint"])
    if is_model_uri(step.model):
        return download_checkpoint(step.model, ctx.spec.tracking.uri, ctx.run_dir / "model-download")
    return Path(step.model)


def run(step: SegmentStep, ctx: RunContext) -> dict[str, Any]:
    checkpoint = resolve_checkpoint(step, ctx)
    loaded = load_checkpoint(checkpoint)  # fail fast on the driver, before any actor starts
    if step.source is not None:
        source, ds, total = step.source, read_source(step.source), None
    else:
        source, dataset = ctx.state["source"], ctx.state["dataset"]
        ds, total = read_dataset(dataset), int((dataset_meta(dataset)["status"] == STATUS_OK).sum())
    pool = size_actor_pool(step.actors, ctx.resources)
    log.info("segmenting with %d-%d actor(s) x %s CPU", pool.min_actors, pool.max_actors, pool.cpus_per_actor)
    results = segment_dataset(ds, checkpoint, ctx.run_dir / "masks", pool, step.batch_size, total)

    ok = results[results["status"] == STATUS_OK]
    outputs_path, outputs_csv = write_table(build_outputs(ok), ctx.run_dir / "outputs")
    report = build_report(ok, ctx.state.get("val_groups"))
    report_path, csv_path = write_table(report, ctx.run_dir / "report")
    metrics = {"segment_masks": float(len(ok))} | {f"segment_{k}": v for k, v in report_metrics(report).items()}
    outputs: dict[str, Any] = {
        "masks": str(ctx.run_dir / "masks"),
        "outputs": str(outputs_path),
        "report": str(report_path),
        **metrics,
    }
    bad = results[results["status"] != STATUS_OK]
    if len(bad):
        qpath, _ = write_table(bad[QUARANTINE_COLUMNS].reset_index(drop=True), ctx.run_dir / "segment-quarantine")
        metrics["segment_quarantined"] = float(len(bad))
        outputs["quarantine"] = str(qpath)
        ctx.tracker.log_artifact(qpath.with_suffix(".csv"), "segment")
    ctx.tracker.log_metrics(metrics)
    ctx.tracker.log_artifact(csv_path, "segment")
    ctx.tracker.log_artifact(outputs_csv, "segment")
    ctx.tracker.log_artifact(report_path, "segment")
    overlay_dir = write_overlays(report, source, loaded, ctx.run_dir / "overlays", step.overlays)
    if overlay_dir is not None:
        ctx.tracker.log_artifact(overlay_dir, "segment/overlays")
    ctx.state |= {"report": report_path, "metrics": metrics}
    return outputs


def write_overlays(report: pd.DataFrame, source: Any, loaded: Any, out_dir: Path, n: int) -> Path | None:
    """Overlay PNGs of the worst and best labelled cases (held-out ones when there is a split)."""
    labelled = report
    if n == 0 or labelled.empty:
        return None
    pool = labelled[labelled["split"] == "val"] if (labelled["split"] == "val").any() else labelled
    ranked = pool.sort_values("dice")
    best = ranked[ranked["label_fg_fraction"] > 0].tail(n // 2)  # an empty slice scored 1.0 shows nothing
    picks = pd.concat([ranked.head(n - len(best)), best]).drop_duplicates("case_id")
    for _, row in picks.iterrows():
        records = decode_file(row["source_uri"], row["rel_path"], source)
        record = next((r for r in records if r["case_id"] == row["case_id"]), None)
        if record is None or record["status"] != STATUS_OK:
            continue
        image = prepare_image(record["image"], loaded.preprocess.intensity, 1)[0]
        image01 = (image - image.min()) / max(float(np.ptp(image)), 1e-6)
        pred = read_mask_png(row["mask_path"], image.shape)
        rgb = overlay_rgb(image01, pred, record["label"])
        name = f"dice{row['dice']:.3f}_{Path(row['rel_path']).stem}_{row['case_id'][-8:]}.png"
        atomic_write(out_dir / name, lambda tmp: _save_png(rgb, tmp))
    return out_dir


def _save_png(rgb: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(rgb).save(path, format="PNG")
