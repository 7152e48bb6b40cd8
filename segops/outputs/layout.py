"""Where an input's outputs go. Paths built from DICOM tags are sanitised component by component."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from segops.config.sources import VOLUME_EXTENSIONS
from segops.data.volumes import case_of, volume_extension

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+|\.{2,}")
MAX_COMPONENT = 64


def sanitize_component(value: object, fallback: str = "unknown") -> str:
    """One safe path component from an untrusted string (a PatientID, a UID...).

    Keeps letters, digits, ``.``, ``_`` and ``-``; everything else (``/``, ``\\``, spaces,
    control characters) and every run of two or more dots becomes ``_``; leading dots are
    dropped, so ``..`` and hidden names cannot occur; the result is cut to 64 characters.
    Empty results become ``fallback``.
    """
    text = _UNSAFE.sub("_", str(value or "")).lstrip(".")[:MAX_COMPONENT]
    return text or fallback


def mirror_stem(rel_path: str, frame: int, n_frames: int = 1) -> str:
    """``a/b.dcm`` → ``a/b``; frames of a multi-frame input get ``.fNNNN``; every slice of a volume
    file does, named by its case (``a/case_0000.nii.gz`` slice 3 → ``a/case.f0003``: a case of
    channel files is listed by its ``_0000`` file; any other name is the case's whole name, as
    AMOS' ``amos_0001.nii.gz``)."""
    ext = volume_extension(rel_path, VOLUME_EXTENSIONS)
    if ext is not None:
        case, channel, _ = case_of(rel_path, VOLUME_EXTENSIONS)
        name = PurePosixPath(rel_path).name
        stem = case if channel == 0 else name[: len(name) - len(ext)]
        return str(PurePosixPath(rel_path).with_name(f"{stem}.f{frame:04d}"))
    stem = str(PurePosixPath(rel_path).with_suffix(""))
    return f"{stem}.f{frame:04d}" if (frame or n_frames > 1) else stem


def dicom_tag_stem(patient_id: object, study_uid: object, series_uid: object, instance: object, frame: int = 0) -> str:
    """``<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>`` (each sanitised)."""
    parts = [sanitize_component(v) for v in (patient_id, study_uid, series_uid, instance)]
    stem = "/".join(parts)
    return f"{stem}.f{frame:04d}" if frame else stem
