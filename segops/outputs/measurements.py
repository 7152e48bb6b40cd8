"""``measurements.parquet`` / ``.csv``: one row per measured object of every case (layout defined once here).

The columns are the case's identifiers (:data:`ID_COLUMNS`, typed as in the record layout) followed
by :data:`segops.metrics.measurements.COMPONENT_COLUMNS`; where a value does not apply or the spacing is
unknown the cell is null (empty in the CSV), never NaN or a guessed number.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from segops.data.records import RECORD_SCHEMA
from segops.metrics.measurements import COMPONENT_FIELDS, CaseMeasurements
from segops.outputs.atomic import atomic_write
from segops.outputs.storage import is_uri, join

#: The record columns that say whose object a row measures.
ID_COLUMNS = ("case_id", "source_uri")
_ARROW_TYPES = {int: pa.int64(), float: pa.float64(), str: pa.string()}
#: One row per object: the case's identifiers, then the object's measurements.
MEASUREMENT_SCHEMA = pa.schema(
    [RECORD_SCHEMA.field(name) for name in ID_COLUMNS] + [(name, _ARROW_TYPES[kind]) for name, kind in COMPONENT_FIELDS]
)
#: File stem of the table in an output folder.
MEASUREMENTS_STEM = "measurements"


def measurement_rows(case_id: str, source_uri: str, measurements: CaseMeasurements) -> list[dict[str, Any]]:
    """One case's object rows with its identifiers, in :data:`MEASUREMENT_SCHEMA`'s layout."""
    ids = {"case_id": case_id, "source_uri": source_uri}
    return [ids | row for row in measurements.components]


def measurements_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """Rows (dicts with :data:`MEASUREMENT_SCHEMA`'s columns; ``None`` = null) → an Arrow table of that schema.

    Raises:
        pyarrow.ArrowInvalid / ArrowTypeError: a value does not fit its column's type.
    """
    return pa.Table.from_pylist(list(rows), schema=MEASUREMENT_SCHEMA)


def write_measurements(rows: Iterable[dict[str, Any]] | pa.Table, root: str | Path) -> tuple[Path | str, Path | str]:
    """Write ``root/measurements.parquet`` and ``root/measurements.csv`` atomically (each file is
    complete or absent); ``root`` may be a storage URI. Returns the two paths (parquet, csv).

    ``rows``: rows as :func:`measurement_rows` gives them, or a table already in :data:`MEASUREMENT_SCHEMA`.
    """
    return write_measurement_chunks([rows], root)


def write_measurement_chunks(
    chunks: Iterable[Iterable[dict[str, Any]] | pa.Table], root: str | Path
) -> tuple[Path | str, Path | str]:
    """:func:`write_measurements` of chunks of rows (or tables), written one after another in one
    pass, so a run's millions of objects are never in memory at once (see
    :func:`segops.outputs.reports.component_chunks`)."""

    def write_parquet(parquet_tmp: Path) -> None:
        def write_csv(csv_tmp: Path) -> None:
            with (
                pq.ParquetWriter(parquet_tmp, MEASUREMENT_SCHEMA) as parquet,
                pacsv.CSVWriter(csv_tmp, MEASUREMENT_SCHEMA) as csv,
            ):
                for chunk in chunks:
                    table = chunk.cast(MEASUREMENT_SCHEMA) if isinstance(chunk, pa.Table) else measurements_table(chunk)
                    parquet.write_table(table)
                    csv.write_table(table)

        paths.append(atomic_write(_path(root, ".csv"), write_csv))

    paths: list[Path | str] = []
    parquet = atomic_write(_path(root, ".parquet"), write_parquet)
    return parquet, paths[0]


def _path(root: str | Path, suffix: str) -> Path | str:
    name = MEASUREMENTS_STEM + suffix
    return join(root, name) if is_uri(root) else Path(root) / name
