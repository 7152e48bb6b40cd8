"""Volume files (NIfTI, NRRD, MHA/MHD) → the 2D slice records a DICOM series makes, and their labels.

Pure (no Ray): NIfTI is read with nibabel, NRRD and MetaImage with MONAI's ITK reader.

Geometry, one convention for every format: a file holds an array ``A[i, j, k]`` in the file's
own voxel order (NIfTI: ``i`` varies fastest on disk; ITK formats: ``i`` is ITK's x index) and
an affine ``M`` in DICOM patient coordinates (LPS, mm) with ``p = M @ (i, j, k, 1)``, the centre
of voxel (i, j, k). A NIfTI affine is RAS (``sform`` if set, else ``qform``): ``M = diag(-1, -1,
1, 1) @ affine``; NRRD and MetaImage are LPS already. Slice ``k`` becomes one record whose image
is ``A[:, :, k].T``: rows follow ``j``, columns follow ``i`` (the (column, row, slice) order of
:func:`segops.data.series.volume_affine`, so a NIfTI mask written for the case has the input's
shape and affine). Its DICOM geometry is then

- ``spacing`` (row, column) = (``|M[:3, 1]|``, ``|M[:3, 0]|``) mm;
- ``orientation`` = (``M[:3, 0]``, ``M[:3, 1]``) normalised: the row direction (next column,
  ``i + 1``) then the column direction (next row, ``j + 1``), as ImageOrientationPatient;
- ``position`` = ``M @ (0, 0, k, 1)``: ImagePositionPatient, the centre of pixel (0, 0);
- ``frame`` = ``k``, ``instance_number`` = ``k + 1``.

That is the source's default ``slice_plane: file``. A named plane first permutes the file's axes
(:func:`segops.data.slice_planes.plane_axes`: KiTS' (slices, rows, columns) files put their slice
axis last), and ``A`` and ``M`` above are the permuted array and affine; each record keeps the
permutation (``file_axes``), so a mask volume is written back in the file's order.

Channels: files ``<case>_0000.nii.gz``, ``<case>_0001.nii.gz`` … (nnU-Net's suffixes, four
digits, from ``_0000`` without gaps) are the channels of one case, in suffix order; a 4D file
holds its channels on its last axis. Every channel must share the grid (shape, and affine within
:data:`GRID_TOLERANCE_MM`). The case's name is the file name without its extension and channel
suffix; its group (``group_id``, the volume's id) is that name with the file's folder.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from itertools import product
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from segops.config.sources import VolumeSource
from segops.data.globs import path_selected
from segops.data.records import ImageRecord, path_case_id
from segops.data.series import RAS_TO_LPS
from segops.data.slice_planes import FILE_ORDER, cut_suffix, permute_affine, plane_axes
from segops.errors import DecodeError

log = logging.getLogger(__name__)

#: Largest distance (mm) between the same voxel corner of two channels' grids.
GRID_TOLERANCE_MM = 1e-3
#: Largest |cos| between the row and column directions of a slice (they must be perpendicular).
ORTHOGONALITY_TOLERANCE = 1e-3
#: File format names kept in a record's ``transfer_syntax`` column, by extension.
FORMATS = {
    ".nii": "NIfTI",
    ".nii.gz": "NIfTI",
    ".nrrd": "NRRD",
    ".nhdr": "NRRD",
    ".mha": "MetaImage",
    ".mhd": "MetaImage",
}
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>[0-9]{4})$")
#: nnU-Net channel names read as a modality (``channel_names`` / ``modality`` in ``dataset.json``).
_MR_NAMES = {"MR", "MRI", "T1", "T1W", "T2", "T2W", "FLAIR", "ADC", "DWI", "T1GD", "T1CE", "PD", "NONCT"}


@dataclass(frozen=True)
class Grid:
    """A voxel grid: ``shape`` (I, J, K) and the 4x4 voxel → LPS (mm) affine."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    def describe(self) -> str:
        """Shape, spacing, origin and axis directions, for error messages."""
        axes = self.affine[:3, :3]
        spacing = np.linalg.norm(axes, axis=0)
        directions = [format_values(axes[:, n] / s if s > 0 else axes[:, n]) for n, s in enumerate(spacing)]
        return (
            f"shape {self.shape}, spacing {format_values(spacing)} mm, "
            f"origin {format_values(self.affine[:3, 3])} mm (LPS), "
            f"axis directions {', '.join(directions)}"
        )

    def distance_mm(self, other: Grid) -> float:
        """Largest distance between the positions both grids give the corner voxels of this one."""
        corners = np.array([[i, j, k, 1.0] for i, j, k in product(*[(0, max(n - 1, 0)) for n in self.shape])]).T
        return float(np.max(np.linalg.norm((self.affine @ corners - other.affine @ corners)[:3], axis=0)))


@dataclass
class VolumeCase:
    """One case read from its channel files: its slice records (no labels yet), its grid as the
    file stores it, and the file axes its slices' columns, rows and index follow."""

    records: list[ImageRecord]
    grid: Grid
    name: str  # file name without extension and channel suffix (the ``{case}`` of a label pattern)
    rel_dir: str  # the case's folder relative to the source root ("" at the top)
    axes: tuple[int, int, int] = FILE_ORDER

    def slices(self, volume: np.ndarray) -> list[np.ndarray]:
        """An (I, J, K) array on the case's grid (its label) → its (H, W) slices, as the records cut the image."""
        cut = np.transpose(volume, self.axes)
        return [cut[:, :, k].T.copy(order="C") for k in range(cut.shape[2])]


def format_values(values: np.ndarray | tuple[float, ...]) -> str:
    """``(v1, v2, …)`` with 4 significant digits each, as geometries are described in messages."""
    return "(" + ", ".join(f"{v:.4g}" for v in np.asarray(values, float).ravel()) + ")"


# --------------------------------------------------------------------------- names and listing


def volume_extension(name: str, extensions: tuple[str, ...]) -> str | None:
    """The longest of ``extensions`` that ``name`` ends with (case-insensitive), or None."""
    lower = name.lower()
    found = [e for e in extensions if e and lower.endswith(e.lower())]
    return max(found, key=len) if found else None


def case_of(rel_path: str, extensions: tuple[str, ...], channels: tuple[str, ...] = ()) -> tuple[str, int | None, str]:
    """(case name, channel number or None, extension as written) of a volume file's relative path;
    with ``channels`` (see ``VolumeSource.channels``) the channel is the name after the case's ``_``."""
    name = PurePosixPath(rel_path).name
    ext = volume_extension(name, extensions) or PurePosixPath(name).suffix
    stem = name[: len(name) - len(ext)]
    if channels:
        parts = named_channel(stem, channels)
        return (stem, None, ext) if parts is None else (parts[0], channels.index(parts[2]), ext)
    match = _CHANNEL.fullmatch(stem)
    if match is None:
        return stem, None, name[len(stem) :]
    return match["case"], int(match["channel"]), name[len(stem) :]


def named_channel(stem: str, channels: tuple[str, ...]) -> tuple[str, str, str] | None:
    """(case, separator, channel name) of a file name without extension that ends in one of
    ``channels`` after one or more ``_`` (BraTS' ``BraTS_00001_flair``, HECKTOR's ``CHUM-001__CT``:
    case ``CHUM-001``, separator ``__``), the longest name first; else None."""
    for word in sorted(channels, key=len, reverse=True):
        case = stem[: len(stem) - len(word)].rstrip("_")
        if stem.endswith(word) and case and len(case) < len(stem) - len(word):
            return case, stem[len(case) : len(stem) - len(word)], word
    return None


def _named_channel_files(rel_path: str, source: VolumeSource) -> list[str]:
    """The relative paths of every named channel's file of the case of ``rel_path`` (one of its
    named channel files), in ``source.channels`` order, with its separator."""
    name = PurePosixPath(rel_path).name
    ext = volume_extension(name, source.extensions) or PurePosixPath(name).suffix
    case, sep, _word = named_channel(name[: len(name) - len(ext)], source.channels)  # type: ignore[misc]
    return [str(PurePosixPath(rel_path).with_name(f"{case}{sep}{c}{ext}")) for c in source.channels]


def channel_case_of(
    rel_path: str, extensions: tuple[str, ...], exists: Callable[[str], bool], channels: tuple[str, ...] = ()
) -> tuple[str, int | None, str]:
    """:func:`case_of`, where a four-digit suffix is a channel only when its case has a ``_0000``
    file (``exists``, given a relative path): nnU-Net numbers a case's channels from ``_0000``, so
    AMOS' and WORD's ``amos_0001.nii.gz`` beside ``amos_0004.nii.gz``, with no ``amos_0000``, is
    case ``amos_0001``, not channel 1 of case ``amos``. Named ``channels`` are taken as named."""
    if channels:
        return case_of(rel_path, extensions, channels)
    case, channel, ext = case_of(rel_path, extensions)
    if channel is None or exists(str(PurePosixPath(rel_path).with_name(f"{case}_0000{ext}"))):
        return case, channel, ext
    name = PurePosixPath(rel_path).name
    return name[: len(name) - len(ext)], None, ext


def is_case_entry(root: Path, rel_path: str, source: VolumeSource) -> bool:
    """Whether ``rel_path`` is listed as a case: a file without channel suffix, a ``_0000`` file,
    or a channel file whose ``_0000`` is not an input (decoding then says what is missing). The
    other channel files are read with their case's first one. With named ``source.channels``: the
    file of the first name, or another channel's file where that one is missing."""
    case, channel, ext = case_of(rel_path, source.extensions, source.channels)
    if not channel:
        return True
    if source.channels:
        first = _named_channel_files(rel_path, source)[0]
    else:
        first = str(PurePosixPath(rel_path).with_name(f"{case}_0000{ext}"))
    return not (path_selected(first, source.include, source.exclude) and (root / first).is_file())


def channel_files(root: Path, rel_path: str, source: VolumeSource) -> list[str]:
    """Relative paths of the channels of the case whose first file is ``rel_path``, in order.

    Raises:
        DecodeError: the channel suffixes do not run ``_0000``, ``_0001`` … without a gap.
    """
    case, channel, ext = channel_case_of(
        rel_path, source.extensions, lambda rel: (root / rel).is_file(), source.channels
    )
    if channel is None:
        return [rel_path]
    folder = PurePosixPath(rel_path).parent
    if source.channels:
        named = _named_channel_files(rel_path, source)
        missing = [c for c, rel in zip(source.channels, named) if not (root / rel).is_file()]
        if missing:
            raise DecodeError(
                f"case {case!r} in {root / folder} has no file for channel(s) {missing} of the source's channels "
                f"{list(source.channels)} (<case>_<channel>{ext}); every channel of a case must be there"
            )
        return named
    pattern = re.compile(re.escape(case) + r"_([0-9]{4})" + re.escape(ext))
    found = {}
    for path in (root / folder).iterdir():
        match = pattern.fullmatch(path.name)
        rel = str(folder / path.name) if str(folder) != "." else path.name
        if match and path.is_file() and path_selected(rel, source.include, source.exclude):
            found[int(match[1])] = rel
    expected = list(range(len(found)))
    if sorted(found) != expected:
        missing = sorted(set(range(max(found) + 1)) - set(found))
        raise DecodeError(
            f"case {case!r} in {root / folder} has channel files {[f'_{c:04d}' for c in sorted(found)]}; "
            f"nnU-Net channels run _0000, _0001 … without a gap: {[f'_{c:04d}' for c in missing]} missing"
        )
    return [found[c] for c in expected]


# --------------------------------------------------------------------------- reading one file


#: Most characters of a reader's error kept in a decode error (a row of the quarantine table).
MAX_REASON = 600


def read_volume_file(path: str | Path, what: str = "volume") -> tuple[np.ndarray, Grid, str]:
    """One volume file → (array (I, J, K) or (I, J, K, C) as stored, grid in LPS, format name).

    A 2D file is one slice (K = 1); a 5D NIfTI with a singleton 4th axis (ITK's vector
    layout) is (I, J, K, C).

    Raises:
        DecodeError: unreadable, truncated, not a volume, or a degenerate affine.
    """
    name = Path(path).name.lower()
    fmt = next((f for e, f in sorted(FORMATS.items(), key=lambda x: -len(x[0])) if name.endswith(e)), "")
    try:
        if fmt == "NIfTI":
            array, affine = _read_nifti(path)
        else:
            array, affine = _read_itk_or_nrrd(path, fmt)
    except DecodeError:
        raise
    except Exception as exc:  # every reader failure is a decode problem of this file
        reason = " ".join(str(exc).split())  # ITK's run to 150 lines, the reason after a source location
        reason = reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 1] + "…"
        raise DecodeError(f"cannot read {what} {path}: {type(exc).__name__}: {reason}", fmt) from exc
    if array.ndim == 5 and array.shape[3] == 1:
        array = array[:, :, :, 0, :]
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim not in (3, 4) or 0 in array.shape:
        raise DecodeError(f"{what} {path} has shape {array.shape}; expected (I, J, K) or (I, J, K, channels)", fmt)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DecodeError(f"{what} {path} has a degenerate affine {affine.tolist()}", fmt)
    return array, Grid(tuple(int(n) for n in array.shape[:3]), affine), fmt


def _read_nifti(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """NIfTI through nibabel: data with its scaling applied, RAS affine → LPS."""
    import nibabel as nib

    image = nib.load(str(path))
    return np.asanyarray(image.dataobj), RAS_TO_LPS @ np.asarray(image.affine, float)


def _read_itk_or_nrrd(path: str | Path, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_read_itk`, and for a NRRD it cannot read (3D Slicer's segmentations of several layers:
    ITK's Python wrapping has no 8-bit vector images) :func:`segops.data.nrrd.read_nrrd`."""
    try:
        return _read_itk(path)
    except Exception as exc:
        if fmt != "NRRD":
            raise
        from segops.data.nrrd import read_nrrd

        try:
            return read_nrrd(path)
        except DecodeError:
            raise exc from None  # neither reads it: ITK's reason is the one to give


def _read_itk(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """NRRD / MetaImage through MONAI's ITK reader: (x, y, z[, c]) array and LPS affine."""
    from monai.data import ITKReader

    reader = ITKReader(affine_lps_to_ras=False)
    array, meta = reader.get_data(reader.read(str(path)))
    return np.asarray(array), np.asarray(meta["affine"], float)


# --------------------------------------------------------------------------- one case → records


def read_volume_case(path: str | Path, rel_path: str, source: VolumeSource) -> VolumeCase:
    """Read a case (its channel files, found beside ``rel_path``) into one record per slice.

    Records have ``image`` (C, H, W) float32 = channels of ``A[:, :, k].T``, ``group_id`` the case,
    ``case_id`` ``<hash of rel_path>.<k>``, ``rel_path``/``source_uri`` of the first channel file,
    and the DICOM geometry of the module docstring. No label.

    Raises:
        DecodeError: a channel file is unreadable, channels do not share a grid, or the grid's
            in-plane axes are not perpendicular (no DICOM slice geometry describes it).
    """
    root = Path(path).parents[len(PurePosixPath(rel_path).parts) - 1]
    rel_paths = channel_files(root, rel_path, source)
    first, grid, fmt = read_volume_file(root / rel_paths[0])
    arrays = [first]
    for rel in rel_paths[1:]:
        array, other, _fmt = read_volume_file(root / rel)
        if other.shape != grid.shape or grid.distance_mm(other) > GRID_TOLERANCE_MM:
            raise DecodeError(
                f"channel {root / rel} is on another grid than {root / rel_paths[0]}: {other.describe()} vs "
                f"{grid.describe()}; every channel of a case must share shape and affine",
                fmt,
            )
        arrays.append(array)
    channels = [np.asarray(a[..., c] if a.ndim == 4 else a, np.float32) for a in arrays for c in range(_n(a))]
    image = np.stack(channels)  # (C, I, J, K)
    axes = plane_axes(grid.affine, source.slice_plane, grid.shape)
    image = np.transpose(image, (0, *(a + 1 for a in axes)))
    cut = Grid((grid.shape[axes[0]], grid.shape[axes[1]], grid.shape[axes[2]]), permute_affine(grid.affine, axes))
    case, _channel, _ext = channel_case_of(
        rel_path, source.extensions, lambda rel: (root / rel).is_file(), source.channels
    )
    rel_dir = str(PurePosixPath(rel_path).parent)
    rel_dir = "" if rel_dir == "." else rel_dir
    records = slice_records(
        image,
        cut,
        group_id=f"{rel_dir}/{case}" if rel_dir else case,
        source_uri=str(Path(path).resolve()),
        rel_path=rel_path,
        modality=dataset_modality(str(root)),
        file_format=fmt,
        file_axes=axes,
    )
    return VolumeCase(records, grid, case, rel_dir, axes)


def _n(array: np.ndarray) -> int:
    """Channels of a file's array: its last axis for (I, J, K, C), else 1."""
    return array.shape[-1] if array.ndim == 4 else 1


def slice_records(
    image: np.ndarray,
    grid: Grid,
    group_id: str,
    source_uri: str,
    rel_path: str,
    modality: str,
    file_format: str,
    file_axes: tuple[int, int, int] = FILE_ORDER,
) -> list[ImageRecord]:
    """(C, I, J, K) image on ``grid`` → one :class:`ImageRecord` per slice ``k`` (see the module
    docstring); ``file_axes``: the file axes I, J and K are (the image cut along another plane)."""
    m = grid.affine
    col_step, row_step = np.linalg.norm(m[:3, 0]), np.linalg.norm(m[:3, 1])
    row_dir, col_dir = m[:3, 0] / col_step, m[:3, 1] / row_step
    if abs(float(row_dir @ col_dir)) > ORTHOGONALITY_TOLERANCE:
        raise DecodeError(
            f"{source_uri}: the first two voxel axes are not perpendicular ({grid.describe()}); a sheared grid has "
            "no DICOM slice geometry: resample the volume first",
            file_format,
        )
    orientation = tuple(float(v) for v in (*row_dir, *col_dir))
    base_id = path_case_id(rel_path)
    n_slices = image.shape[-1]
    return [
        ImageRecord(
            # a copy per slice: a view of the volume, even one numpy calls contiguous (one channel of a
            # Fortran-ordered NIfTI array), makes Ray's tensor column fail to concatenate the slices
            image=np.transpose(image[..., k], (0, 2, 1)).copy(order="C"),
            case_id=f"{base_id}.{k}{cut_suffix(file_axes)}",
            group_id=group_id,
            source_uri=source_uri,
            rel_path=rel_path,
            modality=modality,
            frame=k,
            spacing=(float(row_step), float(col_step)),
            spacing_known=True,
            transfer_syntax=file_format,
            photometric="MONOCHROME2",
            position=tuple(float(v) for v in m[:3, 2] * k + m[:3, 3]),
            orientation=orientation,
            instance_number=k + 1,
            n_frames=n_slices,
            file_axes=file_axes,
        )
        for k in range(n_slices)
    ]


@lru_cache(maxsize=16)
def dataset_modality(root: str) -> str:
    """``CT``, ``MR`` or ``""``: the first channel's name in an nnU-Net/MSD ``dataset.json`` in the
    source folder or its parent (``channel_names``, or MSD's ``modality``)."""
    for folder in (Path(root), Path(root).parent):
        doc = read_dataset_json(folder / "dataset.json")
        names = doc.get("channel_names") or doc.get("modality") or {}
        if isinstance(names, dict) and names:
            first = str(names.get("0", next(iter(names.values())))).strip().upper()
            return "CT" if first == "CT" else "MR" if first in _MR_NAMES else ""
    return ""


def read_dataset_json(path: Path) -> dict[str, Any]:
    """An nnU-Net/MSD ``dataset.json`` as a dict; ``{}`` when absent or not a JSON object."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def file_grid(path: str | Path) -> tuple[tuple[int, int, int], int, np.ndarray, str]:
    """(I, J, K) shape, components per voxel (a 4D file's last axis), LPS affine and format of a
    volume file, from its header where the format allows (NIfTI), else read whole.

    Raises:
        DecodeError: the file (or its NIfTI header) cannot be read.
    """
    if str(path).lower().endswith((".nii", ".nii.gz")):
        import nibabel as nib

        try:
            image = nib.load(str(path))
            shape, affine = tuple(int(n) for n in image.shape), RAS_TO_LPS @ np.asarray(image.affine, float)
        except Exception as exc:  # an unreadable header is a decode problem of this file
            raise DecodeError(f"cannot read volume {path}: {type(exc).__name__}: {exc}", "NIfTI") from exc
        fmt = "NIfTI"
    else:
        array, grid, fmt = read_volume_file(path)
        shape, affine = array.shape, grid.affine
    spatial = (*shape, 1, 1)[:3]
    return (spatial[0], spatial[1], spatial[2]), int(np.prod(shape[3:])) if len(shape) > 3 else 1, affine, fmt


def volume_header(path: str | Path, rel_path: str, source: VolumeSource) -> dict[str, Any]:
    """The census columns of a case without decoding its voxels where the format allows (NIfTI):
    modality, format, channels (over its channel files), height, width and frames of its slices
    (J, I, K in the file's order; permuted as ``source.slice_plane`` cuts it).

    Raises:
        DecodeError: a channel gap, or an unreadable first channel file.
    """
    root = Path(path).parents[len(PurePosixPath(rel_path).parts) - 1]
    rel_paths = channel_files(root, rel_path, source)
    shape, components, affine, fmt = file_grid(path)
    column, row, index = plane_axes(affine, source.slice_plane, shape)
    return {
        "modality": dataset_modality(str(root)),
        "transfer_syntax": fmt,
        "photometric": "MONOCHROME2",
        "channels": components * len(rel_paths),
        "height": int(shape[row]),
        "width": int(shape[column]),
        "frames": int(shape[index]),
    }
