"""LIDC-IDRI nodule outlines: the XML reading sessions TCIA ships beside each CT series.

Each ``LidcReadMessage`` file names its series (``ResponseHeader/SeriesInstanceUid``) and holds one
``readingSession`` per radiologist (usually four). A session's ``unblindedReadNodule`` of 3 mm or
more has one ``roi`` per slice it crosses: the slice (``imageSOP_UID``), whether the outline adds
(``inclusion`` TRUE) or cuts a hole (FALSE), and its ``edgeMap`` points, the outline's pixels
(``xCoord`` = column, ``yCoord`` = row). A nodule under 3 mm is one point (its centre) and a
``nonNodule`` a ``locus``: marks, not outlines, so they are counted and not drawn.

The driver indexes the XML files once (:func:`index_lidc`); decode tasks draw each slice
(:func:`lidc_label`): per reader, the filled inclusion outlines (edge pixels included) less the
exclusions; then the consensus, a pixel being nodule where at least ``agreement`` of the series'
readers outlined it (pylidc's ``consensus(clevel=0.5)``, LIDC's "50 % agreement" masks). A
reader who marked nothing on a slice still votes: background. Other XML files (the chest X-ray
series' ``IdriReadMessage``, anything else) are skipped. Pure: no Ray.
"""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageDraw

from segops.data.detection import Detection
from segops.data.records import series_label_uri
from segops.data.seg_layout import common_dir
from segops.errors import LabelError

log = logging.getLogger(__name__)

#: The root element of an LIDC CT reading file (namespace ``http://www.nih.gov`` left out).
READ_MESSAGE = "LidcReadMessage"


@dataclass
class LidcIndex:
    """What :func:`index_lidc` read (picklable).

    Attributes:
        readers: SeriesInstanceUID → reading sessions (radiologists) in its XML files.
        files: SeriesInstanceUID → the XML files naming it.
        outlines: SOPInstanceUID → (reader, inclusion, (N, 2) int16 column/row edge points) per ROI
            (int16: LIDC-IDRI holds a few million points, and the index travels with the decode tasks).
        marks: nodules < 3 mm and non-nodules (points, not drawn).
    """

    readers: dict[str, int] = field(default_factory=dict)
    files: dict[str, tuple[str, ...]] = field(default_factory=dict)
    outlines: dict[str, list[tuple[int, bool, np.ndarray]]] = field(default_factory=dict)
    marks: int = 0

    def uri(self, series_uid: str) -> str:
        """The label uri of a series: its XML file(s) and the series."""
        return series_label_uri(self.files[series_uid], series_uid)

    def keys(self) -> set[str]:
        return {self.uri(uid) for uid in self.files}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in element if _local(c.tag) == name]


def _text(element: ET.Element, name: str) -> str:
    found = _children(element, name)
    return (found[0].text or "").strip() if found else ""


def _edge_points(roi: ET.Element) -> np.ndarray:
    points = [(_text(e, "xCoord"), _text(e, "yCoord")) for e in _children(roi, "edgeMap")]
    try:
        return np.array([(int(float(x)), int(float(y))) for x, y in points], np.int16).reshape(-1, 2)
    except ValueError as exc:
        raise LabelError(f"an edgeMap point is not a number ({exc})") from exc


def is_lidc_xml(path: Path) -> bool:
    """Whether ``path`` is an LIDC CT reading file (its root element is ``LidcReadMessage``)."""
    try:
        for _, element in ET.iterparse(path, events=("start",)):
            return _local(element.tag) == READ_MESSAGE
    except (ET.ParseError, OSError):
        return False
    return False


def _read_sessions(tree: ET.Element, index: LidcIndex) -> str:
    """Add one file's reading sessions (outlines, marks, readers) to ``index``; return its series."""
    header = _children(tree, "ResponseHeader")
    series = _text(header[0], "SeriesInstanceUid") if header else ""
    if not series:
        raise LabelError("it names no ResponseHeader/SeriesInstanceUid, so its outlines fit no series")
    reader0 = index.readers.get(series, 0)
    sessions = _children(tree, "readingSession")
    for r, session in enumerate(sessions, start=reader0):
        index.marks += len(_children(session, "nonNodule"))
        for nodule in _children(session, "unblindedReadNodule"):
            for roi in _children(nodule, "roi"):
                points = _edge_points(roi)
                if len(np.unique(points, axis=0)) < 3:  # a < 3 mm nodule's centre: a mark, not an outline
                    index.marks += 1
                    continue
                inclusion = _text(roi, "inclusion").upper() != "FALSE"
                index.outlines.setdefault(_text(roi, "imageSOP_UID"), []).append((r, inclusion, points))
    index.readers[series] = reader0 + len(sessions)
    return series


def index_lidc(root: Path) -> LidcIndex:
    """Read every LIDC XML file under ``root`` (any depth).

    Raises:
        LabelError: ``root`` is not a folder, or holds no LIDC reading file.
    """
    if not root.is_dir():
        raise LabelError(f"LIDC folder {root} does not exist; give labels.path as the folder holding the XML files")
    index, files, other = LidcIndex(), {}, 0
    for path in sorted(root.rglob("*.xml")):
        try:
            tree = ET.parse(path).getroot()
            if _local(tree.tag) != READ_MESSAGE:
                other += 1
                continue
            series = _read_sessions(tree, index)
        except (ET.ParseError, LabelError) as exc:
            error = LabelError(f"LIDC file {path}: {exc}; fix or remove it")
            error.label_uri = str(path)
            raise error from exc
        files.setdefault(series, []).append(str(path.resolve()))
    if not files:
        raise LabelError(
            f"no LIDC reading file (XML with root {READ_MESSAGE}) under {root}"
            + (f"; {other} other XML file(s) were skipped" if other else "")
        )
    index.files = {uid: tuple(paths) for uid, paths in files.items()}
    log.info(
        "LIDC: %d series with outlines from %d reading sessions; %d point marks (nodules < 3 mm, non-nodules) "
        "not drawn%s",
        len(files),
        sum(index.readers.values()),
        index.marks,
        f"; {other} other XML file(s) skipped" if other else "",
    )
    return index


def _filled(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    canvas = Image.new("1", (shape[1], shape[0]), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in points.tolist()], fill=1, outline=1)
    return np.asarray(canvas, bool)


def lidc_label(
    index: LidcIndex, series_uid: str, instance_uid: str, shape: tuple[int, int], agreement: float, class_id: int
) -> tuple[np.ndarray, str] | None:
    """((H, W) uint8 class map, label uri) of one slice, or None when no XML names its series."""
    readers = index.readers.get(series_uid)
    if not readers:
        return None
    drawn: dict[int, np.ndarray] = {}
    rois = index.outlines.get(instance_uid, [])
    for reader, inclusion, points in sorted(rois, key=lambda roi: not roi[1]):  # inclusions first
        mask = drawn.setdefault(reader, np.zeros(shape, bool))
        region = _filled(points, shape)
        if inclusion:
            mask |= region
        else:
            mask &= ~region
    votes = np.sum(list(drawn.values()), axis=0) if drawn else np.zeros(shape, int)
    need = max(1, math.ceil(agreement * readers - 1e-9))
    return np.where(votes >= need, class_id, 0).astype(np.uint8), index.uri(series_uid)


def find_lidc(root: Path, files: list[str], sample: int) -> list[str]:
    """The LIDC reading files among ``files`` (relative to ``root``), for ``segops plan``: none unless
    one of the first ``sample`` XML files is one."""
    xmls = [f for f in files if PurePosixPath(f).suffix.lower() == ".xml"]
    found = [f for f in xmls[:sample] if is_lidc_xml(root / f)]
    return found + [f for f in xmls[sample:] if is_lidc_xml(root / f)] if found else []


def lidc_layout(root: Path, dicom: list[str], xmls: list[str]) -> Detection:
    """DICOM images with LIDC reading files: one class, ``nodule``, by the readers' 50 % consensus."""
    folders = {str(PurePosixPath(f).parent) for f in xmls}
    labelled = sum(str(PurePosixPath(f).parent) in folders for f in dicom)
    image_dir, xml_dir = common_dir(dicom), common_dir(xmls)
    note = (
        f"{len(xmls)} LIDC reading file(s) in {xml_dir or '.'}: nodules >= 3 mm outlined by each radiologist, "
        "labelled where at least half of a series' readers outlined a pixel (agreement: 0.5, LIDC's 50 % "
        "consensus); nodules < 3 mm and non-nodules are points, not drawn; series without a file are unlabelled"
    )
    return Detection(
        {"kind": "dicom", "path": str(root / image_dir), "labels": {"kind": "lidc-xml", "path": str(root / xml_dir)}},
        "semantic",
        2,
        "dicom-lidc",
        "lidc-xml",
        len(dicom),
        labelled,
        {"labels": note},
        class_names={1: "nodule"},
    )
