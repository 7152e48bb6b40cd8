"""measurements.parquet / .csv: one row per object with the case's identifiers, read back with pyarrow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from segops.metrics.measurements import COMPONENT_COLUMNS, measure_case
from segops.outputs.measurements import (
    MEASUREMENT_SCHEMA,
    measurement_rows,
    measurements_table,
    write_measurement_chunks,
    write_measurements,
)


def _two_cases() -> list[dict]:
    """Case a: two class-1 squares at 0.5 mm; case b: one class-2 square without spacing."""
    a = np.zeros((20, 20), np.uint8)
    a[1:5, 1:5] = 1
    a[10:12, 10:13] = 1
    b = np.zeros((20, 20), np.uint8)
    b[3:6, 3:6] = 2
    return measurement_rows("a", "/in/a.dcm", measure_case(a, (0.5, 0.5), [1, 2])) + measurement_rows(
        "b", "/in/b.png", measure_case(b, None, [1, 2])
    )


def test_rows_round_trip_through_parquet_and_csv_with_the_schema(tmp_path: Path) -> None:
    parquet, csv = write_measurements(_two_cases(), tmp_path / "out")
    assert (parquet, csv) == (tmp_path / "out" / "measurements.parquet", tmp_path / "out" / "measurements.csv")
    table = pq.read_table(parquet)
    assert table.schema.equals(MEASUREMENT_SCHEMA)
    assert table.column_names == ["case_id", "source_uri", *COMPONENT_COLUMNS]
    assert table.column("case_id").to_pylist() == ["a", "a", "b"]
    assert table.column("area_px").to_pylist() == [16, 6, 9]
    assert table.column("area_mm2").to_pylist() == [4.0, 1.5, None]  # unknown spacing: null, not NaN
    assert table.column("units").to_pylist() == ["mm", "mm", "px"]
    assert table.column("voxels").null_count == 3
    read_back = pacsv.read_csv(csv, convert_options=pacsv.ConvertOptions(column_types=MEASUREMENT_SCHEMA))
    assert read_back.select(MEASUREMENT_SCHEMA.names).equals(table)
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]
    # rows given as a generator are rows, not chunks
    parquet, _ = write_measurements((row for row in _two_cases()), tmp_path / "gen")
    assert pq.read_table(parquet).equals(table)


def test_chunks_are_written_one_after_another_as_one_table(tmp_path: Path) -> None:
    rows = _two_cases()
    chunks = iter([rows[:1], measurements_table(rows[1:2]), [], rows[2:]])
    parquet, csv = write_measurement_chunks(chunks, tmp_path)
    table = pq.read_table(parquet)
    assert table.equals(measurements_table(rows))
    read_back = pacsv.read_csv(csv, convert_options=pacsv.ConvertOptions(column_types=MEASUREMENT_SCHEMA))
    assert read_back.select(MEASUREMENT_SCHEMA.names).equals(table)
    assert Path(csv).read_text().count('"case_id"') == 1  # one header
    # no chunk at all (a run whose cases all failed): the empty table, header included
    parquet, csv = write_measurement_chunks([], tmp_path / "none")
    assert pq.read_table(parquet).num_rows == 0 and pq.read_table(parquet).schema.equals(MEASUREMENT_SCHEMA)
    assert Path(csv).read_text().splitlines() == [",".join(f'"{n}"' for n in MEASUREMENT_SCHEMA.names)]


def test_a_run_without_objects_writes_the_empty_table(tmp_path: Path) -> None:
    empty = measurement_rows("c", "/in/c.png", measure_case(np.zeros((8, 8), np.uint8), (1.0, 1.0), [1]))
    parquet, csv = write_measurements(empty, tmp_path)
    table = pq.read_table(parquet)
    assert table.num_rows == 0 and table.schema.equals(MEASUREMENT_SCHEMA)
    assert Path(csv).read_text().splitlines() == [",".join(f'"{n}"' for n in MEASUREMENT_SCHEMA.names)]


def test_a_table_is_written_as_given_and_a_bad_row_writes_nothing(tmp_path: Path) -> None:
    table = measurements_table(_two_cases())
    parquet, _ = write_measurements(table, tmp_path)
    assert pq.read_table(parquet).equals(table)
    bad = _two_cases()
    bad[0]["area_px"] = "sixteen"
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        write_measurements(bad, tmp_path / "bad")
    assert not [p for p in (tmp_path / "bad").rglob("*") if p.is_file()]  # no table, no temp file
