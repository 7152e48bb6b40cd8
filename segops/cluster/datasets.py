"""Ray Data sources: file listings → decoded Arrow batches of records (tensor columns).

Decoding runs in Ray tasks, a small block of files at a time; a file that fails becomes a
quarantine row rather than an exception, so one bad file never fails a block.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray
from ray.data.expressions import col
from ray.data.extensions import ArrowVariableShapedTensorArray

from segops.config.schema import DicomSource, ImageSource
from segops.data.decode import decode_file, list_source_files
from segops.data.records import META_COLUMNS, STATUS_OK

log = logging.getLogger(__name__)

#: Files decoded per Ray task. Small images are cheap; larger blocks amortise task overhead.
FILES_PER_BLOCK = 16


def _decode_batch(batch: dict[str, np.ndarray], source: DicomSource | ImageSource) -> pa.Table:
    """Ray Data UDF: a batch of ``{path, rel_path}`` → an Arrow table of rows."""
    rows: list[dict[str, Any]] = []
    for path, rel in zip(batch["path"], batch["rel_path"]):
        rows.extend(decode_file(str(path), str(rel), source))
    return rows_to_table(rows)


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows from :func:`segops.data.decode.decode_file` → Arrow, pixels as variable-shape tensors."""
    columns: dict[str, Any] = {name: [r[name] for r in rows] for name in META_COLUMNS}
    table = pa.table(columns)
    table = table.append_column("image", ArrowVariableShapedTensorArray.from_numpy([r["image"] for r in rows]))
    return table.append_column("label", ArrowVariableShapedTensorArray.from_numpy([r["label"] for r in rows]))


def read_source(source: DicomSource | ImageSource) -> ray.data.Dataset:
    """A lazy dataset of decoded rows (``ok``, ``quarantined`` and ``skipped`` alike).

    Raises:
        FileNotFoundError: the source folder does not exist.
    """
    files = list_source_files(source)
    if not files:
        raise FileNotFoundError(f"no input files with extensions {list(source.extensions)} under {source.path}")
    blocks = max(1, math.ceil(len(files) / FILES_PER_BLOCK))
    log.info("%d candidate files under %s in %d blocks", len(files), source.path, blocks)
    return ray.data.from_items(files, override_num_blocks=blocks).map_batches(
        _decode_batch,
        fn_kwargs={"source": source},
        batch_size=FILES_PER_BLOCK,
        batch_format="numpy",
    )


def write_dataset(ds: ray.data.Dataset, path: str | Path) -> None:
    """Materialise a dataset as Parquet files under ``path`` (tensor columns preserved)."""
    ds.write_parquet(str(path))


def read_dataset(
    path: str | Path,
    labelled_only: bool = False,
    groups: list[str] | None = None,
    columns: list[str] | None = None,
) -> ray.data.Dataset:
    """``ok`` rows of a dataset written by :func:`write_dataset`, optionally filtered.

    Filters are pushed down into the Parquet scan, so excluded rows are never decoded.
    """
    expr = col("status") == STATUS_OK
    if labelled_only:
        expr = expr & (col("has_label") == True)  # noqa: E712  (a column expression, not a Python bool)
    if groups is not None:
        expr = expr & col("group_id").is_in(list(groups))
    return ray.data.read_parquet(str(path), columns=columns).filter(expr=expr)
