"""CT-like DICOM series (16-bit signed, rescale slope/intercept, real geometry and UIDs) with
bright ellipsoid lesions, and one label PNG per slice."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid
from scipy import ndimage

from segops.synth.summary import ArchiveSummary

log = logging.getLogger(__name__)

_SLICE_THICKNESS_MM = 2.5


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
