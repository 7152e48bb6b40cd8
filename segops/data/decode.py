"""One source file → rows: decoded records, or a quarantine/skip row that says why not.

Pure (no Ray): the Ray datasource in :mod:`segops.cluster.datasets` maps this over file
listings; tests call it directly. Nothing here raises for a bad input file.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from segops.config.schema import (
    DicomSource,
    ImageSource,
    InstancePngLabels,
    MaskFolderLabels,
    MaskPngLabels,
    VolumeLabels,
    VolumeSource,
)
from segops.data.dicom import read_dicom
from segops.data.globs import path_selected
from segops.data.images import read_image
from segops.data.labels import LabelResolver, build_resolver, mask_png_path, pattern_regex
from segops.data.mask_names import MASK_PART, replaced
from segops.data.records import STATUS_OK, STATUS_QUARANTINED, STATUS_SKIPPED, failure_fields, problem_row
from segops.data.volume_labels import DicomSliceLabels, names_a_label, volume_label
from segops.data.volumes import is_case_entry, read_volume_case, volume_extension
from segops.errors import LabelError, LeftOutError, SkippedError

log = logging.getLogger(__name__)

#: The folder sources this module lists and decodes.
Source = DicomSource | ImageSource | VolumeSource


def list_source_files(source: Source) -> list[dict[str, str]]:
    """Every candidate file under the source root, sorted, as ``{"path", "rel_path"}``.

    Hidden files and folders (``.name``) are ignored. For DICOM, ``""`` in ``extensions``
    admits files without a suffix (common in PACS exports). For volumes, one file per case: its
    first channel (see :func:`segops.data.volumes.is_case_entry`).
    """
    files = [f for entry in listing_entries(source) for f in entry_files(source, entry)]
    return sorted(files, key=lambda f: f["rel_path"])


def listing_entries(source: Source, min_entries: int = 64, chunk: int = 64, max_depth: int = 4) -> list[dict[str, Any]]:
    """Units of work for reading an archive: ``{"dir": rel_dir, "files": [rel_path, ...]}``.

    The folder tree is walked breadth first, only until there are about ``min_entries`` units:
    loose files met on the way become chunks of ``chunk`` files (``dir`` empty), and the
    folders not yet opened become whole-subtree units (``files`` empty) that a worker lists
    itself. So the driver never lists a whole large archive, and a PACS-style tree
    (patient/study/series/files) still splits into many parallel units.

    Raises:
        FileNotFoundError: the source folder does not exist.
    """
    root = Path(source.path)
    if not root.is_dir():
        raise FileNotFoundError(f"source folder {root} does not exist or is not a folder")
    entries: list[dict[str, Any]] = []
    level = [root]
    for depth in range(max_depth + 1):
        next_level: list[Path] = []
        for folder in level:
            children = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
            rels = [p.relative_to(root).as_posix() for p in children if p.is_file()]
            files = [rel for rel in rels if _wanted(root, rel, source)]
            entries += [{"dir": "", "files": files[i : i + chunk]} for i in range(0, len(files), chunk)]
            next_level += [p for p in children if p.is_dir()]
        if not next_level:
            break
        if len(entries) + len(next_level) >= min_entries or depth == max_depth:
            entries += [{"dir": p.relative_to(root).as_posix(), "files": []} for p in next_level]
            break
        level = next_level
    return entries


def entry_files(source: Source, entry: dict[str, Any]) -> Iterator[dict[str, str]]:
    """The files of one listing entry, as ``{"path", "rel_path"}`` (subtrees listed lazily)."""
    root = Path(source.path)
    if len(entry["files"]):
        for rel in entry["files"]:
            yield {"path": str(root / rel), "rel_path": str(rel)}
        return
    for path in sorted((root / entry["dir"]).rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and _wanted(root, rel, source):
            yield {"path": str(path), "rel_path": rel}


def _wanted(root: Path, rel: str, source: Source) -> bool:
    """Whether the file ``root / rel`` is an input of ``source``: see :func:`_selected`, and not
    a mask stored beside its image; for volumes, not in a label folder inside the source folder
    and not a case's second or later channel."""
    if isinstance(source, VolumeSource):
        labels = _folder_prefix(str(root), str(source.labels.path)) if source.labels is not None else None
        in_labels = bool(labels) and rel.startswith(labels)  # a label folder inside the source folder
        wanted = _selected(rel, source) and not in_labels and is_case_entry(root, rel, source)
        return wanted and not (labels == "" and names_a_label(root, rel, source))  # labels beside the images
    return _selected(rel, source) and not _beside_label(root, rel, source)


def _selected(rel: str, source: Source) -> bool:
    """Not hidden, suffix in ``extensions`` (or, for a double one such as ``.nii.gz``, the name
    ends with it), matches ``include`` (if any) and no ``exclude``."""
    if any(part.startswith(".") for part in rel.split("/")):
        return False
    if PurePosixPath(rel).suffix.lower() not in {e.lower() for e in source.extensions}:
        multi = tuple(e for e in source.extensions if e.count(".") > 1)
        if not multi or volume_extension(rel, multi) is None:
            return False
    return path_selected(rel, source.include, source.exclude)


def _beside_label(root: Path, rel: str, source: Source) -> bool:
    """Whether ``rel`` is the mask (or class mask) that the label pattern names for another input.

    Only where mask files share the source tree (label folder = source folder, or inside it).
    Decided from this file's name and a look for its image(s) on disk, so listing stays lazy:
    ``x.png`` beside ``x.jpg`` with pattern ``{rel_stem}.png`` is a mask, ``README.png`` alone is not.
    """
    prefix = _label_prefix(root, source)
    if prefix is None or not rel.startswith(prefix):
        return False
    label_rel = rel[len(prefix) :]
    if isinstance(source.labels, MaskFolderLabels):
        folder = str(PurePosixPath(label_rel).parent)
        return folder != "." and _is_mask_folder(str(root), prefix, folder, type(source), source.model_dump_json())
    names = [label_rel]
    if getattr(source.labels, "parts", False):  # x_mask_1.png: a numbered part of x_mask.png
        names.append(MASK_PART.sub(r"\g<ext>", label_rel))
    for pattern, name in ((p, n) for p in _label_patterns(source.labels) for n in names):
        match = pattern_regex(pattern).fullmatch(name)
        if match is None:
            continue
        fields = match.groupdict()
        rel_stem = fields.get("rel_stem") or "/".join(v for v in (fields.get("rel_dir"), fields.get("stem")) if v)
        rel_stem = replaced(rel_stem, source.labels.replace, reverse=True)  # the input's name
        for ext in {e.lower() for e in source.extensions} - {""}:
            for image in {rel_stem + ext, rel_stem + ext.upper()}:
                if image != rel and _selected(image, source) and (root / image).is_file():
                    return True
    return False


@lru_cache(maxsize=4096)
def _is_mask_folder(root: str, prefix: str, folder: str, kind: type[ImageSource | DicomSource], spec: str) -> bool:
    """Whether ``folder`` (relative to the label root, at ``prefix`` in the source tree) is the mask
    folder of an input: the pattern names it from an input that exists (``{rel_stem}``: the file
    ``<folder>.<ext>``; ``{parent_dir}``: a file one folder below the parent it names); for a
    pattern with neither, every folder it can name is taken for a mask folder. The source comes as
    its type and JSON (``spec``), which a cache can key on (a spec holding a dict has no hash)."""
    source = kind.model_validate_json(spec)
    labels = source.labels
    match = pattern_regex(labels.pattern).fullmatch(folder)
    if match is None:
        return False
    fields, base = match.groupdict(), Path(root) / prefix
    if fields.get("rel_stem"):
        return any((base / (fields["rel_stem"] + ext)).is_file() for ext in source.extensions if ext)
    if "parent_dir" in fields:
        parent = base / (fields["parent_dir"] or "")
        for sub in (d for d in parent.iterdir() if d.is_dir() and d != base / folder):
            for image in sub.iterdir():
                rel = (image.relative_to(base)).as_posix()
                if _selected(rel, source) and mask_png_path(base, labels.pattern, rel) == base / folder:
                    return True
        return False
    return True


def _label_prefix(root: Path, source: Source) -> str | None:
    """``""`` or ``"dir/"`` when mask labels live in (a folder of) the source tree, else None."""
    labels = source.labels
    if not isinstance(labels, MaskPngLabels | InstancePngLabels | MaskFolderLabels):
        return None
    return _folder_prefix(str(root), str(labels.path))


@lru_cache(maxsize=64)
def _folder_prefix(root: str, folder: str) -> str | None:
    try:
        inside = Path(folder).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return None
    return "" if inside == "." else inside + "/"


def _label_patterns(labels: MaskPngLabels | InstancePngLabels) -> list[str]:
    classes = getattr(labels, "classes_pattern", None)
    return [labels.pattern] + ([classes] if classes else []) + list(getattr(labels, "class_files", None) or ())


def label_reader(spec: Any) -> LabelResolver | DicomSliceLabels:
    """What finds the labels of an image or DICOM source's records: label volumes cut along DICOM
    slices (:class:`DicomSliceLabels`), else :func:`segops.data.labels.build_resolver`."""
    return DicomSliceLabels(spec) if isinstance(spec, VolumeLabels) else build_resolver(spec)


def decode_file(
    path: str, rel_path: str, source: Source, labels: LabelResolver | DicomSliceLabels | None = None
) -> list[dict[str, Any]]:
    """Decode one file (and its label) into rows; failures become one quarantine/skip row. A record
    whose label cannot be read or does not fit (a mask of another size) stays an ``ok`` row, unlabelled,
    with stage ``label`` and the error: the image is still segmented, and the quarantine table lists it.

    Args:
        labels: built by :func:`label_reader` from ``source.labels``;
            built here when omitted (fine for one file, wasteful for many). Not used for
            volumes: a case's label volume is read with the case (:func:`_decode_volume_case`).
    """
    if isinstance(source, VolumeSource):
        return _decode_volume_case(path, rel_path, source)
    if labels is None and source.labels is not None:
        labels = label_reader(source.labels)
    try:
        with warnings.catch_warnings():  # pydicom warns on every malformed element; the row says why
            warnings.simplefilter("ignore")
            records = (
                read_dicom(path, rel_path, source.skip, source.modalities)
                if isinstance(source, DicomSource)
                else read_image(path, rel_path, source.group_by)
            )
    except SkippedError as exc:  # no pixels ("read"), or an image the source's skip / modalities leaves out
        return [problem_row(path, rel_path, STATUS_SKIPPED, "select" if isinstance(exc, LeftOutError) else "read", exc)]
    except Exception as exc:  # any decoder failure is quarantined, never raised
        log.debug("quarantined %s: %s", path, exc)
        return [problem_row(path, rel_path, STATUS_QUARANTINED, "read", exc)]
    rows = []
    for record in records:
        try:
            found = labels.label_for(record) if labels is not None else None
        except LabelError as exc:  # the image is fine: kept unlabelled (segmented, never trained on), and says why
            # the label it matched (and could not use) is kept: it is in the quarantine, not "matched no image"
            rows.append(record.to_row() | failure_fields(STATUS_OK, "label", exc) | {"label_uri": exc.label_uri or ""})
            continue
        if found is not None:  # no label: the record is unlabelled, counted, not an error
            record.label, record.label_uri = found
        rows.append(record.to_row())
    return rows


def _decode_volume_case(path: str, rel_path: str, source: VolumeSource) -> list[dict[str, Any]]:
    """A volume case (``path``: its first channel file) → one row per slice, its label read once
    and sliced; an unreadable case is one quarantine row, a label problem one per slice."""
    try:
        case = read_volume_case(path, rel_path, source)
    except Exception as exc:  # any decoder failure is quarantined, never raised
        log.debug("quarantined %s: %s", path, exc)
        return [problem_row(path, rel_path, STATUS_QUARANTINED, "read", exc)]
    try:
        found = volume_label(source.labels, case) if source.labels is not None else None
    except LabelError as exc:
        return [problem_row(path, rel_path, STATUS_QUARANTINED, "label", exc, r.case_id) for r in case.records]
    for k, record in enumerate(case.records):
        if found is not None:
            record.label, record.label_uri = found[0][k], found[1]
    return [record.to_row() for record in case.records]
