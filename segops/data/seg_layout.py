"""``segops plan`` for DICOM images labelled by DICOM SEG objects (which files are SEGs, where the
images are, and the classes the SEGs' segments give) or by RTSTRUCT structure sets (the ROI names
as classes; see :mod:`segops.data.pairing`). Pure: DICOM headers only, never pixel data."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

import pydicom

from segops.data.detection import Detection
from segops.data.rtstruct_labels import proposed_rois
from segops.errors import PlanError

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
#: SEG headers read for their segments.
SEGMENT_SAMPLE = 50


def seg_files(root: Path, dicom: list[str], sample: int) -> list[str]:
    """DICOM SEG objects among ``dicom``: headers of folders' first files, then of every file in a SEG folder."""

    def is_seg(f: str) -> bool:
        try:
            ds = pydicom.dcmread(root / f, stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"])
        except Exception:  # noqa: BLE001 - unreadable headers are for ingest to quarantine
            return False
        return str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS or ds.get("Modality", "") == "SEG"

    folders: dict[str, list[str]] = {}
    for f in dicom:
        folders.setdefault(str(PurePosixPath(f).parent), []).append(f)
    seg_dirs = [d for d, fs in list(folders.items())[:sample] if is_seg(fs[0])]
    return [f for d in seg_dirs for f in folders[d] if is_seg(f)]


def common_dir(paths: list[str]) -> str:
    """The deepest folder holding every path ("" for the root)."""
    common = os.path.commonpath([str(PurePosixPath(p).parent) for p in paths]) if paths else ""
    return "" if common == "." else common


def label_objects_excluded(image_dir: str, label_dir: str, label_files: list[str]) -> list[str]:
    """``exclude`` globs (relative to ``image_dir``) that keep DICOM label objects (SEG, RTSTRUCT)
    inside the image folder out of the inputs: their folder when it is below the images', else each
    file by name (TCIA's patient/study/series tree holds both; at most 500 listed)."""
    if label_dir != image_dir and label_dir.startswith(f"{image_dir}/" if image_dir else ""):
        rel = PurePosixPath(label_dir).relative_to(image_dir) if image_dir else PurePosixPath(label_dir)
        return [f"{rel.as_posix()}/**"]
    if label_dir == image_dir:
        return sorted(str(PurePosixPath(f).relative_to(image_dir)) if image_dir else f for f in label_files)[:500]
    return []


def segment_names(root: Path, segs: list[str], sample: int = SEGMENT_SAMPLE) -> tuple[dict[int, str], str]:
    """(segment number → its SegmentLabel, a note) over up to ``sample`` SEG headers. A number
    labelled differently by different SEGs gets the names joined by " / " and the note says so
    (its pixels are read by number: rename or renumber the segments to make them one class)."""
    names: dict[int, Counter[str]] = {}
    step = max(1, len(segs) // sample)
    for f in segs[::step][:sample]:
        try:
            ds = pydicom.dcmread(root / f, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - unreadable SEGs are for ingest to report
            continue
        for item in getattr(ds, "SegmentSequence", []):
            label = str(getattr(item, "SegmentLabel", "") or "").strip()
            names.setdefault(int(item.SegmentNumber), Counter())[label] += 1
    out, mixed = {}, []
    for number, labels in sorted(names.items()):
        spellings: dict[str, str] = {}
        for label, _ in labels.most_common():  # the commonest spelling of each case-insensitive name
            spellings.setdefault(label.lower(), label)
        out[number] = " / ".join(spellings.values()) or f"segment-{number}"
        if len(spellings) > 1:
            mixed.append(f"segment {number} is {', '.join(spellings.values())}")
    note = f"; different SEGs name one segment number differently ({'; '.join(mixed[:3])})" if mixed else ""
    return out, note


def dicom_seg(root: Path, dicom: list[str], segs: list[str], sample: int = SEGMENT_SAMPLE) -> Detection:
    """DICOM images with SEG labels: a class per segment number (SegmentLabel its name)."""
    seg_set = set(segs)
    images = [f for f in dicom if f not in seg_set]
    if not images:
        raise PlanError(f"every DICOM file under {root} is a SEG object; give the folder that holds the images too")
    image_dir, seg_dir = common_dir(images), common_dir(segs)
    source: dict[str, Any] = {
        "kind": "dicom",
        "path": str(root / image_dir),
        "labels": {"kind": "dicom-seg", "path": str(root / seg_dir)},
    }
    exclude = label_objects_excluded(image_dir, seg_dir, segs)
    if exclude:
        source["exclude"] = exclude
    names, mixed = segment_names(root, segs, min(sample, SEGMENT_SAMPLE))
    classes = max(names, default=1) + 1
    shown = ", ".join(f"{n}: {name}" for n, name in list(names.items())[:8])
    note = (
        f"{len(segs)} DICOM SEG object(s) in {seg_dir or '.'}, {len(images)} image files in {image_dir or '.'}; "
        f"segment numbers are the classes ({shown or 'no segments declared'}){mixed}"
    )
    return Detection(
        source,
        "semantic",
        classes,
        "dicom-seg",
        "dicom-seg",
        len(images),
        len(images),
        {"labels": note},
        class_names=names,
    )


def dicom_rtstruct(root: Path, dicom: list[str], structs: list[str]) -> Detection:
    """DICOM images with RTSTRUCT labels: the ROI names found become ``rois`` (classes 1..K, sorted)."""
    images = [f for f in dicom if f not in set(structs)]
    if not images:
        raise PlanError(f"every DICOM file under {root} is an RTSTRUCT; give the folder that holds the images too")
    proposal = proposed_rois(root, structs)
    rois = proposal.rois
    image_dir, struct_dir = common_dir(images), common_dir(structs)
    labels: dict[str, Any] = {"kind": "rtstruct", "path": str(root / struct_dir), "rois": rois}
    if proposal.synonyms:
        labels["synonyms"] = proposal.synonyms
    note = (
        f"{len(structs)} RTSTRUCT object(s) in {struct_dir or '.'}, {len(images)} image files in {image_dir or '.'}; "
        f"ROI names → classes 1..{len(rois)} by name (spellings that differ in case or separators merged), "
        "listed smallest structure first: where ROIs overlap the first listed wins, so a body outline keeps only "
        "what no organ covers (drop ROIs you do not want, e.g. body or couch; merge names by glob)"
    )
    if proposal.partial:  # the others would teach it as background where it lies: their uncovered pixels ignored
        labels["missing_rois"] = "ignore"
        note += (
            "; not drawn in every structure set: "
            + "; ".join(f"{name} {why}" for name, why in proposal.partial.items())
            + " (missing_rois: ignore leaves the pixels no ROI covers out of the loss and the scores on the slices of "
            "a series that lacks a class, rather than teach the class as background there)"
        )
    if proposal.left_out:
        note += "; left out (add a rule to keep one): " + "; ".join(
            f"{name}: {why}" for name, why in proposal.left_out.items()
        )
    source = {"kind": "dicom", "path": str(root / image_dir), "labels": labels}
    exclude = label_objects_excluded(image_dir, struct_dir, structs)  # RTSTRUCTs are no images: not "skipped"
    if exclude:
        source["exclude"] = exclude
    return Detection(
        source,
        "semantic",
        len(rois) + 1,
        "dicom-rtstruct",
        "rtstruct",
        len(images),
        len(images),
        {"labels": note},
        class_names=proposal.names,
    )
