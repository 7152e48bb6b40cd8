"""What a DICOM image object is to its archive: a cross-section, a localizer, a secondary capture
(pure: pydicom only). The source's ``skip`` and ``modalities`` (:mod:`segops.config.selection`)
say which of them a run reads; :func:`left_out` gives the reason for one it does not."""

from __future__ import annotations

import pydicom

LOCALIZER, SECONDARY = "localizer", "secondary"

#: Secondary Capture Image Storage and its multi-frame variants (1-bit, 8-bit, 16-bit, true colour).
SECONDARY_CAPTURE_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
    }
)

#: The header elements :func:`image_role` and :func:`left_out` read (for ``dcmread(specific_tags=...)``).
ROLE_TAGS = ["SOPClassUID", "Modality", "ImageType", "SeriesInstanceUID"]


def image_types(ds: pydicom.Dataset) -> list[str]:
    """The values of ImageType (``ORIGINAL\\PRIMARY\\AXIAL`` → three), upper case; [] when absent."""
    value = ds.get("ImageType", None)
    if value is None:
        return []
    values = [value] if isinstance(value, str) else list(value)
    return [str(v).strip().upper() for v in values]


def image_role(ds: pydicom.Dataset) -> str:
    """``localizer`` (an ImageType value LOCALIZER: CT and MR scout views), ``secondary`` (a Secondary
    Capture object: screenshots, dose reports, scanned pages) or "" (a cross-section)."""
    if LOCALIZER.upper() in image_types(ds):
        return LOCALIZER
    if str(ds.get("SOPClassUID", "") or "").strip() in SECONDARY_CAPTURE_CLASSES:
        return SECONDARY
    return ""


def modality(ds: pydicom.Dataset) -> str:
    """The object's Modality, ``OT`` (other) when it has none."""
    return str(ds.get("Modality", "") or "").strip().upper() or "OT"


def left_out(ds: pydicom.Dataset, skip: tuple[str, ...], modalities: tuple[str, ...]) -> str | None:
    """Why a source with these ``skip`` roles and ``modalities`` does not read the image object
    ``ds`` (a header read is enough), or None when it reads it."""
    role = image_role(ds)
    if role and role in skip:
        types = "\\".join(image_types(ds))
        what = (
            f"a localizer (ImageType {types}): a scout view, not a cross-section"
            if role == LOCALIZER
            else "a secondary capture (a screenshot, dose report or scanned page), not an acquired image"
        )
        return f"{what}; source.skip lists {role!r} (remove it to read such images)"
    if modalities and modality(ds) not in modalities:
        return f"modality {modality(ds)}: source.modalities reads {', '.join(modalities)} only"
    return None
