"""Label volumes of volume-file cases: where a pattern puts a case's label, reading it onto the
case's grid (checked, or resampled by nearest neighbour), the label files a folder holds, and which
files beside the images are labels, not inputs (see :class:`~segops.config.sources.VolumeLabels`);
and the same label volumes cut along the slices of DICOM series (:class:`DicomSliceLabels`)."""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from pathlib import Path, PurePosixPath

import numpy as np

from segops.config.sources import VolumeLabels, VolumeSource
from segops.data.labels import pattern_files, pattern_regex
from segops.data.records import ImageRecord
from segops.data.volumes import (
    FORMATS,
    Grid,
    VolumeCase,
    channel_case_of,
    format_values,
    read_volume_file,
    volume_extension,
)
from segops.errors import DecodeError, LabelError

log = logging.getLogger(__name__)

_TRAILING_DIGITS = re.compile(r"[0-9]+$")


def label_path(spec: VolumeLabels, case: VolumeCase) -> Path:
    """Where ``spec.pattern`` puts the label of ``case``."""
    return label_path_of(spec.path, spec.pattern, case.name, case.rel_dir)


def label_path_of(root: str | Path, pattern: str, case: str, rel_dir: str, structure: str = "") -> Path:
    """Where ``pattern`` (fields ``case``, ``rel_dir``, ``case_number``: the case name's trailing
    digits, "" when it has none; ``structure`` for per-structure files) puts the label of case
    ``case`` in folder ``rel_dir``."""
    number = _TRAILING_DIGITS.search(case)
    name = pattern.format(case=case, rel_dir=rel_dir, case_number=number[0] if number else "", structure=structure)
    return Path(root) / name.lstrip("/")


def volume_label(spec: VolumeLabels, case: VolumeCase) -> tuple[list[np.ndarray], str] | None:
    """The label of a case, read once and cut into its slices: ((H, W) uint8 per slice, uri), or
    None when the pattern names no file (the case is unlabelled).

    Raises:
        LabelError: unreadable; not integer class values in 0..255; or on another grid than the
            image (beyond ``spec.tolerance_mm``) without ``resample: true``. The message names
            both geometries.
    """
    if spec.structures is not None:
        return _structure_label(spec, case)
    path = label_path(spec, case)
    if not path.is_file():
        return None
    classes = _on_case_grid(spec, case, path, _class_values)
    return case.slices(classes), str(path.resolve())


def _structure_label(spec: VolumeLabels, case: VolumeCase) -> tuple[list[np.ndarray], str] | None:
    """The class map of a case's per-structure files (``spec.structures``, first listed wins);
    None when none of them exists. Its uri is the folder that holds them."""
    assert spec.structures is not None
    paths = {name: label_path_of(spec.path, spec.pattern, case.name, case.rel_dir, name) for name in spec.structures}
    found = {name: p for name, p in paths.items() if p.is_file()}
    if not found:
        return None
    classes = np.zeros(case.grid.shape, np.uint8)
    for name, path in reversed(found.items()):  # the first listed is painted last: it wins
        classes[_on_case_grid(spec, case, path, _structure_values) > 0] = spec.structures[name]
    folder = next(iter(found.values())).parent
    return case.slices(classes), str(folder.resolve())


def _on_case_grid(spec: VolumeLabels, case: VolumeCase, path: Path, values) -> np.ndarray:
    """The label file ``path`` as uint8 ``values`` (:func:`_class_values`, :func:`_structure_values`)
    on the case's grid: checked, or resampled with ``resample: true``."""
    array, grid = _read_label_map(path)
    classes = values(array, path)
    if grid.shape != case.grid.shape or case.grid.distance_mm(grid) > spec.tolerance_mm:
        offset = block_offset(grid, case.grid, spec.tolerance_mm)
        if offset is not None:  # 3D Slicer's .seg.nrrd: the image's voxels, cropped to the segments' extent
            return embed_block(classes, offset, case.grid.shape, path)
        if not spec.resample:
            raise LabelError(
                f"label {path} is not on its image's grid (tolerance {spec.tolerance_mm} mm): label {grid.describe()}; "
                f"image {case.records[0].source_uri}: {case.grid.describe()}. Fix the label, or set "
                "labels.resample: true to resample it onto the image grid (nearest neighbour)"
            )
        log.info("resampling label %s (%s) onto its image's grid (%s)", path, grid.describe(), case.grid.describe())
        classes = resample_nearest(classes, grid, case.grid)
    return classes


def _class_values(array: np.ndarray, path: Path) -> np.ndarray:
    """A label array → uint8 class map; every value an integer in 0..255."""
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise LabelError(f"label {path} has non-integer values; expected class indices 0..255")
    elif array.dtype.kind not in "biu":
        raise LabelError(f"label {path} has {array.dtype} values; expected integer class indices")
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if low < 0 or high > 255:
        raise LabelError(f"label {path} has class values {low:g}..{high:g}; expected class indices 0..255")
    return array.astype(np.uint8)


def _structure_values(array: np.ndarray, path: Path) -> np.ndarray:
    """A structure file → uint8 0/1 (any non-zero voxel is the structure; NaN is not)."""
    if array.dtype.kind not in "biuf":
        raise LabelError(f"structure file {path} has {array.dtype} values; expected a binary mask")
    return (np.nan_to_num(array) != 0).astype(np.uint8)


def block_offset(block: Grid, grid: Grid, tolerance_mm: float) -> tuple[int, int, int] | None:
    """The voxel of ``grid`` where ``block``'s first voxel lies, when ``block`` is a block of
    ``grid``'s own voxels (same axes and spacing; origin a whole number of voxels away, within
    ``tolerance_mm``), as 3D Slicer writes a segmentation cropped to its segments; else None."""
    if not np.allclose(block.affine[:3, :3], grid.affine[:3, :3], atol=tolerance_mm / max(max(block.shape), 1)):
        return None
    at = np.linalg.solve(grid.affine[:3, :3], block.affine[:3, 3] - grid.affine[:3, 3])
    offset = np.rint(at)
    if np.linalg.norm(grid.affine[:3, :3] @ (at - offset)) > tolerance_mm:
        return None
    return int(offset[0]), int(offset[1]), int(offset[2])


def embed_block(block: np.ndarray, offset: tuple[int, int, int], shape: tuple[int, int, int], path: Path) -> np.ndarray:
    """``block`` placed at voxel ``offset`` of an all-background array of ``shape``; what lies outside
    is cut off (a label voxel so lost is logged: its image holds no such voxel)."""
    out = np.zeros(shape, block.dtype)
    lo = [max(o, 0) for o in offset]
    hi = [min(o + n, m) for o, n, m in zip(offset, block.shape, shape)]
    if all(h > low for low, h in zip(lo, hi)):
        inner = tuple(slice(low - o, h - o) for low, h, o in zip(lo, hi, offset))
        out[tuple(slice(low, h) for low, h in zip(lo, hi))] = block[inner]
    lost = int(np.count_nonzero(block)) - int(np.count_nonzero(out))
    if lost:
        log.warning("label %s: %d labelled voxel(s) lie outside its image's grid and are left out", path, lost)
    return out


def resample_nearest(label: np.ndarray, source: Grid, target: Grid) -> np.ndarray:
    """``label`` on ``source`` → ``target``'s shape by nearest neighbour in patient coordinates
    (voxels outside the source grid are 0). One target slice at a time, so memory stays at a
    slice's coordinates."""
    to_source = np.linalg.inv(source.affine) @ target.affine  # target voxel → source voxel
    n_i, n_j, n_k = target.shape
    i, j = np.meshgrid(np.arange(n_i), np.arange(n_j), indexing="ij")
    plane = to_source[:3, :2] @ np.stack([i.ravel(), j.ravel()]) + to_source[:3, 3:]
    bounds = np.asarray(label.shape[:3])[:, None]
    out = np.zeros(target.shape, np.uint8)
    for k in range(n_k):
        index = np.rint(plane + to_source[:3, 2:3] * k).astype(np.int64)
        inside = np.all((index >= 0) & (index < bounds), axis=0)
        values = np.zeros(n_i * n_j, np.uint8)
        values[inside] = label[index[0, inside], index[1, inside], index[2, inside]]
        out[:, :, k] = values.reshape(n_i, n_j)
    return out


def volume_label_files(spec: VolumeLabels) -> set[str]:
    """Every file under the label folder that could be a label (any volume extension, a name the
    pattern can give), resolved."""
    exts = tuple(FORMATS)
    files = {f for f in pattern_files(spec.path, spec.pattern) if volume_extension(Path(f).name, exts)}
    if spec.structures is not None:  # a case's label is the folder of its structure files
        names = set(spec.structures)
        return {str(Path(f).parent) for f in files if _structure_of(spec.pattern, Path(f).name) in names}
    return files


def _structure_of(pattern: str, file_name: str) -> str | None:
    """The ``{structure}`` a file name gives under ``pattern``'s file-name part, or None."""
    match = pattern_regex(PurePosixPath(pattern).name).fullmatch(file_name)
    return match["structure"] if match else None


def names_a_label(root: Path, rel_path: str, source: VolumeSource) -> bool:
    """Whether ``rel_path`` is the label that the pattern names for another volume of its folder;
    for sources whose labels are kept in the source folder itself (KiTS' ``segmentation.nii.gz``
    beside ``imaging.nii.gz``; LiTS' ``segmentation-0.nii`` beside ``volume-0.nii``): then it is no
    input."""
    folder = PurePosixPath(rel_path).parent.as_posix()
    pattern = source.labels.pattern
    if source.labels.structures is not None:
        return pattern_regex(pattern.lstrip("/")).fullmatch(rel_path) is not None
    rel_dir = "" if folder == "." else folder
    return rel_path in _labels_named_in(str(root), rel_dir, pattern, source.extensions, source.channels)


@lru_cache(maxsize=256)
def _labels_named_in(
    root: str, rel_dir: str, pattern: str, extensions: tuple[str, ...], channels: tuple[str, ...] = ()
) -> frozenset[str]:
    """Relative paths of the labels ``pattern`` names for the volume files of one folder (not themselves)."""
    named = set()
    volumes = [p for p in (Path(root) / rel_dir).iterdir() if p.is_file() and volume_extension(p.name, extensions)]
    names = {p.name for p in volumes}
    for path in volumes:  # each case named as reading names it (AMOS' amos_0001 is a case, not a channel)
        case = channel_case_of(path.name, extensions, names.__contains__, channels)[0]
        label = label_path_of(root, pattern, case, rel_dir)
        if label != path and label.is_relative_to(root):
            named.add(label.relative_to(root).as_posix())
    return frozenset(named)


# --------------------------------------------------------------------------- DICOM series


def dicom_case(rel_path: str) -> tuple[str, str]:
    """(case, rel_dir) of a DICOM file for a label ``pattern``: the first folder of its path (the
    patient or case folder as the archive stores it; the file's name without suffix when it has no
    folder) and the folder that holds it."""
    parts = PurePosixPath(rel_path).parts
    rel_dir = PurePosixPath(rel_path).parent.as_posix()
    return (parts[0] if len(parts) > 1 else PurePosixPath(rel_path).stem), ("" if rel_dir == "." else rel_dir)


@lru_cache(maxsize=2)
def _label_volume(path: str, mtime: float) -> tuple[np.ndarray, Grid]:
    """A label file as a uint8 class map on its own grid (the last two read kept: a series' slices
    come one after another)."""
    array, grid = _read_label_map(Path(path))
    return _class_values(array, Path(path)), grid


def _read_label_map(path: Path) -> tuple[np.ndarray, Grid]:
    """A label file's (I, J, K) array as stored, and its grid; a 3D Slicer segmentation of several
    layers (segments that overlap) as one map of its segments numbered in order (:func:`slicer_segments`).

    Raises:
        LabelError: unreadable, or not one map (a 4D file of several layers that names no segments).
    """
    try:
        array, grid, _fmt_name = read_volume_file(path, "label")
    except DecodeError as exc:
        raise LabelError(str(exc)) from exc
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    segments = slicer_segments(path) if array.ndim == 4 else []
    if segments:
        merged = np.zeros(array.shape[:3], np.uint8)
        for number, (_name, layer, value) in reversed(list(enumerate(segments, start=1))):  # the first one wins
            if layer < array.shape[-1]:
                merged[array[..., layer] == value] = number
        array = merged
    if array.ndim != 3:
        raise LabelError(f"label {path} has shape {array.shape}; expected one class map (I, J, K)")
    return array, grid


def slicer_segments(path: Path, limit: int = 1 << 16) -> list[tuple[str, int, int]]:
    """(name, layer, label value) of each segment a 3D Slicer ``.seg.nrrd`` declares in its header
    (``Segment<i>_Name:=liver``, ``_Layer``, ``_LabelValue``; layer 0 and value i + 1 when not given),
    in segment order; [] for any other file."""
    if not path.name.lower().endswith(".seg.nrrd"):
        return []
    try:
        with path.open("rb") as f:
            head = f.read(limit).split(b"\n\n", 1)[0].decode("latin-1")
    except OSError:
        return []
    fields = {k.strip(): v.strip() for k, v in (line.split(":=", 1) for line in head.splitlines() if ":=" in line)}
    numbers = sorted({int(m[1]) for k in fields if (m := re.fullmatch(r"Segment([0-9]+)_(Name|ID)", k))})
    segments = []
    for i in numbers:
        layer, value = fields.get(f"Segment{i}_Layer", "0"), fields.get(f"Segment{i}_LabelValue", str(i + 1))
        if layer.isdigit() and value.isdigit():
            segments.append((fields.get(f"Segment{i}_Name", f"segment-{i}"), int(layer), int(value)))
    return segments


def slicer_segment_names(path: Path) -> dict[int, str]:
    """Class → name of a 3D Slicer segmentation's segments: their label values in a file of one
    layer, their order (as :func:`_read_label_map` numbers them) in a file of several; {} for any
    other file."""
    segments = slicer_segments(path)
    if len({layer for _, layer, _ in segments}) > 1:
        return {number: name for number, (name, _, _) in enumerate(segments, start=1)}
    return {value: name for name, _, value in segments if 0 < value < 256}


class DicomSliceLabels:
    """The labels of DICOM slices from label volumes (NIfTI, NRRD …; one per case, as ITK-SNAP and
    3D Slicer save a segmentation of a DICOM series), found by ``spec.pattern`` with ``case`` the
    file's first folder (:func:`dicom_case`). Each slice's label is the label volume read at the
    slice's pixel centres (ImagePositionPatient, ImageOrientationPatient, PixelSpacing): exact
    where the volume shares the series' voxel grid (within ``spec.tolerance_mm``), nearest
    neighbour with ``resample: true``, else a label error naming both geometries. Pixels outside
    the volume (a label cropped to its segments) are background. Same interface as
    :class:`segops.data.labels.LabelResolver`; picklable."""

    def __init__(self, spec: VolumeLabels) -> None:
        self.spec = spec  # without structures: DicomSource refuses them

    def label_for(self, record: ImageRecord) -> tuple[np.ndarray, str] | None:
        case, rel_dir = dicom_case(record.rel_path)
        path = label_path_of(self.spec.path, self.spec.pattern, case, rel_dir)
        if not path.is_file():
            return None
        classes, grid = _label_volume(str(path), path.stat().st_mtime)
        return slice_of_volume(classes, grid, record, self.spec, path), str(path.resolve())

    def all_label_keys(self) -> set[str]:
        return volume_label_files(self.spec)


def slice_of_volume(classes: np.ndarray, grid: Grid, record: ImageRecord, spec: VolumeLabels, path: Path) -> np.ndarray:
    """The (H, W) uint8 label of a DICOM slice read from a label volume on ``grid`` (see
    :class:`DicomSliceLabels`).

    Raises:
        LabelError: the slice has no position or orientation, or its pixels are not the volume's
            voxel centres (beyond ``spec.tolerance_mm``) without ``resample: true``.
    """
    if len(record.position) != 3 or len(record.orientation) != 6 or not record.spacing_known:
        raise LabelError(
            f"DICOM slice {record.source_uri} has no ImagePositionPatient, ImageOrientationPatient or PixelSpacing: "
            f"label volume {path} cannot be placed on it"
        )
    h, w = record.image.shape[-2:]
    to_voxel = np.linalg.inv(grid.affine)
    origin = (to_voxel @ [*record.position, 1.0])[:3]
    row_step = to_voxel[:3, :3] @ (np.asarray(record.orientation[3:]) * record.spacing[0])  # one row down
    col_step = to_voxel[:3, :3] @ (np.asarray(record.orientation[:3]) * record.spacing[1])  # one column right
    corners = [origin + r * row_step + c * col_step for r in (0, h - 1) for c in (0, w - 1)]
    off_grid = max(float(np.linalg.norm(grid.affine[:3, :3] @ (v - np.rint(v)))) for v in corners)
    if off_grid > spec.tolerance_mm and not spec.resample:
        raise LabelError(
            f"label {path} does not share the voxel grid of DICOM slice {record.source_uri} (its pixels lie up to "
            f"{off_grid:.3g} mm from the label's voxel centres; tolerance {spec.tolerance_mm} mm): label "
            f"{grid.describe()}; slice at {format_values(record.position)} mm (LPS), "
            f"spacing {format_values(record.spacing)} mm. Fix the label, or set labels.resample: true to resample it "
            "(nearest neighbour)"
        )
    r, c = np.mgrid[:h, :w]
    index = np.rint(origin[:, None, None] + row_step[:, None, None] * r + col_step[:, None, None] * c).astype(np.int64)
    inside = np.all((index >= 0) & (index < np.asarray(classes.shape)[:, None, None]), axis=0)
    out = np.zeros((h, w), np.uint8)
    out[inside] = classes[index[0][inside], index[1][inside], index[2][inside]]
    return out
