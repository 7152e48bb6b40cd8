"""The census the CLI prints: one line per group, shapes summarised (no Ray: the table is rendered directly)."""

import pandas as pd
from rich.console import Console

from segops.cli import census_rich_table
from segops.data.census import census_summary


def test_run_summary_of_photos_in_120_sizes_prints_a_handful_of_lines() -> None:
    """Ingest's census.parquet layout: one row per shape with its record count."""
    census = pd.DataFrame(
        [("XC", "JPEG", "RGB", 3, 480 + 4 * i, 640, 1 + i % 3) for i in range(120)]
        + [("CT", "1.2.840.10008.1.2.1", "MONOCHROME2", 1, 512, 512, 40)],
        columns=["modality", "transfer_syntax", "photometric", "channels", "height", "width", "records"],
    )
    console = Console(record=True, width=240)
    console.print(census_rich_table(census_summary(census, weight="records"), "census of ingested records"))
    text = console.export_text()
    body = [line for line in text.splitlines() if line.startswith("│")]
    assert len(body) == 2
    assert "│     240 │ 480–956 (median 718) │ 640   │ 488×640 (3), 500×640 (3), 512×640 (3), +117 more │" in body[0]
    assert "│ Explicit VR Little Endian │" in body[1] and "│      40 │ 512 " in body[1]  # UIDs shown by name
