"""``segops plan`` on a DICOM folder: which image objects are the archive's cross-sections.

A TCIA download or a PACS export holds localizers, secondary captures (dose-report screenshots)
and, in some studies, series of another modality beside the series the labels were drawn on (the
PET of a PET/CT, LIDC's chest X-rays). The plan reads the image headers (a spread sample of at
most :data:`HEADER_SAMPLE`), and writes into the source:

- ``skip: [localizer, secondary]`` when secondary captures lie beside acquired images and none
  is labelled (where every image is one, or one is labelled, they are images of the archive, and
  the default ``skip: [localizer]`` stays);
- ``modalities``: the modalities of the labelled series, when the folder holds image series of
  other modalities too.

Localizers are skipped by the source's default; the note counts them. The detection's image
counts become those of the images the source will read.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pydicom

from segops.data.detection import Detection
from segops.data.dicom_roles import LOCALIZER, ROLE_TAGS, SECONDARY, image_role, modality
from segops.data.rtstruct import referenced_images
from segops.data.unannotated import spread

#: At most this many image headers are read to count roles and modalities (spread over the files).
HEADER_SAMPLE = 4000


@dataclasses.dataclass(frozen=True)
class ImageObject:
    """One image file's header facts for the plan."""

    rel_path: str
    modality: str
    role: str  # "", "localizer" or "secondary" (segops.data.dicom_roles.image_role)
    series_uid: str


def dicom_files(root: Path, files: list[str]) -> list[str]:
    """Files with a ``.dcm`` suffix or none whose bytes 128..132 read ``DICM``."""
    found = []
    for f in files:
        suffix = PurePosixPath(f).suffix.lower()
        if suffix == ".dcm":
            found.append(f)
        elif suffix == "":
            with open(root / f, "rb") as fh:
                fh.seek(128)
                if fh.read(4) == b"DICM":
                    found.append(f)
    return found


def read_objects(root: Path, files: list[str], sample: int = HEADER_SAMPLE) -> list[ImageObject]:
    """Header facts of ``files`` (a spread sample of at most ``sample``); unreadable headers are left
    for ingest to quarantine."""
    found = []
    for f in spread(files, sample):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(root / f, stop_before_pixels=True, specific_tags=ROLE_TAGS, force=True)
        except Exception:  # noqa: BLE001 - unreadable headers are for ingest to quarantine
            continue
        found.append(ImageObject(f, modality(ds), image_role(ds), str(ds.get("SeriesInstanceUID", "") or "")))
    return found


#: What :func:`structure_set_series` reads of a label object: its references, not its contours or segments.
_REFERENCES = ["ReferencedFrameOfReferenceSequence", "ReferencedSeriesSequence"]


def structure_set_series(root: Path, label_files: list[str], sample: int = 50) -> set[str]:
    """The SeriesInstanceUIDs the RTSTRUCT or SEG objects among ``label_files`` name (a spread sample)."""
    series: set[str] = set()
    for f in spread(label_files, sample):
        try:
            ds = pydicom.dcmread(root / f, stop_before_pixels=True, force=True, specific_tags=_REFERENCES)
        except Exception:  # noqa: BLE001 - unreadable label objects are for ingest to report
            continue
        series |= set(referenced_images(ds)[0])
        series |= {str(s.get("SeriesInstanceUID", "")) for s in ds.get("ReferencedSeriesSequence", [])}
    return series - {""}


def select_images(
    root: Path, detection: Detection, images: list[str], labelled: Callable[[ImageObject], bool]
) -> Detection:
    """``detection`` (a DICOM layout whose image files are ``images``) with the source's ``skip`` and
    ``modalities`` planned and its image counts those the source reads; ``labelled``: whether an
    object lies in a labelled series."""
    objects = read_objects(root, images)
    if not objects:
        return detection
    roles = Counter(o.role for o in objects)
    # screenshots beside acquired images, none of them labelled: not what the model is for
    screenshots = roles[SECONDARY] and roles[""] and not any(o.role == SECONDARY and labelled(o) for o in objects)
    skip = [LOCALIZER, SECONDARY] if screenshots else [LOCALIZER]
    acquired = [o for o in objects if o.role not in skip]
    labelled_modalities = sorted({o.modality for o in acquired if labelled(o)})
    other = sorted({o.modality for o in acquired} - set(labelled_modalities))
    modalities = labelled_modalities if labelled_modalities and other else []
    kept = [o for o in acquired if not modalities or o.modality in modalities]
    scale = len(images) / len(objects)
    roles_note = []
    if roles[LOCALIZER]:
        roles_note.append(f"{round(roles[LOCALIZER] * scale)} localizer(s) (scout views, skipped by default)")
    if roles[SECONDARY]:
        roles_note.append(
            f"{round(roles[SECONDARY] * scale)} secondary capture(s) ("
            + (
                "screenshots, dose reports)"
                if SECONDARY in skip
                else "images of the archive here: all or labelled, read)"
            )
        )
    if not roles_note and not modalities:
        return detection
    source, notes = dict(detection.source), dict(detection.notes)
    said = f"of {len(images)} DICOM image files: " + "; ".join(roles_note)
    if skip != [LOCALIZER]:
        source["skip"], notes["skip"] = skip, said
    elif roles_note:
        notes["path"] = "; ".join(filter(None, [notes.get("path"), said]))
    if modalities:
        left = Counter(o.modality for o in acquired if o.modality not in modalities)
        source["modalities"] = modalities
        notes["modalities"] = (
            ", ".join(f"{round(n * scale)} {m}" for m, n in sorted(left.items()))
            + " image(s) in no labelled series: read are those of the labelled series' modalities"
        )
    n_images = round(len(kept) * scale)
    n_paired = round(sum(labelled(o) for o in kept) * scale) if detection.n_paired < detection.n_images else n_images
    return dataclasses.replace(detection, source=source, n_images=n_images, n_paired=n_paired, notes=notes)
