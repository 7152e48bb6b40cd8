"""Ray Data sources: file listings → decoded Arrow batches of records (tensor columns).

Decoding runs in Ray tasks, a small block of files at a time; a file that fails becomes a
quarantine row rather than an exception, so one bad file never fails a block.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import ray
from ray.data.expressions import col
from ray.data.extensions import ArrowVariableShapedTensorArray

from segops.config.schema import DicomSource, ImageSource
from segops.data.census import header_row
from segops.data.decode import decode_file, entry_files, label_reader, listing_entries
from segops.data.instances import label_dtype
from segops.data.labels import LabelResolver, has_label_masks, mask_file_counts
from segops.data.records import DICOM_ID_COLUMNS, LABEL_COUNT_COLUMNS, STATUS_OK, ImageRecord, records_table
from segops.data.volume_labels import DicomSliceLabels

log = logging.getLogger(__name__)

#: Datasets up to this size on disk are read by the driver (:func:`load_dataset`), not by Ray tasks.
DRIVER_READ_BYTES = 256 * 2**20
#: Rows per block of a dataset read by the driver (several blocks, so shards and batches spread).
DRIVER_BLOCK_ROWS = 32
#: Files decoded per Ray task: small DICOM slices decode in ~2 ms, so a task needs dozens of
#: them to amortise Ray's per-task overhead (16 → 228 img/s, 64 → 395 img/s on 2 CPUs).
FILES_PER_BLOCK = 64
#: Pixel bytes after which a decode task closes its block early: 64 photos of 4000x3000 RGB are
#: 9 GiB as float32, which one task would otherwise hold (and Arrow copy) at once.
BLOCK_BYTES = 256 * 2**20


def _entry_chunks(batch: dict[str, np.ndarray], source: DicomSource | ImageSource) -> Iterator[list[dict[str, str]]]:
    """The files of a batch of listing entries, ``FILES_PER_BLOCK`` at a time."""
    chunk: list[dict[str, str]] = []
    for directory, files in zip(batch["dir"], batch["files"]):
        for f in entry_files(source, {"dir": str(directory), "files": list(files)}):
            chunk.append(f)
            if len(chunk) == FILES_PER_BLOCK:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def _decode_entries(
    batch: dict[str, np.ndarray], source: DicomSource | ImageSource, labels: LabelResolver | DicomSliceLabels | None
) -> Iterator[pa.Table]:
    """Ray Data UDF: listing entries → decoded rows, one output block per ``FILES_PER_BLOCK`` files,
    or sooner once its pixels reach :data:`BLOCK_BYTES`."""
    labels_as = label_dtype(source.labels)
    for chunk in _entry_chunks(batch, source):
        rows: list[dict[str, Any]] = []
        held = 0
        for f in chunk:
            for row in decode_file(f["path"], f["rel_path"], source, labels):
                rows.append(row)
                held += np.asarray(row["image"]).nbytes + np.asarray(row["label"]).nbytes
                if held >= BLOCK_BYTES:
                    yield rows_to_table(rows, labels_as)
                    rows, held = [], 0
        if rows:
            yield rows_to_table(rows, labels_as)


def rows_to_table(rows: list[dict[str, Any]], labels_as: np.dtype = np.dtype(np.uint8)) -> pa.Table:
    """Rows from :func:`segops.data.decode.decode_file` → Arrow, pixels as variable-shape tensors.

    ``labels_as``: the source's label dtype (:func:`segops.data.instances.label_dtype`).
    """
    table = records_table(rows).append_column(
        "image", ArrowVariableShapedTensorArray.from_numpy([r["image"] for r in rows])
    )
    labels = [np.asarray(r["label"]).astype(labels_as, copy=False) for r in rows]
    return table.append_column("label", ArrowVariableShapedTensorArray.from_numpy(labels))


def read_source(
    source: DicomSource | ImageSource,
    streaming: bool = False,
    num_cpus: float | None = None,
    labels: LabelResolver | DicomSliceLabels | None = None,
) -> ray.data.Dataset:
    """A lazy dataset of decoded rows (``ok``, ``quarantined`` and ``skipped`` alike).

    The driver only opens the top of the folder tree (see
    :func:`segops.data.decode.listing_entries`); each Ray task lists and decodes its units and
    yields a block per :data:`FILES_PER_BLOCK` files. Labels are indexed once here (SEG
    headers, COCO file) and shipped to tasks.

    Args:
        streaming: the consumer is slower than decoding (inference actors), so each task
            decodes one listing unit. Ray Data's backpressure acts between tasks, and a task
            that decodes a twelfth of a large archive fills the object store before it can be
            held back: memory then grows with the archive. Otherwise (ingest, writing Parquet
            as fast as decode goes) about 4 tasks per CPU amortise Ray's per-task cost.
            Measured on 2 CPUs (``benchmarks/``): ingest of 20,000 slices runs 1.87× a plain
            loop with coarse tasks and 1.14× with 8 units per task; segmenting 6,000 slices
            keeps the same images/s with one unit per task, and the object store's high-water
            mark drops from 0.87 to 0.15 GiB.
        num_cpus: CPUs each decode task asks for (default 1; see
            :attr:`segops.cluster.infer.PoolSize.read_cpus`).
        labels: the source's label reader (:func:`segops.data.decode.label_reader`) where the
            caller built it to use again (ingest lists the labels no image matched from it);
            else built here.

    Raises:
        FileNotFoundError: the source folder does not exist.
    """
    entries = listing_entries(source, chunk=FILES_PER_BLOCK)
    if labels is None and source.labels is not None:
        labels = label_reader(source.labels)
    log.info("reading %s in %d units", source.path, len(entries))
    return _entries_dataset(entries, one_per_task=streaming).map_batches(
        _decode_entries,
        fn_kwargs={"source": source, "labels": labels},
        batch_size=None,
        batch_format="numpy",
        num_cpus=num_cpus,
    )


def _entries_dataset(entries: list[dict[str, Any]], one_per_task: bool = False) -> ray.data.Dataset:
    """Entries one per block, or in about 4 blocks per CPU: enough tasks to balance, few
    enough to amortise Ray's per-task overhead."""
    cpus = int(ray.cluster_resources().get("CPU", 1))
    blocks = len(entries) if one_per_task else min(len(entries), 4 * cpus)
    return ray.data.from_items(entries, override_num_blocks=max(1, blocks))


def write_dataset(ds: ray.data.Dataset, path: str | Path) -> None:
    """Materialise a dataset as Parquet files under ``path`` (tensor columns preserved)."""
    ds.write_parquet(str(path))


def _row_filter(
    field: Callable[[str], Any],
    isin: Callable[[Any, list[str]], Any],
    labelled_only: bool,
    groups: list[str] | None,
    exclude_cases: list[str] | None,
) -> Any:
    """The ``ok``-rows filter of :func:`read_dataset` and :func:`load_dataset`, in either expression
    language: Ray Data's (``field=col``, ``isin`` calling ``is_in``) or pyarrow's (``pads.field``,
    ``isin``)."""
    expr = field("status") == STATUS_OK
    if labelled_only:
        expr = expr & (field("has_label") == True)  # noqa: E712  (a column expression, not a Python bool)
    if groups is not None:
        expr = expr & isin(field("group_id"), list(groups))
    if exclude_cases:
        expr = expr & ~isin(field("case_id"), list(exclude_cases))
    return expr


def read_dataset(
    path: str | Path,
    labelled_only: bool = False,
    groups: list[str] | None = None,
    columns: list[str] | None = None,
    exclude_cases: list[str] | None = None,
    num_cpus: float | None = None,
) -> ray.data.Dataset:
    """``ok`` rows of a dataset written by :func:`write_dataset`, optionally filtered.

    Filters are pushed down into the Parquet scan, so excluded rows are never decoded.
    ``num_cpus``: CPUs each read task asks for (default 1). Ray 2.60's default Parquet reader
    lists the files in a task that always asks 1 CPU, whatever ``num_cpus`` says: beside a
    0.5-CPU actor on each of two 1-CPU nodes it never ran, and the actors waited for ever.
    Reads asking less than a CPU therefore use Ray's previous Parquet reader, whose tasks ask
    ``num_cpus`` (and 0.5 to fetch metadata).
    """
    expr = _row_filter(col, lambda e, values: e.is_in(values), labelled_only, groups, exclude_cases)
    context = ray.data.DataContext.get_current()
    v2 = getattr(context, "use_datasource_v2", None)  # a Ray without the flag has one reader
    if v2 is not None:
        context.use_datasource_v2 = v2 and (num_cpus is None or num_cpus >= 1)  # read_parquet picks its reader now
    try:
        ds = ray.data.read_parquet(str(path), columns=columns, num_cpus=num_cpus)
    finally:
        if v2 is not None:
            context.use_datasource_v2 = v2
    return ds.filter(expr=expr, num_cpus=num_cpus)


def dataset_digest(path: str | Path, case_ids: set[str] | None = None) -> str:
    """Content digest of a dataset's ``ok`` rows (or of ``case_ids`` among them): sha256 over the
    sorted per-row sha1 of (case id, image bytes, label bytes), so it changes when any pixel or
    label changes and not when rows are stored in another order or in other files."""
    import hashlib

    rows = []
    scan = pads.dataset(str(path), format="parquet").to_batches(
        columns=["case_id", "status", "image", "label"], batch_size=64
    )
    for batch in scan:
        images, labels = batch.column("image").to_numpy(), batch.column("label").to_numpy()
        for cid, status, image, label in zip(
            batch.column("case_id").to_pylist(), batch.column("status").to_pylist(), images, labels
        ):
            if status != STATUS_OK or (case_ids is not None and cid not in case_ids):
                continue
            h = hashlib.sha1(cid.encode())
            h.update(np.ascontiguousarray(image).tobytes())
            h.update(np.ascontiguousarray(label).tobytes())
            rows.append(h.hexdigest())
    return hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest()


def _stack_group(batch: dict[str, np.ndarray], order: dict[str, list[str]], geometry: dict[str, dict]) -> pa.Table:
    """Ray Data UDF (map_groups): all slices of one series → one (C, Z, H, W) volume row.

    The row keeps the slice-record layout (``case_id`` is the SeriesInstanceUID, ``rel_path``
    the series' folder and UID; for a volume file's case, its path without suffix) plus
    ``source_uris`` (slices in order), ``affine`` and ``spacing_z``.
    """
    uid = str(batch["group_id"][0])
    index = {str(cid): i for i, cid in enumerate(batch["case_id"])}
    rows = [index[cid] for cid in order[uid]]
    first = rows[0]
    labelled = all(bool(batch["has_label"][i]) for i in rows)
    image = np.stack([batch["image"][i] for i in rows], axis=1)
    label = np.stack([batch["label"][i] for i in rows]) if labelled else np.zeros((0, 0, 0), np.uint8)
    rel_dir = str(Path(str(batch["rel_path"][first])).parent)
    known = {name: str(batch[name][first]) for name in DICOM_ID_COLUMNS if name in batch}  # older datasets lack them
    volume = ImageRecord(
        image=image,
        case_id=uid,
        group_id=uid,
        source_uri=str(batch["source_uri"][first]),
        # a series: its folder and UID; a volume file's case: its group is its path already (no folder twice)
        rel_path=uid if rel_dir == "." or uid.startswith(rel_dir + "/") else f"{rel_dir}/{uid}",
        modality=str(batch["modality"][first]),
        spacing=(float(batch["spacing_y"][first]), float(batch["spacing_x"][first])),
        spacing_known=bool(batch["spacing_known"][first]) if "spacing_known" in batch else False,
        transfer_syntax=str(batch["transfer_syntax"][first]),
        photometric=str(batch["photometric"][first]),
        label=label if labelled else None,
        patient_id=known.get("patient_id", ""),
        study_uid=known.get("study_uid", ""),
        series_uid=known.get("series_uid", ""),
        n_frames=len(rows),
        file_axes=tuple(int(a) for a in batch["file_axes"][first]) if "file_axes" in batch else (),
    )
    table = records_table([volume.to_row()])
    extra = {
        "slices": pa.array([len(rows)], pa.int64()),
        "spacing_z": pa.array([float(geometry[uid]["spacing_z"])], pa.float64()),
        "affine": pa.array([list(map(float, geometry[uid]["affine"]))], pa.list_(pa.float64())),
        "source_uris": pa.array([[str(batch["source_uri"][i]) for i in rows]], pa.list_(pa.string())),
        "image": ArrowVariableShapedTensorArray.from_numpy([image]),
        "label": ArrowVariableShapedTensorArray.from_numpy([label]),
    }
    for name, column in extra.items():
        table = table.append_column(name, column)
    return table


def write_volumes(
    dataset: str | Path, order: dict[str, list[str]], geometry: dict[str, dict], path: str | Path
) -> None:
    """Write one volume record per series in ``order`` (series UID → case ids, in slice order).

    ``geometry``: series UID → ``{"spacing_z": mm, "affine": 16 floats}``.
    """
    ds = read_dataset(dataset, groups=list(order))
    volumes = ds.groupby("group_id").map_groups(
        _stack_group, fn_kwargs={"order": order, "geometry": geometry}, batch_format="numpy"
    )
    volumes.write_parquet(str(path))


def _header_entries(batch: dict[str, np.ndarray], source: DicomSource | ImageSource) -> Iterator[pd.DataFrame]:
    for chunk in _entry_chunks(batch, source):
        yield pd.DataFrame([header_row(f["path"], f["rel_path"], source) for f in chunk])


def census_rows(source: DicomSource | ImageSource) -> pd.DataFrame:
    """One header row per file of ``source`` (no pixels decoded), listed and read in Ray tasks."""
    entries = listing_entries(source, chunk=FILES_PER_BLOCK)
    ds = _entries_dataset(entries).map_batches(
        _header_entries, fn_kwargs={"source": source}, batch_size=None, batch_format="numpy"
    )
    return ds.to_pandas()


def take_records(path: str | Path, case_ids: list[str]) -> list[dict[str, Any]]:
    """The full rows (pixels included) of a few cases of a written dataset, read on the driver
    (a Ray Data read of a few rows costs seconds of task start-up; this, a fraction of one)."""
    table = pads.dataset(str(path), format="parquet").to_table(filter=pads.field("case_id").isin(list(case_ids)))
    return [dict(row) for row in ray.data.from_arrow(table).take_all()]


def load_dataset(
    path: str | Path,
    labelled_only: bool = False,
    groups: list[str] | None = None,
    columns: list[str] | None = None,
    exclude_cases: list[str] | None = None,
    materialize: bool = True,
    num_cpus: float | None = None,
) -> ray.data.Dataset:
    """The ``ok`` rows of :func:`read_dataset`: a dataset of at most :data:`DRIVER_READ_BYTES` on
    disk is read by the driver (pyarrow, filters pushed down) into blocks of
    :data:`DRIVER_BLOCK_ROWS` rows, held by the driver (so a lost node loses none of them, and the
    tasks that read them are retried elsewhere); a larger one by Ray Data's read tasks, materialised
    unless ``materialize`` is false (a streaming pass); ``num_cpus``: what those read tasks ask.

    Measured on 2 CPUs: 80 quickstart slices in 0.1-0.2 s on the driver against 5-13 s through Ray
    Data's read tasks (their worker start-up), paid twice (training and validation cases) by every
    training run.
    """
    dataset = pads.dataset(str(path), format="parquet")
    size = sum(info.size for info in dataset.filesystem.get_file_info(dataset.files))
    if size > DRIVER_READ_BYTES:
        ds = read_dataset(path, labelled_only, groups, columns, exclude_cases, num_cpus)
        return ds.materialize() if materialize else ds
    expr = _row_filter(pads.field, lambda e, values: e.isin(values), labelled_only, groups, exclude_cases)
    table = dataset.to_table(columns=columns, filter=expr)
    blocks = [table.slice(start, DRIVER_BLOCK_ROWS) for start in range(0, table.num_rows, DRIVER_BLOCK_ROWS)]
    return ray.data.from_arrow(blocks or [table])


def _mask_entries(batch: dict[str, np.ndarray], source: DicomSource | ImageSource) -> Iterator[pd.DataFrame]:
    for chunk in _entry_chunks(batch, source):
        found = [mask_file_counts(source.labels, f["rel_path"]) for f in chunk]
        yield pd.DataFrame([row for row in found if row], columns=list(LABEL_COUNT_COLUMNS))


def mask_label_rows(source: DicomSource | ImageSource) -> pd.DataFrame:
    """``label_uri``, ``label_values``, ``label_pixels`` of the mask of every input of a source
    with mask-png labels (or instance-png labels' class masks, ``classes_pattern``), read in Ray
    tasks without decoding an image (masks are small)."""
    if not has_label_masks(source.labels):
        raise TypeError(f"mask_label_rows needs mask-png labels or class masks, got {type(source.labels).__name__}")
    entries = listing_entries(source, chunk=FILES_PER_BLOCK)
    ds = _entries_dataset(entries).map_batches(
        _mask_entries, fn_kwargs={"source": source}, batch_size=None, batch_format="numpy"
    )
    return ds.to_pandas()
