"""The fingerprint pass over an archive or an ingested dataset, on Ray Data, in bounded memory.

Ray tasks decode records and reduce each to :func:`segops.data.fingerprint.record_stats` (a
few KB: shape, class pixel counts, up to ``k`` pixel samples); only those rows reach the
driver, which folds them into a :class:`~segops.data.fingerprint.FingerprintAccumulator`.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import ray

from segops.cluster.datasets import load_dataset, read_source
from segops.config.schema import DicomSource, ImageSource
from segops.data.fingerprint import (
    SAMPLES_PER_CASE,
    Fingerprint,
    FingerprintAccumulator,
    record_stats,
)
from segops.data.records import STATUS_OK, STATUS_QUARANTINED
from segops.data.slice_planes import plane_of
from segops.outputs.atomic import atomic_write_text

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "fingerprint.json"
_META = ("case_id", "group_id", "modality", "spacing_y", "spacing_x")
#: Census columns counted when the rows have them (datasets written by older segops may not).
_CENSUS = ("transfer_syntax", "photometric", "patient_id", "spacing_known", "image_role")


def _stats_batch(
    batch: dict[str, np.ndarray], task: str, k: int, seed: int, labelled_only: bool = False
) -> dict[str, np.ndarray]:
    """Ray Data UDF: decoded rows → one pickled stats row per ``ok`` record (one binary column,
    so every block has the same schema whatever it holds); with ``labelled_only``, labelled ones.
    A quarantined row (with ``labelled_only``, also a record whose label could not be read) gives
    ``{"left_out": (rel_path, why)}``."""
    out = []
    status = batch.get("status")
    stage = batch.get("stage")
    for i in range(len(batch["case_id"])):
        unread_label = labelled_only and stage is not None and stage[i] == "label"  # kept without its label
        if status is not None and (status[i] == STATUS_QUARANTINED or unread_label):
            out.append(pickle.dumps({"left_out": (str(batch["rel_path"][i]), str(batch["error"][i]))}))
        if status is not None and (status[i] != STATUS_OK or unread_label):
            continue  # skipped rows are files that hold no image (an RTSTRUCT): not left-out data
        label = batch["label"][i] if ("has_label" not in batch or batch["has_label"][i]) else None
        if labelled_only and label is None:
            continue
        row = record_stats(
            np.asarray(batch["image"][i]),
            None if label is None else np.asarray(label),
            str(batch["case_id"][i]),
            task,
            k,
            seed,
        )
        row["meta"] = {
            name: batch[name][i].item() if hasattr(batch[name][i], "item") else batch[name][i] for name in _META
        }
        row["meta"] |= {name: str(batch[name][i]) for name in _CENSUS if name in batch}
        row["meta"]["plane"] = plane_of(batch["orientation"][i]) if "orientation" in batch else ""
        out.append(pickle.dumps(row))
    return {"stats": np.array(out, dtype=object)}


def _fold(
    ds: ray.data.Dataset,
    task: str,
    k: int,
    seed: int,
    edges: tuple[float, ...] | None = None,
    labelled_only: bool = False,
) -> Fingerprint:
    acc = FingerprintAccumulator(task=task, seed=seed, samples_per_case=k, histogram_edges=edges)
    kwargs = {"task": task, "k": k, "seed": seed, "labelled_only": labelled_only}
    stats = ds.map_batches(_stats_batch, fn_kwargs=kwargs, batch_format="numpy", batch_size=64)
    for batch in stats.iter_batches(batch_format="numpy", batch_size=256):
        for blob in batch["stats"]:
            row = pickle.loads(blob)
            if "left_out" in row:
                acc.add_left_out(*row["left_out"])
                continue
            meta = row.pop("meta")
            census = (str(meta.get("transfer_syntax", "")), str(meta.get("photometric", "")))
            spacing, patient = (meta["spacing_y"], meta["spacing_x"]), str(meta.get("patient_id", ""))
            known, role = meta.get("spacing_known") == "True", meta.get("image_role")  # None: not in the rows
            acc.add(
                row,
                str(meta["group_id"]),
                str(meta["modality"]),
                spacing,
                *census,
                patient_id=patient,
                plane=meta["plane"],
                spacing_known=known,
                role=role,
            )
    fp = acc.result()
    # DEBUG: the train step takes it beside a live progress bar, which a log line would split
    log.debug("fingerprint of %d images (%d labelled, %d groups)", fp.n_images, fp.n_labelled, fp.n_groups)
    return fp


def log_fingerprint(fp: Fingerprint) -> Fingerprint:
    """Say what a fingerprint covers (INFO), where no progress bar is live; returns ``fp``."""
    log.info("fingerprint of %d images (%d labelled, %d groups)", fp.n_images, fp.n_labelled, fp.n_groups)
    return fp


def fingerprint_source(
    source: DicomSource | ImageSource,
    task: str = "semantic",
    k: int = SAMPLES_PER_CASE,
    seed: int = 0,
    labelled_only: bool = False,
) -> Fingerprint:
    """Fingerprint of every decodable record of ``source`` (decoded in Ray tasks, streaming), or
    with ``labelled_only`` of those with a label: what a plan sizes training by (a study folder's
    unlabelled PET or scout series would otherwise set the modality, sizes and intensities)."""
    return log_fingerprint(_fold(read_source(source, streaming=True), task, k, seed, labelled_only=labelled_only))


def fingerprint_dataset(
    path: str | Path, task: str = "semantic", k: int = SAMPLES_PER_CASE, seed: int = 0
) -> Fingerprint:
    """Fingerprint of the labelled ``ok`` rows of an ingested Parquet dataset, what a model trains
    on (the same stats as :func:`fingerprint_source` with ``labelled_only``): the reference a model
    keeps for the drift check and the risk. A small dataset is read by the driver (:func:`load_dataset`)."""
    names = pads.dataset(str(path), format="parquet").schema.names
    columns = [*_META, *(c for c in (*_CENSUS, "orientation") if c in names), "has_label", "image", "label"]
    return _fold(load_dataset(path, labelled_only=True, columns=columns, materialize=False), task, k, seed)


def fingerprint_sample(
    ds: ray.data.Dataset,
    n: int,
    task: str = "semantic",
    seed: int = 0,
    edges: tuple[float, ...] | None = None,
    k: int = SAMPLES_PER_CASE,
) -> Fingerprint:
    """Fingerprint of the first ``n`` decodable rows of ``ds`` (a source or dataset read lazily: no
    more than those are decoded), its intensity histogram on ``edges`` (a training fingerprint's)."""
    return _fold(ds.limit(n), task, k, seed, edges)


def write_model_fingerprint(dataset: str | Path, model_dir: str | Path, task: str = "semantic", seed: int = 0) -> Path:
    """Write the fingerprint of the dataset a model trained on into its checkpoint folder; returns the file."""
    return write_fingerprint(fingerprint_dataset(dataset, task, seed=seed), model_dir)


def write_fingerprint(fp: Fingerprint, model_dir: str | Path) -> Path:
    """``fingerprint.json`` in a checkpoint folder (see :func:`fingerprint_dataset`); returns the file."""
    return atomic_write_text(Path(model_dir) / FINGERPRINT_FILE, fp.to_json())
