"""LIDC-IDRI reading files (``LidcReadMessage`` XML, namespace ``http://www.nih.gov``) written as
TCIA ships them, for the tests and ``benchmarks/new_user.py``."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

NS = "http://www.nih.gov"


@dataclass
class Outline:
    """One ``roi`` of a nodule: the slice, inclusion, and its edge points (x = column, y = row)."""

    sop_uid: str
    points: list[tuple[int, int]]
    inclusion: bool = True


@dataclass
class Reader:
    """One radiologist's reading session: nodules (each a list of outlines; one point each for a
    nodule < 3 mm) and non-nodule loci (slice, x, y)."""

    nodules: list[list[Outline]] = field(default_factory=list)
    non_nodules: list[tuple[str, int, int]] = field(default_factory=list)


def rectangle(x0: int, y0: int, x1: int, y1: int) -> list[tuple[int, int]]:
    """The edge pixels of the rectangle with corners (x0, y0) and (x1, y1), walked clockwise."""
    top = [(x, y0) for x in range(x0, x1 + 1)]
    right = [(x1, y) for y in range(y0 + 1, y1 + 1)]
    bottom = [(x, y1) for x in range(x1 - 1, x0 - 1, -1)]
    left = [(x0, y) for y in range(y1 - 1, y0, -1)]
    return top + right + bottom + left


def _sub(parent: ET.Element, name: str, text: str | None = None) -> ET.Element:
    element = ET.SubElement(parent, f"{{{NS}}}{name}")
    if text is not None:
        element.text = text
    return element


def write_lidc_xml(path: Path, series_uid: str, readers: list[Reader], root_tag: str = "LidcReadMessage") -> Path:
    """Write an LIDC reading file for ``series_uid`` with one ``readingSession`` per reader."""
    ET.register_namespace("", NS)
    root = ET.Element(f"{{{NS}}}{root_tag}", {"uid": "1.3.6.1.4.1.14519.5.2.1.6279.6001.1"})
    header = _sub(root, "ResponseHeader")
    _sub(header, "Version", "1.8.1")
    _sub(header, "SeriesInstanceUid", f" {series_uid} ")  # TCIA's files pad some values
    for k, reader in enumerate(readers):
        session = _sub(root, "readingSession")
        _sub(session, "annotationVersion", "3.12")
        _sub(session, "servicingRadiologistID", f"reader{k}")
        for n, outlines in enumerate(reader.nodules):
            nodule = _sub(session, "unblindedReadNodule")
            _sub(nodule, "noduleID", f"Nodule {n + 1:03d}")
            if len(outlines) > 1 or len(outlines[0].points) > 1:
                _sub(_sub(nodule, "characteristics"), "malignancy", "3")
            for outline in outlines:
                roi = _sub(nodule, "roi")
                _sub(roi, "imageZposition", "-125.000000 ")
                _sub(roi, "imageSOP_UID", outline.sop_uid)
                _sub(roi, "inclusion", "TRUE" if outline.inclusion else "FALSE")
                for x, y in outline.points:
                    edge = _sub(roi, "edgeMap")
                    _sub(edge, "xCoord", str(x))
                    _sub(edge, "yCoord", str(y))
        for n, (sop, x, y) in enumerate(reader.non_nodules):
            mark = _sub(session, "nonNodule")
            _sub(mark, "nonNoduleID", f"non {n}")
            _sub(mark, "imageSOP_UID", sop)
            locus = _sub(mark, "locus")
            _sub(locus, "xCoord", str(x))
            _sub(locus, "yCoord", str(y))
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)
    return path
