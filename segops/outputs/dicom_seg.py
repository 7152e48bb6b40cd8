"""DICOM SEG objects from class maps, via highdicom (readable by pydicom, highdicom, PACS viewers)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from segops import __version__
from segops.outputs.atomic import atomic_write


def build_seg(
    sources: Sequence[pydicom.Dataset],
    masks: np.ndarray,
    labels: dict[int, str],
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> hd.seg.Segmentation:
    """A binary SEG with one segment per class.

    Args:
        sources: the source slices, in the order of ``masks``' first axis.
        masks: (N, H, W) class maps, one per source image.
        labels: class index → segment label (e.g. ``{1: "lesion"}``); class 0 is background.
        series_uid, sop_uid: pass fixed UIDs to make the output reproducible.
    """
    sources = [_with_type2_attributes(ds) for ds in sources]
    classes = sorted(labels)
    # highdicom wants (frames, H, W, segments) for several segments
    stack = np.stack([(masks == c) for c in classes], axis=-1).astype(np.uint8)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="segops", version=__version__, family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=labels[c],
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for i, c in enumerate(classes)
    ]
    return hd.seg.Segmentation(
        source_images=list(sources),
        pixel_array=stack,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_uid or hd.UID(),
        series_number=900,
        sop_instance_uid=sop_uid or hd.UID(),
        instance_number=1,
        manufacturer="segops",
        manufacturer_model_name="segops",
        software_versions=__version__,
        device_serial_number="0",
        omit_empty_frames=False,
    )


#: Type 2 attributes highdicom copies from the source: present in a valid file, but often
#: missing in real archives. Missing ones are added empty (the standard allows empty Type 2).
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def _with_type2_attributes(ds: pydicom.Dataset) -> pydicom.Dataset:
    missing = [k for k in _TYPE2 if k not in ds]
    if not missing:
        return ds
    ds = ds.copy()
    for keyword in missing:
        setattr(ds, keyword, "")
    return ds


def write_seg(path: str | Path, seg: hd.seg.Segmentation) -> Path | str:
    """Atomically write a SEG object."""
    return atomic_write(path, lambda tmp: seg.save_as(tmp))
