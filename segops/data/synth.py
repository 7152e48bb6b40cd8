"""Deterministic synthetic archives for tests and demos.

- :func:`make_ct_archive`: CT-like DICOM series (16-bit signed, rescale slope/intercept,
  real geometry and UIDs) with bright ellipsoid "lesions", plus one label PNG per slice.
- :func:`make_inspection_archive`: textured gray/RGB surface photos with thin scratches and
  blob defects, plus binary mask PNGs.

Same arguments and seed → byte-identical files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid
from scipy import ndimage

log = logging.getLogger(__name__)

_SLICE_THICKNESS_MM = 2.5


@dataclass(frozen=True)
class ArchiveSummary:
    """What a generator wrote: image and label roots and the file counts."""

    images: Path
    labels: Path
    n_images: int
    n_foreground: int


# --------------------------------------------------------------------------- CT / DICOM


def make_ct_archive(
    out: str | Path, series: int = 6, slices: int = 20, seed: int = 0, size: int | None = None
) -> ArchiveSummary:
    """Write ``series`` CT series of ``slices`` slices under ``out/images`` and masks under ``out/labels``.

    Layout: ``images/series-NNN/slice-NNNN.dcm`` and ``labels/series-NNN/slice-NNNN.png``
    (0 = background, 255 = lesion). Image sizes (80/96/112 px unless ``size`` is given), body
    shape, lesion count/size/contrast and the stored-value encoding (intercept -1024 or 0)
    vary per series.
    """
    out = Path(out)
    images, labels = out / "images", out / "labels"
    n_fg = 0
    for s in range(series):
        rng = np.random.default_rng([seed, s])
        volume_hu, lesion = _ct_volume(rng, slices, size)
        n_fg += _write_series(images / f"series-{s:03d}", labels / f"series-{s:03d}", volume_hu, lesion, seed, s, rng)
    log.info("wrote %d CT series (%d slices) to %s", series, series * slices, out)
    return ArchiveSummary(images, labels, series * slices, n_fg)


def _ct_volume(rng: np.random.Generator, slices: int, size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(Z, H, W) HU volume and its lesion mask."""
    chosen = int(rng.choice([80, 96, 112]))  # drawn even when ``size`` is given: same stream either way
    size = size or chosen
    z, y, x = np.mgrid[0:slices, 0:size, 0:size].astype(np.float32)
    c = size / 2
    ay, ax = rng.uniform(0.30, 0.42) * size, rng.uniform(0.36, 0.46) * size
    body = ((y - c) / ay) ** 2 + ((x - c) / ax) ** 2 <= 1.0
    hu = np.full(z.shape, -1000.0, dtype=np.float32)
    hu[body] = rng.uniform(30, 60)
    # a "spine": a bright ring near the back, a distractor brighter than any lesion
    sy, sx, sr = c + 0.65 * ay, c, 0.08 * size
    ring = np.abs(np.hypot(y - sy, x - sx) - sr) < 0.04 * size + 1
    hu[ring & body] = rng.uniform(600, 900)
    lesion = np.zeros(z.shape, dtype=bool)
    for _ in range(int(rng.integers(1, 4))):
        r = rng.uniform(0.07, 0.14) * size
        rz = rng.uniform(0.25, 0.45) * slices
        cz = rng.uniform(0.25, 0.75) * slices
        cy = c + rng.uniform(-0.5, 0.3) * ay
        cx = c + rng.uniform(-0.55, 0.55) * ax
        ry, rx = r * rng.uniform(0.7, 1.3), r * rng.uniform(0.7, 1.3)
        blob = ((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0
        blob &= body
        hu[blob] = rng.uniform(140, 220)
        lesion |= blob
    hu = ndimage.gaussian_filter(hu, sigma=(0, 0.8, 0.8))
    hu += rng.normal(0, 18, size=hu.shape).astype(np.float32)
    return hu, lesion


def _write_series(
    img_dir: Path, lbl_dir: Path, hu: np.ndarray, lesion: np.ndarray, seed: int, s: int, rng: np.random.Generator
) -> int:
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    uid = lambda *parts: generate_uid(entropy_srcs=["segops-synth", str(seed), str(s), *map(str, parts)])  # noqa: E731
    study_uid, series_uid, frame_uid = uid("study"), uid("series"), uid("frame")
    intercept = float(rng.choice([-1024.0, 0.0]))
    spacing = float(rng.choice([0.7, 0.8, 0.9]))
    n_fg = 0
    for k in range(hu.shape[0]):
        stored = np.clip(np.round(hu[k] - intercept), -32768, 32767).astype(np.int16)
        ds = _ct_dataset(stored, uid("sop", k), study_uid, series_uid, frame_uid, s, k, intercept, spacing, seed)
        ds.save_as(img_dir / f"slice-{k:04d}.dcm", enforce_file_format=True)
        Image.fromarray((lesion[k] * 255).astype(np.uint8)).save(lbl_dir / f"slice-{k:04d}.png")
        n_fg += int(lesion[k].any())
    return n_fg


def _ct_dataset(
    stored: np.ndarray,
    sop_uid: str,
    study_uid: str,
    series_uid: str,
    frame_uid: str,
    s: int,
    k: int,
    intercept: float,
    spacing: float,
    seed: int,
) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
    ds.PatientID, ds.PatientName = f"SYNTH{seed:02d}{s:03d}", f"Synthetic^Patient{s}"
    ds.PatientBirthDate, ds.PatientSex = "", "O"  # type 2: present, may be empty
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
    ds.Modality, ds.Manufacturer = "CT", "segops synth"
    ds.SeriesNumber, ds.InstanceNumber = s + 1, k + 1
    ds.ImagePositionPatient = [0.0, 0.0, round(k * _SLICE_THICKNESS_MM, 3)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.SliceThickness = _SLICE_THICKNESS_MM
    ds.PixelSpacing = [spacing, spacing]
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1.0, intercept, "HU"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.PixelData = stored.tobytes()
    return ds


# --------------------------------------------------------------------------- inspection images


def make_inspection_archive(
    out: str | Path, count: int = 40, seed: int = 0, rgb_fraction: float = 0.5
) -> ArchiveSummary:
    """Write ``count`` surface photos under ``out/images`` and masks under ``out/labels``.

    Each image (96–128 px a side, gray or RGB) shows a smooth machined texture with 0–3
    defects: thin scratches (polylines 1–3 px wide) and blobs (pits/blowholes).
    Masks: 0 = intact surface, 255 = defect. About one image in six has no defect.
    """
    out = Path(out)
    images, labels = out / "images", out / "labels"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    n_fg = 0
    for i in range(count):
        rng = np.random.default_rng([seed, 10_000 + i])
        gray, mask = _surface(rng)
        if rng.random() < rgb_fraction:
            tint = rng.uniform(0.8, 1.1, size=3)
            pixels = np.clip(gray[..., None] * tint, 0, 255).astype(np.uint8)
        else:
            pixels = np.clip(gray, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(images / f"part-{i:04d}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(labels / f"part-{i:04d}.png")
        n_fg += int(mask.any())
    log.info("wrote %d inspection images to %s", count, out)
    return ArchiveSummary(images, labels, count, n_fg)


def _surface(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) float texture in 0..255 and its defect mask."""
    h, w = int(rng.integers(96, 129)), int(rng.integers(96, 129))
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(110, 160) + rng.uniform(-0.2, 0.2) * x + rng.uniform(-0.2, 0.2) * y
    grain = ndimage.gaussian_filter(rng.normal(0, 1, (h, w)), sigma=(rng.uniform(0.5, 1.5), 4.0)) * 25
    img = base + grain + rng.normal(0, 4, (h, w))
    mask = np.zeros((h, w), dtype=bool)
    n_defects = 0 if rng.random() < 1 / 6 else int(rng.integers(1, 4))
    for _ in range(n_defects):
        defect = _scratch(rng, h, w) if rng.random() < 0.5 else _blob(rng, y, x, h, w)
        img[defect] += rng.choice([-1, 1]) * rng.uniform(45, 70)
        mask |= defect
    return img, mask


def _scratch(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    canvas = Image.new("L", (w, h), 0)
    from PIL import ImageDraw  # local: only the generator draws

    points = [(float(rng.uniform(0, w)), float(rng.uniform(0, h)))]
    for _ in range(int(rng.integers(1, 4))):
        px, py = points[-1]
        angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(15, 45)
        points.append((px + length * np.cos(angle), py + length * np.sin(angle)))
    ImageDraw.Draw(canvas).line(points, fill=1, width=int(rng.integers(2, 4)))
    return np.asarray(canvas, dtype=bool)


def _blob(rng: np.random.Generator, y: np.ndarray, x: np.ndarray, h: int, w: int) -> np.ndarray:
    cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
    ry, rx = rng.uniform(3, 9), rng.uniform(3, 9)
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def read_back_geometry(path: str | Path) -> dict:
    """Geometry tags of a written slice, for checks: position, spacing, rescale, shape."""
    ds = pydicom.dcmread(str(path))
    return {
        "position": [float(v) for v in ds.ImagePositionPatient],
        "spacing": [float(v) for v in ds.PixelSpacing],
        "intercept": float(ds.RescaleIntercept),
        "shape": ds.pixel_array.shape,
    }
