"""Class lists shipped beside masks: the names (and colours) a dataset gives its mask values, read
by ``segops plan`` so that classes are named in the workflow, outputs and reports, and colour masks
take the list's background.

- Roboflow's semantic-mask export: ``_classes.csv`` (``Pixel Value, Class``);
- CamVid's and many Kaggle sets' ``class_dict.csv`` (``name, r, g, b``);
- CVAT's segmentation-mask export: ``labelmap.txt`` (``name:r,g,b:parts:actions``);
- ADE20K's scene-parsing ``objectInfo150.csv`` (``Idx, Ratio, Train, Val, Name``: value → name);
- labelme2voc's ``class_names.txt`` and plain ``classes.txt`` (a name per line, the line its value;
  a list that does not start with a background-like name starts at 1, as YOLO's ``classes.txt``).

Pure: reads one small text file.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from segops.data.detection import Detection

log = logging.getLogger(__name__)

#: File names (lower case) of class lists, most specific first.
CLASS_LIST_NAMES = (
    "_classes.csv",
    "class_dict.csv",
    "labelmap.txt",
    "objectinfo150.csv",
    "classes.csv",
    "class_names.txt",
    "classes.txt",
)
#: Names that say "background" (labelme2voc's ``_background_``, CamVid's ``Void``).
BACKGROUND_NAME = re.compile(r"_?(background|bg|void|unlabell?ed|none|nothing|empty)_?", re.IGNORECASE)
#: Larger files are not class lists.
MAX_BYTES = 256 * 1024
_NAME_COLUMNS = ("class", "name", "class_name", "classname", "label", "label_name", "category")
_VALUE_COLUMNS = ("pixel value", "pixel_value", "value", "id", "idx", "index", "class_id", "label_id")


@dataclass(frozen=True)
class ClassList:
    """What a class list says: stored mask value → name, and ``#rrggbb`` colour → name."""

    path: str
    names: dict[int, str] = field(default_factory=dict)
    colours: dict[str, str] = field(default_factory=dict)


def find_class_list(root: Path, files: list[str], near: str = "") -> ClassList | None:
    """The class list under ``root`` (``files`` relative to it) that reads, nearest the folder
    ``near`` (relative: the masks' folder), shallowest otherwise; None where there is none."""
    lists = [f for f in files if PurePosixPath(f).name.lower() in CLASS_LIST_NAMES]

    def rank(f: str) -> tuple[bool, int, int, str]:
        parent = str(PurePosixPath(f).parent)
        inside = parent == "." or near == parent or near.startswith(parent + "/")
        return not inside, CLASS_LIST_NAMES.index(PurePosixPath(f).name.lower()), f.count("/"), f

    for f in sorted(lists, key=rank):
        found = read_class_list(root / f, f)
        if found is not None:
            return found
    return None


def read_class_list(path: Path, rel: str) -> ClassList | None:
    """The names and colours in ``path`` (shown as ``rel``); None where it is not a class list."""
    try:
        if path.stat().st_size > MAX_BYTES:
            return None
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError:
        return None
    name = path.name.lower()
    if name.endswith(".csv"):
        found = _from_csv(text)
    elif name == "labelmap.txt":
        found = _from_labelmap(text)
    else:
        found = _from_lines([line.strip() for line in text.splitlines()])
    if found is None or not (found[0] or found[1]):
        return None
    return ClassList(rel, *found)


def _colour(r: str, g: str, b: str) -> str | None:
    try:
        rgb = [int(float(v)) for v in (r, g, b)]
    except ValueError:
        return None
    return "#{:02x}{:02x}{:02x}".format(*rgb) if all(0 <= v <= 255 for v in rgb) else None


def _from_csv(text: str) -> tuple[dict[int, str], dict[str, str]] | None:
    rows = [[c.strip() for c in row] for row in csv.reader(text.splitlines()) if any(c.strip() for c in row)]
    if len(rows) < 2:
        return None
    header = [c.lower() for c in rows[0]]
    col = {h: i for i, h in enumerate(header)}
    name_at = next((col[h] for h in _NAME_COLUMNS if h in col), None)
    value_at = next((col[h] for h in _VALUE_COLUMNS if h in col), None)
    rgb_at = [
        next((col[h] for h in names if h in col), None) for names in (("r", "red"), ("g", "green"), ("b", "blue"))
    ]
    if name_at is None:
        return None
    names: dict[int, str] = {}
    colours: dict[str, str] = {}
    for k, row in enumerate(rows[1:]):
        if len(row) <= name_at or not row[name_at]:
            continue
        if value_at is not None and value_at < len(row) and row[value_at].isdigit():
            names[int(row[value_at])] = row[name_at]
        elif None not in rgb_at and max(rgb_at) < len(row):  # type: ignore[type-var]
            if colour := _colour(*(row[i] for i in rgb_at)):  # type: ignore[index]
                colours[colour] = row[name_at]
            names[k] = row[name_at]  # CamVid's rows in the order its index masks number them
    return names, colours


def _from_labelmap(text: str) -> tuple[dict[int, str], dict[str, str]] | None:
    names: dict[int, str] = {}
    colours: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.strip().split(":")
        names[len(names)] = parts[0]
        rgb = parts[1].split(",") if len(parts) > 1 else []
        if len(rgb) == 3 and (colour := _colour(*rgb)):
            colours[colour] = parts[0]
    return names, colours


def _from_lines(lines: list[str]) -> tuple[dict[int, str], dict[str, str]] | None:
    entries = [line for line in lines if line and not line.startswith("#")]
    if not entries or any(len(e) > 64 or "," in e or ":" in e for e in entries):
        return None
    start = 0 if BACKGROUND_NAME.fullmatch(entries[0]) else 1  # no background listed: the first is value 1
    return {k + start: e for k, e in enumerate(entries)}, {}


def with_listed_names(root: Path, files: list[str], found: Detection) -> Detection:
    """``found`` with its classes named from the class list beside its masks, where it has none:
    a mask-value map's classes by the stored values that make them, a colour map's by colour (and
    the colour the list names background as class 0, where the masks hold it)."""
    labels = found.source.get("labels", {})
    if found.class_names or labels.get("kind") != "mask-png":
        return found
    near = Path(labels.get("path", root)).resolve()
    listed = find_class_list(root, files, near.relative_to(root).as_posix() if near.is_relative_to(root) else "")
    if listed is None:
        return found
    said = f"class names from {listed.path}"
    if "colors" in labels and listed.colours:
        labels, names, background = _named_colours(labels, listed)
        if background is not None and background != next(iter(found.source["labels"]["colors"])):
            said += f", which names {background} ({listed.colours[background]}) background: class 0"
    else:
        names = _named_values(labels, found.classes, listed)
    if not names:
        return found
    note = f"{found.notes.get('labels', '')}; {said}".lstrip("; ")
    source = found.source | {"labels": labels}
    log.info("class names from %s: %s", listed.path, names)
    return dataclasses.replace(found, source=source, class_names=names, notes=found.notes | {"labels": note})


def _named_values(labels: dict, classes: int, listed: ClassList) -> dict[int, str]:
    """Class → name through the stored values each class is read from (``values``; 0/1, 0/255 and
    thresholded masks: class 1 is the list's one foreground entry)."""
    values: dict[int, list[int]] = {}
    for stored, k in (labels.get("values") or {}).items():
        values.setdefault(int(k), []).append(int(stored))
    if not values:
        values = {k: [k] for k in range(classes)}
    if classes == 2 and not any(v in listed.names for v in values[1]):
        foreground = [v for v, n in listed.names.items() if not BACKGROUND_NAME.fullmatch(n)]
        values[1] = foreground[:1] if len(foreground) == 1 else []
    names = {k: listed.names[v] for k, stored in values.items() if k > 0 for v in stored[:1] if v in listed.names}
    return names


def _named_colours(labels: dict, listed: ClassList) -> tuple[dict, dict[int, str], str | None]:
    """``labels`` with the colour the list names background as class 0 (where the masks hold it),
    the other classes in their order; class → name; that background colour (None: not listed)."""
    colours = list(labels["colors"])
    background = next((c for c in colours if BACKGROUND_NAME.fullmatch(listed.colours.get(c, ""))), None)
    if background is not None:
        colours = [background] + [c for c in colours if c != background]
    colors = {c: k for k, c in enumerate(colours)}
    names = {k: listed.colours[c] for c, k in colors.items() if k > 0 and c in listed.colours}
    return labels | {"colors": colors}, names, background
