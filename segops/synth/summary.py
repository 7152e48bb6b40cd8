"""What a generator reports it wrote: the summary every folder-of-images archive returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ArchiveSummary:
    """What a generator wrote: image and label roots and the file counts."""

    images: Path
    labels: Path
    n_images: int
    n_foreground: int
