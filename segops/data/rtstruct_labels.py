"""RTSTRUCT labels of a DICOM source: the folder index, each record's label and the contour census.

The driver indexes the RTSTRUCT folder once from headers (:func:`index_structure_sets`): which
series each structure set references (``ReferencedFrameOfReferenceSequence``) and, for a
structure set that names no series, which images its contours reference. A series no structure
set references is unlabelled. Decode tasks then rasterise each record's slice
(:func:`rtstruct_label`); ingest lists, per structure set, every contour that no ingested slice
drew and every ROI no rule matched (:func:`contour_census`). The rasterisation rules are those of
:mod:`segops.data.rtstruct`.
"""

from __future__ import annotations

import logging
import math
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pydicom

from segops.config.sources import IGNORE_LABEL
from segops.data.laterality import SIDE_WORDS
from segops.data.records import ImageRecord, series_label_uri
from segops.data.rtstruct import (
    CLOSED,
    DEFAULT_TOLERANCE_MM,
    SliceGeometry,
    StructureSet,
    contour_report,
    interpreted_types,
    is_rtstruct,
    rasterise_slice,
    read_structure_set,
    referenced_images,
    roi_class,
)
from segops.errors import LabelError

log = logging.getLogger(__name__)

#: Columns of the ``rtstruct-contours`` ingest table, one row per contour (or ROI) not drawn.
CENSUS_COLUMNS = ("rtstruct", "series_uid", "roi_number", "roi_name", "contour", "reason", "detail")


@dataclass
class RtstructIndex:
    """Where the structure sets of a folder point (picklable; built by :func:`index_structure_sets`).

    Attributes:
        series: SeriesInstanceUID → RTSTRUCT paths that reference the series.
        sops: SOPInstanceUID → paths of RTSTRUCTs that name no series, by their contours' images.
        roi_names: RTSTRUCT path → its ROI names.
        file_series: RTSTRUCT path → the series it references.
    """

    series: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sops: dict[str, tuple[str, ...]] = field(default_factory=dict)
    roi_names: dict[str, tuple[str, ...]] = field(default_factory=dict)
    file_series: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def paths_for(self, series_uid: str, instance_uid: str) -> tuple[tuple[str, ...], str]:
        """(RTSTRUCT paths, label uri) of an image; ((), "") when none labels it."""
        if series_uid in self.series:
            paths = self.series[series_uid]
            return paths, series_label_uri(paths, series_uid)
        paths = self.sops.get(instance_uid, ())
        return paths, "|".join(paths)

    def keys(self) -> set[str]:
        """Every label uri :meth:`paths_for` can give."""
        return {series_label_uri(p, uid) for uid, p in self.series.items()} | {"|".join(p) for p in self.sops.values()}


def index_structure_sets(root: Path) -> RtstructIndex:
    """Index the RTSTRUCT files under ``root`` (any depth) from their headers; files that are not
    RTSTRUCT are logged and ignored.

    Raises:
        LabelError: ``root`` is not a folder.
    """
    if not root.is_dir():
        raise LabelError(f"RTSTRUCT folder {root} does not exist; give labels.path as the folder of RTSTRUCT files")
    index = RtstructIndex()
    series_paths: dict[str, list[str]] = {}
    sop_paths: dict[str, list[str]] = {}
    ignored: list[str] = []  # files that are not DICOM: one warning, not one per file
    beside = 0  # DICOM images in the same tree (TCIA's patient/study/series folders): expected, not a problem
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:  # not a DICOM file: not a label
            ignored.append(f"{path} ({type(exc).__name__})")
            continue
        if not is_rtstruct(ds):
            beside += 1
            continue
        resolved = str(path.resolve())
        series, _ = referenced_images(ds)
        index.roi_names[resolved] = tuple(
            str(r.get("ROIName", "")).strip() for r in ds.get("StructureSetROISequence", [])
        )
        index.file_series[resolved] = tuple(series)
        for uid in series:
            series_paths.setdefault(uid, []).append(resolved)
        if not series:  # join by the images its contours reference
            contours = (c for r in ds.get("ROIContourSequence", []) for c in r.get("ContourSequence", []))
            for uid in {str(i.ReferencedSOPInstanceUID) for c in contours for i in c.get("ContourImageSequence", [])}:
                sop_paths.setdefault(uid, []).append(resolved)
    if ignored:
        log.warning("ignored %d file(s) in the RTSTRUCT folder that are not DICOM, e.g. %s", len(ignored), ignored[0])
    if beside:
        log.info("%d other DICOM file(s) beside the structure sets under %s (not labels)", beside, root)
    index.series = {uid: tuple(p) for uid, p in series_paths.items()}
    index.sops = {uid: tuple(p) for uid, p in sop_paths.items()}
    return index


_CACHE: OrderedDict[str, StructureSet] = OrderedDict()


def cached_structure_set(path: str) -> StructureSet:
    """:func:`~segops.data.rtstruct.read_structure_set`, cached: the slices of a series share one RTSTRUCT."""
    if path not in _CACHE:
        _CACHE[path] = read_structure_set(path)
        while len(_CACHE) > 4:
            _CACHE.popitem(last=False)
    return _CACHE[path]


def merged(paths: Iterable[str]) -> StructureSet:
    """One structure set holding the ROIs of several (a series several RTSTRUCTs label)."""
    sets = [cached_structure_set(p) for p in paths]
    if len(sets) == 1:
        return sets[0]
    return StructureSet(
        "|".join(s.path for s in sets),
        tuple(r for s in sets for r in s.rois),
        tuple(dict.fromkeys(u for s in sets for u in s.series_uids)),
        frozenset().union(*(s.sop_uids for s in sets)),
    )


def record_geometry(record: ImageRecord) -> SliceGeometry:
    """The slice geometry of a 2D record.

    Raises:
        LabelError: the record has no ImagePositionPatient / ImageOrientationPatient.
    """
    if len(record.position) != 3 or len(record.orientation) != 6:
        raise LabelError(
            f"{record.source_uri} has no ImagePositionPatient/ImageOrientationPatient, so RTSTRUCT contours "
            "cannot be placed on it; fix the image headers or leave this series out"
        )
    return SliceGeometry(
        record.instance_uid,
        tuple(record.position),
        tuple(record.orientation),
        (float(record.spacing[0]), float(record.spacing[1])),
        tuple(record.image.shape[-2:]),
        record.frame + 1 if record.n_frames > 1 else None,
    )


def rtstruct_label(
    index: RtstructIndex,
    record: ImageRecord,
    rules: dict[str, int],
    synonyms: dict[str, tuple[str, ...]],
    ignore_missing: bool = False,
) -> tuple[np.ndarray, str] | None:
    """((H, W) uint8 class map, label uri) of a record's slice, or None when no RTSTRUCT
    references its series (or image). A referenced slice without contours is all background;
    with ``ignore_missing``, where the series' structure sets draw no class of some rule, the
    pixels no ROI covers are :data:`~segops.config.sources.IGNORE_LABEL` instead (``missing_rois: ignore``)."""
    paths, uri = index.paths_for(record.series_uid or record.group_id, record.instance_uid)
    if not paths:
        return None
    structures = merged(paths)
    label = rasterise_slice(structures, record_geometry(record), rules, synonyms, DEFAULT_TOLERANCE_MM).label
    if ignore_missing and set(rules.values()) - drawn_classes(structures, rules, synonyms):
        label = np.where(label == 0, IGNORE_LABEL, label).astype(label.dtype)
    return label, uri


def drawn_classes(structures: StructureSet, rules: dict[str, int], synonyms: dict[str, tuple[str, ...]]) -> set[int]:
    """The classes a structure set draws: those of its ROIs with a closed contour of 3 or more points."""
    return {
        roi_class(r.name, rules, synonyms)[0]
        for r in structures.rois
        if any(c.geometric_type == CLOSED and len(c.points) >= 3 for c in r.contours)
    } - {0}


def declared_rows(
    index: RtstructIndex, rules: dict[str, int], synonyms: dict[str, tuple[str, ...]]
) -> list[tuple[str, set[int]]]:
    """(label uri, classes its ROI names map to) of each labelled series (or image)."""
    rows = []
    for uid, paths in sorted(index.series.items()):
        names = [n for p in paths for n in index.roi_names.get(p, ())]
        rows.append((series_label_uri(paths, uid), {roi_class(n, rules, synonyms)[0] for n in names}))
    for paths in sorted(set(index.sops.values())):
        names = [n for p in paths for n in index.roi_names.get(p, ())]
        rows.append(("|".join(paths), {roi_class(n, rules, synonyms)[0] for n in names}))
    return rows


def contour_census(
    index: RtstructIndex,
    records: Iterable[Mapping[str, Any]],
    rules: dict[str, int],
    synonyms: dict[str, tuple[str, ...]],
) -> list[dict[str, Any]]:
    """Per structure set, every contour no ingested slice drew and every ROI no rule matched
    (rows with :data:`CENSUS_COLUMNS`).

    Args:
        records: ingested 2D records' columns (``series_uid``, ``instance_uid``, ``frame``,
            ``position``, ``orientation``, ``spacing_y``, ``spacing_x``, ``height``, ``width``).
    """
    by_series: dict[str, list[Mapping[str, Any]]] = {}
    by_sop: dict[str, list[Mapping[str, Any]]] = {}
    for row in records:
        by_series.setdefault(str(row.get("series_uid") or row.get("group_id", "")), []).append(row)
        by_sop.setdefault(str(row.get("instance_uid", "")), []).append(row)
    sop_files: dict[str, set[str]] = {}
    for sop, paths in index.sops.items():
        for p in paths:
            sop_files.setdefault(p, set()).add(sop)
    out: list[dict[str, Any]] = []
    for path in sorted(index.roi_names):
        series = index.file_series.get(path, ())
        rows = [r for uid in series for r in by_series.get(uid, [])]
        rows += [r for sop in sorted(sop_files.get(path, ())) for r in by_sop.get(sop, [])]
        slices = [g for g in (_row_geometry(r, by_sop) for r in rows) if g is not None]
        for issue in contour_report(cached_structure_set(path), slices, rules, synonyms, DEFAULT_TOLERANCE_MM):
            out.append(
                {
                    "rtstruct": path,
                    "series_uid": ",".join(series),
                    "roi_number": issue.roi_number,
                    "roi_name": issue.roi_name,
                    "contour": issue.contour,
                    "reason": issue.reason,
                    "detail": issue.detail,
                }
            )
    return out


#: File names RT exports give structure sets (``RS.<uid>.dcm``): read even where a folder's first file is an image.
RTSTRUCT_NAMES = re.compile(r"^rs[._]|rtstruct|struct", re.IGNORECASE)


def find_structure_sets(root: Path, files: list[str], sample: int) -> list[str]:
    """The RTSTRUCT objects among DICOM ``files`` (relative to ``root``), for ``segops plan``: every
    file of a folder whose first file is one, and files named like one (:data:`RTSTRUCT_NAMES`)
    in other folders; headers of at most ``sample`` folders are read."""

    def is_structure_set(f: str) -> bool:
        try:
            ds = pydicom.dcmread(root / f, stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"])
        except Exception:  # noqa: BLE001 - unreadable headers are for ingest to quarantine
            return False
        return is_rtstruct(ds)

    folders: dict[str, list[str]] = {}
    for f in files:
        folders.setdefault(str(PurePosixPath(f).parent), []).append(f)
    found = []
    for fs in list(folders.values())[:sample]:
        named = [f for f in fs if RTSTRUCT_NAMES.search(PurePosixPath(f).name)]
        found += [f for f in (fs if is_structure_set(fs[0]) else named) if is_structure_set(f)]
    return found


#: How many structure sets :func:`proposed_rois` measures contour areas in.
PROPOSAL_SAMPLE = 20


@dataclass(frozen=True)
class RoiProposal:
    """What :func:`proposed_rois` proposes: ``rois`` rules and ``synonyms`` for the labels, the ROI
    names left out with the reason (``left_out``), the classes some sampled structure sets
    do not draw (``partial``: name → "drawn in k of n"), which a comment states, and each class's
    name as the structure sets spell it first (``names``: class → name, unescaped)."""

    rois: dict[str, int]
    synonyms: dict[str, tuple[str, ...]]
    left_out: dict[str, str]
    partial: dict[str, str]
    names: dict[int, str]


def proposed_rois(root: Path, structs: list[str]) -> RoiProposal:
    """The ``rois`` rules (and ``synonyms``) a plan proposes for the structure sets ``structs``.

    ROI names that differ only in case, spaces, ``-``, ``_`` or ``.`` (``Lung_L``, ``lung-l``), or in
    where and how they spell the side (``L Lung``, ``Lt Lung``: :func:`roi_key`) are one name, the
    first spelling its rule and the others its synonyms; so are the body outline's names (``External``,
    ``BODY``) and any ROI whose RTROIInterpretedType is ``EXTERNAL``. A name is a class when it
    has an area drawn (closed contours) in at least half of the sampled structure sets (at most
    :data:`PROPOSAL_SAMPLE`): a marker or isocentre point, a ROI defined but never drawn, or a
    structure only a few patients have (``GTV-2``, a planning ring) is left out and named, since a
    structure set without it teaches the model that it is background; so is a planning helper
    (:data:`HELPER_TYPES`: ``CouchSurface`` of type SUPPORT, optimisation structures of type
    CONTROL; or a TG-263 helper name, :data:`HELPER_NAME`: ``zPTV_opt``); classes are numbered
    1..K in name order. The rules are listed smallest structure first (mean area per structure
    set that draws it): where ROIs overlap the rule listed first wins, so a tumour drawn inside
    an organ and the organs inside a body outline (``External``, ``BODY``) keep their pixels,
    and the outline keeps only what nothing else covers.
    """
    spellings: dict[str, list[str]] = {}  # merge key → names as seen
    area: dict[str, float] = {}
    seen_in: dict[str, int] = {}  # sampled structure sets that draw an area of it
    helpers: dict[str, str] = {}  # merge key → why it is a planning helper, not anatomy or a target
    sampled = 0
    for i, f in enumerate(structs):
        if i < PROPOSAL_SAMPLE:
            try:
                rois = [
                    (r.name, sum(_polygon_area(c.points) for c in r.contours), r.interpreted_type)
                    for r in read_structure_set(root / f).rois
                ]
            except LabelError:
                continue
            sampled += 1
        else:  # names only
            tags = ["StructureSetROISequence", "RTROIObservationsSequence"]
            ds = pydicom.dcmread(root / f, stop_before_pixels=True, specific_tags=tags)
            kinds = interpreted_types(ds)
            rois = [
                (str(r.get("ROIName", "")), 0.0, kinds.get(int(r.ROINumber), ""))
                for r in ds.get("StructureSetROISequence", [])
            ]
        for name, mm2, kind in rois:
            name = name.strip()
            if not name:
                continue
            key = BODY_OUTLINE_KEY if kind == "EXTERNAL" else roi_key(name)
            if kind in HELPER_TYPES:
                helpers.setdefault(key, f"a planning helper (RTROIInterpretedType {kind})")
            elif HELPER_NAME.match(name):
                helpers.setdefault(key, "a planning helper (TG-263: a name starting with z or _)")
            names = spellings.setdefault(key, [])
            if name not in names:
                names.append(name)
            if i < PROPOSAL_SAMPLE and mm2 > 0:
                area[key] = area.get(key, 0.0) + mm2
                seen_in[key] = seen_in.get(key, 0) + 1
    by_name = sorted(spellings, key=lambda k: spellings[k][0].lower())
    kept = [k for k in by_name if 2 * seen_in.get(k, 0) >= max(sampled, 1) and k not in helpers]
    kept = kept or [k for k in by_name if k in seen_in] or by_name  # never no class at all
    left_out = {
        spellings[k][0]: helpers.get(k) or _why_left_out(seen_in.get(k, 0), sampled) for k in by_name if k not in kept
    }
    partial = {
        spellings[k][0]: f"drawn in {seen_in.get(k, 0)} of {sampled}" for k in kept if 0 < seen_in.get(k, 0) < sampled
    }
    classes = {k: c for c, k in enumerate(kept, start=1)}
    priority = sorted(kept, key=lambda k: (area.get(k, 0.0) / max(seen_in.get(k, 0), 1) or math.inf, k))
    rois = {_literal_glob(spellings[k][0]): classes[k] for k in priority}
    synonyms = {
        _literal_glob(spellings[k][0]): tuple(_literal_glob(n) for n in spellings[k][1:])
        for k in priority
        if len(spellings[k]) > 1 and len({n.lower() for n in spellings[k]}) > 1
    }
    return RoiProposal(rois, synonyms, left_out, partial, {classes[k]: spellings[k][0] for k in kept})


#: RTROIInterpretedTypes (DICOM PS3.3 C.8.8.8) of structures that are neither anatomy nor a target:
#: optimisation and dose structures, the couch and immobilisation, bolus, markers, brachytherapy
#: hardware. A plan leaves them out of the classes.
HELPER_TYPES = frozenset(
    {
        "CONTROL",
        "DOSE_REGION",
        "SUPPORT",
        "FIXATION",
        "BOLUS",
        "MARKER",
        "REGISTRATION",
        "ISOCENTER",
        "BRACHY_CHANNEL",
        "BRACHY_ACCESSORY",
        "BRACHY_SRC_APP",
        "BRACHY_CHNL_SHLD",
    }
)
#: AAPM TG-263: structures not meant for evaluation are named from ``z`` or ``_`` (``zPTV_opt``,
#: ``z_Ring``, ``_avoid``); a capital Z (``Zygoma_L``) is anatomy.
HELPER_NAME = re.compile(r"^(?:z[A-Z0-9_\s.-]|_)")

#: Names planning systems give the body outline (AAPM TG-263's ``External``; ``BODY``, ``Body``,
#: ``Outline``, …), merged as one structure. TG-263's ``Skin`` is a rind under the surface, not the outline.
BODY_OUTLINE_NAMES = frozenset(
    {"external", "ext", "body", "bodyoutline", "outline", "externalcontour", "bodycontour", "patientoutline"}
)
BODY_OUTLINE_KEY = "external"


def roi_key(name: str) -> str:
    """The merge key of a ROI name: lower case without spaces, ``_``, ``-`` and ``.``, and a side word
    (:data:`~segops.data.laterality.SIDE_WORDS`) wherever it stands taken out as the side, so ``Lung_L``,
    ``lung-l``, ``L Lung``, ``Lt Lung`` and ``Left lung`` are one structure (``left:lung``) and
    ``SpinalCord`` and ``Spinal_Cord`` another (``spinalcord``); the body outline's names
    (:data:`BODY_OUTLINE_NAMES`: ``External``, ``BODY``) are one (``external``). :func:`proposed_rois`
    also merges into it any ROI whose RTROIInterpretedType is ``EXTERNAL``, whatever its name."""
    words = [w for w in re.split(r"[\s._-]+", name.lower()) if w]
    if "".join(words) in BODY_OUTLINE_NAMES:
        return BODY_OUTLINE_KEY
    sides = {SIDE_WORDS[w] for w in words if w in SIDE_WORDS}
    if len(words) < 2 or len(sides) != 1:
        return "".join(words)
    return f"{sides.pop()}:" + "".join(w for w in words if w not in SIDE_WORDS)


def _why_left_out(drawn: int, sampled: int) -> str:
    if drawn == 0:
        return f"no area drawn in the {sampled} structure set(s) read (a point, or defined but empty)"
    return f"drawn in {drawn} of {sampled} structure sets: the others would teach it as background"


def _literal_glob(name: str) -> str:
    """A glob that matches ``name`` only (``*``, ``?`` and ``[`` escaped)."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def _polygon_area(points: np.ndarray) -> float:
    """Area (mm²) of a planar polygon in 3D, any orientation: half the norm of the summed cross products."""
    if len(points) < 3:
        return 0.0
    centred = points - points.mean(axis=0)
    return 0.5 * float(np.linalg.norm(np.cross(centred, np.roll(centred, -1, axis=0)).sum(axis=0)))


def _row_geometry(row: Mapping[str, Any], by_sop: Mapping[str, list[Mapping[str, Any]]]) -> SliceGeometry | None:
    position, orientation = list(row.get("position", [])), list(row.get("orientation", []))
    if len(position) != 3 or len(orientation) != 6:
        return None
    uid = str(row.get("instance_uid", ""))
    multi_frame = bool(uid) and len(by_sop.get(uid, [])) > 1
    return SliceGeometry(
        uid,
        tuple(float(v) for v in position),
        tuple(float(v) for v in orientation),
        (float(row["spacing_y"]), float(row["spacing_x"])),
        (int(row["height"]), int(row["width"])),
        int(row.get("frame", 0)) + 1 if multi_frame else None,
    )
