"""What a segment step writes and where: the one spec every output writer takes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OutputConfig:
    """What to write and where (picklable: shipped to inference actors)."""

    root: str
    formats: tuple[str, ...]
    layout: str  # "mirror" | "dicom-tags"
    segments: dict[int, str]
    classes: int
    model_digest: str  # makes SEG UIDs reproducible per (source, model)
    run_id: str = ""  # the run writing them: RTSTRUCT provenance
