"""Folders with the quirks real archives have, run the README's way: ``segops plan DIR`` then
``segops run`` on the planned file unedited (each in a subprocess, as a new user types them).

Per folder: whether the plan and the run finished, what the plan chose (task, classes, epochs and
the seconds per epoch it planned), what the run gave (outputs, failed cases, the held-out headline
figure) and the seconds per epoch the training took (median of ``ray-train/progress.jsonl``).
Folders (``--cases``, default all):

- ``mixed``: 40 photos of 150-260 px and 6 crops of 24-48 px; gray, RGB, RGBA and 16-bit PNGs;
  unicode names; masks saved 0/1 by one tool and 0/255 by another (never both in one file);
- ``unsampled-class``: 420 masks; class value 2 in one of them only, outside the 300 the plan samples;
- ``kaggle``: ``train/`` + ``valid/`` with ``images/`` + ``masks/``, ``test/images`` without masks;
- ``jpeg01``: 0/1 masks saved as JPEG (compression noise makes 2s);
- ``instances``: 24 PennFudan-like photos (180-260 x 240-320 px, 0-4 objects, instance-id PNGs):
  Mask R-CNN, where the planned epoch time is checked against the run's;
- ``tcia-contours``: 7 thorax CTs with RTSTRUCT contours in a TCIA download's layout (see
  :func:`make_tcia_contours`);
- ``tcia-partial``: the same, the cord drawn for 4 of the 7 patients only;
- ``tcia-archive``: the same beside what CT exports hold too: a localizer per study (in the CT series
  itself for one), a dose-report screenshot (Secondary Capture) per study, two PET series (PET/CT);
- ``lidc``: 10 thorax CTs with LIDC-IDRI's XML nodule outlines by four readers (see :func:`make_lidc`);
- ``crackforest``: 40 road photos with CrackForest's MATLAB ``groundTruth/*.mat`` masks (1/2 values);
- ``kolektor``: KolektorSDD's ``kosNN/PartK.jpg`` + ``PartK_label.bmp``, 20 parts of 8 views each.
- ``montgomery``, ``carvana``, ``concrete``, ``cityscapes-instances`` (planned ``--task instance``),
  ``drive``, ``stare``, ``acdc``: see :mod:`_public_layouts` (lungs in a folder per side; a car's views
  named ``<car>_NN`` with GIF masks; JPEG crack masks in ``BW/`` beside ``rgb/``; 16-bit class-coded
  instance ids; retina vessels named by id only, ``1st_manual/21_manual1.gif``, beside field-of-view
  masks; Netpbm retina photos with two observers' masks in folders of their own; cardiac MR frames
  with labels of their own beside an unlabelled 4D cine).
- ``cvppp``: CVPPP 2017's leaf photos ``plant001_rgb.png`` with their leaf ids ``_label.png``, the
  binary plant ``_fg.png`` and a dot per leaf ``_centers.png`` in one folder.
- ``wgisd``: WGISD's grape photos ``data/CDY_2015.jpg`` with a NumPy stack of one binary mask per
  bunch, ``CDY_2015.npz``, and YOLO boxes ``CDY_2015.txt`` beside them.
- ``camvid``, ``floodnet``, ``roboflow-masks``: street scenes (road, sky, cars, pedestrians) in
  CamVid's Kaggle layout (colour masks ``train_labels/x_L.png``, ``class_dict.csv``, a black void
  border), FloodNet's (``train/train-org-img`` + ``train/train-label-img/x_lab.png``, a test split
  without masks) and Roboflow's semantic-mask export (``x_jpg.rf.<hash>_mask.png``, ``_classes.csv``).

    .venv/bin/python benchmarks/new_user.py                       # every folder (~20 min on 2 cores)
    .venv/bin/python benchmarks/new_user.py --cases mixed kaggle --budget-minutes 1.5

Writes ``benchmarks/out/new_user/<case>/`` (data, plan, run) and ``benchmarks/out/new_user.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from _public_layouts import (
    add_archive_objects,
    make_acdc,
    make_camvid,
    make_carvana,
    make_cityscapes,
    make_concrete,
    make_cvppp,
    make_drive,
    make_floodnet,
    make_kits,
    make_montgomery,
    make_monuseg,
    make_realiad,
    make_roboflow_masks,
    make_stare,
    make_visa,
    make_wgisd,
)
from _runs import segops
from PIL import Image

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out" / "new_user"


def _disc_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(4, max(5, min(h, w) // 5))
    return ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.uint8)


def make_mixed(root: Path, rng: np.random.Generator) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(46):
        small = i % 7 == 0
        h, w = (int(rng.integers(24, 48)), int(rng.integers(24, 48))) if small else tuple(rng.integers(150, 260, 2))
        m = _disc_mask(h, w, rng) if i % 3 else np.zeros((h, w), np.uint8)
        img = np.clip(rng.normal(90, 15, (h, w)) + 60 * m, 0, 255)
        name = f"part {i:03d}" + ("-é" if i % 5 == 0 else "")
        gray = img.astype(np.uint8)
        mode = i % 4
        if mode == 0:
            Image.fromarray(gray, "L").save(root / "images" / f"{name}.png")
        elif mode == 1:
            Image.fromarray(np.repeat(gray[..., None], 3, -1), "RGB").save(root / "images" / f"{name}.png")
        elif mode == 2:
            rgba = np.concatenate([np.repeat(gray[..., None], 3, -1), np.full((h, w, 1), 255, np.uint8)], -1)
            Image.fromarray(rgba, "RGBA").save(root / "images" / f"{name}.png")
        else:
            Image.fromarray((img * 257).astype(np.uint16)).save(root / "images" / f"{name}.png")
        Image.fromarray(m * (255 if i % 2 else 1)).save(root / "masks" / f"{name}.png")


def make_unsampled_class(root: Path, rng: np.random.Generator) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(420):
        m = np.zeros((40, 40), np.uint8)
        m[10:20, 10:20] = 1
        if i == 407:
            m[25:30, 25:30] = 2
        img = rng.normal(100, 10, (40, 40)) + 50 * (m == 1) - 40 * (m == 2)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "images" / f"c{i:03d}.png")
        Image.fromarray(m).save(root / "masks" / f"c{i:03d}.png")


def make_kaggle(root: Path, rng: np.random.Generator) -> None:
    for split, n, masked in (("train", 30, True), ("valid", 8, True), ("test", 10, False)):
        (root / split / "images").mkdir(parents=True)
        if masked:
            (root / split / "masks").mkdir()
        for i in range(n):
            m = np.zeros((96, 96), np.uint8)
            if i % 2:
                y, x = rng.integers(10, 70, 2)
                m[y : y + 15, x : x + 15] = 255
            img = rng.normal(120, 15, (96, 96, 3)) - 60 * (m[..., None] > 0)
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / split / "images" / f"{i:03d}.jpg")
            if masked:
                Image.fromarray(m).save(root / split / "masks" / f"{i:03d}.png")


def make_jpeg01(root: Path, rng: np.random.Generator) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(40):
        m = np.zeros((96, 96), np.uint8)
        y, x = rng.integers(5, 70, 2)
        m[y : y + 16, x : x + 20] = 1
        img = rng.normal(100, 12, (96, 96)) + 70 * m
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / "images" / f"s{i:03d}.png")
        Image.fromarray(m).save(root / "masks" / f"s{i:03d}.jpg", quality=90)


def make_instances(root: Path, rng: np.random.Generator) -> None:
    (root / "PNGImages").mkdir(parents=True)
    (root / "PedMasks").mkdir()
    for i in range(24):
        h, w = int(rng.integers(180, 260)), int(rng.integers(240, 320))
        img, ids = rng.normal(110, 20, (h, w, 3)), np.zeros((h, w), np.uint8)
        for j in range(1, (0 if i % 5 == 0 else int(rng.integers(1, 5))) + 1):
            y, x = int(rng.integers(5, h - 60)), int(rng.integers(5, w - 30))
            hh, ww = int(rng.integers(30, 60)), int(rng.integers(12, 25))
            ids[y : y + hh, x : x + ww] = j
            img[y : y + hh, x : x + ww] = rng.normal(40 + 40 * j, 10, 3)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / "PNGImages" / f"FudanPed{i:05d}.png")
        Image.fromarray(ids).save(root / "PedMasks" / f"FudanPed{i:05d}_mask.png")


def _crack(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A wandering two-pixel line across most of the width (a crack), as a boolean mask."""
    crack, y = np.zeros((h, w), bool), int(rng.integers(8, h - 8))
    for x in range(int(rng.integers(2, w // 4)), int(rng.integers(3 * w // 4, w - 2))):
        y = min(max(y + int(rng.integers(-1, 2)), 1), h - 2)
        crack[y - 1 : y + 1, x] = True
    return crack


def make_crackforest(root: Path, rng: np.random.Generator) -> None:
    """The CrackForest dataset's layout: ``image/001.jpg`` (road photos), ``groundTruth/001.mat``
    (a MATLAB struct ``groundTruth`` with ``Segmentation``: 1 background, 2 crack, and
    ``Boundaries``) and ``seg/001.seg`` (text)."""
    from scipy.io import savemat

    for folder in ("image", "groundTruth", "seg"):
        (root / folder).mkdir(parents=True)
    for i in range(1, 41):
        crack = _crack(120, 160, rng)
        image = rng.normal(135, 14, (120, 160, 3)) - 70 * crack[..., None]
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(root / "image" / f"{i:03d}.jpg", quality=90)
        seg = np.where(crack, 2, 1).astype(np.uint8)
        savemat(root / "groundTruth" / f"{i:03d}.mat", {"groundTruth": {"Segmentation": seg, "Boundaries": crack}})
        (root / "seg" / f"{i:03d}.seg").write_text("format ascii cr\nwidth 160\nheight 120\ndata\n")


def make_kolektor(root: Path, rng: np.random.Generator) -> None:
    """KolektorSDD's layout: ``kos01/Part0.jpg`` + ``Part0_label.bmp`` … ``Part7``, one folder per
    commutator photographed from eight sides (a defect on one side, seen in the neighbouring view
    too); tall gray 150x60 px images, most masks empty."""
    for k in range(1, 21):
        folder = root / f"kos{k:02d}"
        folder.mkdir(parents=True)
        surface = rng.normal(120, 8, (150, 60)) + rng.uniform(-20, 20)
        crack = _crack(60, 150, rng).T if k % 3 == 0 else None  # along the part
        for p in range(8):
            mask = np.zeros((150, 60), bool) if crack is None or p not in (3, 4) else np.roll(crack, 4 * p, 0)
            image = surface + rng.normal(0, 5, (150, 60)) - 60 * mask
            Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f"Part{p}.jpg", quality=95)
            Image.fromarray((mask * 255).astype(np.uint8)).save(folder / f"Part{p}_label.bmp")


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def _ring(cy: float, cx: float, ry: float, rx: float, n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cy + ry * np.sin(t), cx + rx * np.cos(t)], 1)  # (row, col) pixel centres


def _meta(sop_class: str, sop: str):  # noqa: ANN202 - pydicom imported lazily
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    m = FileMetaDataset()
    m.MediaStorageSOPClassUID, m.MediaStorageSOPInstanceUID, m.TransferSyntaxUID = (
        sop_class,
        sop,
        ExplicitVRLittleEndian,
    )
    return m


def _ct_slice(
    path: Path, hu: np.ndarray, uids: tuple[str, str, str], patient: str, k: int, z: float, px: float, thick: float
):  # noqa: ANN202, E501
    """Write one axial CT slice (HU values, centred on the scanner's axis); returns its dataset."""
    from pydicom.dataset import FileDataset
    from pydicom.uid import CTImageStorage, generate_uid

    sop, (h, w) = generate_uid(), hu.shape
    ds = FileDataset("", {}, file_meta=_meta(CTImageStorage, sop), preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, sop, "CT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = uids
    ds.PatientID, ds.InstanceNumber, ds.SeriesDescription = patient, k + 1, "CT THORAX"
    ds.ImagePositionPatient = [f"{-w * px / 2:.3f}", f"{-h * px / 2:.3f}", f"{z:.3f}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing, ds.SliceThickness = [f"{px}", f"{px}"], f"{thick}"
    ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = h, w
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = np.clip(hu + 1024, -32768, 32767).astype(np.int16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return ds


def _thorax(size: int, rng: np.random.Generator) -> tuple[tuple, list[tuple], tuple]:
    """A patient's body, lungs and cord ellipses (centre row, centre column, radii in px)."""
    shift = rng.normal(0, 3, 2)
    body = (size / 2 + shift[0], size / 2 + shift[1], 38 + rng.normal(0, 2), 44 + rng.normal(0, 2))
    lungs = [(body[0] - 4, body[1] + s * 20, 22 + rng.normal(0, 1.5), 13 + rng.normal(0, 1)) for s in (1, -1)]
    return body, lungs, (body[0] + 28, body[1], 3.5, 3.5)


def _thorax_hu(size: int, body: tuple, lung_shapes: list[tuple], cord: tuple, rng: np.random.Generator) -> np.ndarray:
    hu = np.full((size, size), -1000.0)
    hu[_ellipse(size, size, *body)] = 40
    for shape in lung_shapes:
        hu[_ellipse(size, size, *shape)] = -820
    hu[_ellipse(size, size, cord[0], cord[1], 7, 7)] = 700  # vertebra around the cord
    hu[_ellipse(size, size, *cord)] = 30
    return hu


def make_tcia_contours(root: Path, rng: np.random.Generator, no_cord: tuple[int, ...] = (2,)) -> None:
    """A TCIA download (NBIA retriever layout) of thorax CTs with RTSTRUCT contours, as LCTSC has:
    ``metadata.csv`` at the top; ``<patient>/<date-NA-description>/<1.000000-NA-id>/1-NNN.dcm`` with
    the RTSTRUCT's series beside the CT's; ROI names spelt per patient (``Lung_L``, ``lung l``,
    ``L Lung``; ``SpinalCord``, ``Spinal Cord``; ``External``, ``BODY``); the patients in ``no_cord`` without a
    cord; one patient's contours joined to slices by position only (no ContourImageSequence), with
    z off by float noise; one patient's files without an extension."""
    import pydicom
    from pydicom.dataset import FileDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import CTImageStorage, RTStructureSetStorage, generate_uid

    size, slices, px, thick = 96, 16, 3.5, 5.0
    spell = [
        ("Lung_L", "Lung_R", "SpinalCord", "External"),
        ("lung l", "lung r", "Spinal Cord", "BODY"),
        ("L Lung", "R Lung", "SpinalCord", "External"),
    ]
    rows = []
    for p in range(7):
        patient = f"LCTSC-Train-S1-{p + 1:03d}"
        study_dir = (
            root / "LCTSC" / patient / f"11-{p + 10}-2003-NA-RTRCCTTHORAX8FHigh Adult-{rng.integers(10000, 99999)}"
        )
        study, frame, series = generate_uid(), generate_uid(), generate_uid()
        ct_dir = study_dir / f"1.000000-NA-{rng.integers(10000, 99999)}"
        ct_dir.mkdir(parents=True)
        suffix = "" if p == 5 else ".dcm"
        z0 = -40.0 - 2.5 * p
        origin = (-size * px / 2, -size * px / 2)
        body, lungs, cord = _thorax(size, rng)
        cts, drawn = [], {name: [] for name in spell[p % 3]}
        for k in range(slices):
            taper = 1 - abs(k - slices / 2) / slices  # lungs shrink towards the apex and the base
            lung_shapes = [(cy, cx, ry * taper, rx * taper) for cy, cx, ry, rx in lungs]
            hu = _thorax_hu(size, body, lung_shapes, cord, rng)
            hu += rng.normal(0, 25, hu.shape)
            z = z0 + k * thick
            ds = _ct_slice(ct_dir / f"1-{k + 1:03d}{suffix}", hu, (study, series, frame), patient, k, z, px, thick)
            sop = ds.SOPInstanceUID
            cts.append(ds)
            noise = 1e-3 * (p == 4)
            for name, shape in zip(spell[p % 3], [*lung_shapes, cord, body], strict=True):
                if p in no_cord and name in ("SpinalCord", "Spinal Cord"):
                    continue  # this patient's cord was not drawn
                if k in (0, slices - 1) and name.lower().startswith(("lung", "l lung", "r lung")):
                    continue  # no lung on the first and last slice
                ring = _ring(*shape)
                pts = np.stack(
                    [origin[1] + ring[:, 1] * px, origin[0] + ring[:, 0] * px, np.full(len(ring), z + noise)], 1
                )
                drawn[name].append((sop, pts))
        rs_dir = study_dir / f"1.000000-NA-{rng.integers(10000, 99999)}"
        rs_dir.mkdir()
        sop = generate_uid()
        rs = FileDataset("", {}, file_meta=_meta(RTStructureSetStorage, sop), preamble=b"\0" * 128)
        rs.SOPClassUID, rs.SOPInstanceUID, rs.Modality = RTStructureSetStorage, sop, "RTSTRUCT"
        rs.StudyInstanceUID, rs.SeriesInstanceUID, rs.PatientID = study, generate_uid(), patient
        rs.StructureSetLabel = "RTstruct"
        ref_series, ref_study, ref_frame = pydicom.Dataset(), pydicom.Dataset(), pydicom.Dataset()
        ref_series.SeriesInstanceUID = series
        ref_series.ContourImageSequence = Sequence()
        for ct in cts:
            item = pydicom.Dataset()
            item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = CTImageStorage, ct.SOPInstanceUID
            ref_series.ContourImageSequence.append(item)
        ref_study.ReferencedSOPClassUID, ref_study.ReferencedSOPInstanceUID = "1.2.840.10008.3.1.2.3.1", study
        ref_study.RTReferencedSeriesSequence = Sequence([ref_series])
        ref_frame.FrameOfReferenceUID, ref_frame.RTReferencedStudySequence = frame, Sequence([ref_study])
        rs.ReferencedFrameOfReferenceSequence = Sequence([ref_frame])
        rs.StructureSetROISequence, rs.ROIContourSequence = Sequence(), Sequence()
        for number, (name, contours) in enumerate(drawn.items(), start=1):
            roi = pydicom.Dataset()
            roi.ROINumber, roi.ROIName, roi.ROIGenerationAlgorithm = number, name, "MANUAL"
            roi.ReferencedFrameOfReferenceUID = frame
            rs.StructureSetROISequence.append(roi)
            item = pydicom.Dataset()
            item.ReferencedROINumber, item.ROIDisplayColor = number, [255, 0, 0]
            item.ContourSequence = Sequence()
            for ref, pts in contours:
                c = pydicom.Dataset()
                if p != 4:
                    image = pydicom.Dataset()
                    image.ReferencedSOPClassUID, image.ReferencedSOPInstanceUID = CTImageStorage, ref
                    c.ContourImageSequence = Sequence([image])
                c.ContourGeometricType, c.NumberOfContourPoints = "CLOSED_PLANAR", len(pts)
                c.ContourData = [f"{v:.4f}" for v in pts.ravel()]
                item.ContourSequence.append(c)
            rs.ROIContourSequence.append(item)
        rs.save_as(rs_dir / f"1-1{suffix}", enforce_file_format=True)
        rows += [
            {"Series UID": series, "Subject ID": patient, "Modality": "CT", "Number of Images": slices},
            {"Series UID": rs.SeriesInstanceUID, "Subject ID": patient, "Modality": "RTSTRUCT", "Number of Images": 1},
        ]
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)


def make_tcia_archive(root: Path, rng: np.random.Generator) -> None:
    """``tcia-contours`` with localizers, dose-report screenshots and PET series beside (see
    :func:`_public_layouts.add_archive_objects`)."""
    make_tcia_contours(root, rng)
    add_archive_objects(root / "LCTSC", rng, _ct_slice, _meta)


def make_lidc(root: Path, rng: np.random.Generator) -> None:
    """LIDC-IDRI as TCIA ships it: ``LIDC-IDRI/<patient>/<study>/<series>/1-NNN.dcm`` with the
    series' reading file (``069.xml``, ``LidcReadMessage``) in its folder; four radiologists per
    series, each outlining the 0-2 nodules (solid spheres of 3-6 px radius in a lung) with a
    radius off by up to a pixel and missing one now and then; nodules < 3 mm marked by a point;
    a chest X-ray folder with its own reading file (``IdriReadMessage``) beside."""
    sys.path.insert(0, str(ROOT.parent))
    from pydicom.uid import generate_uid

    from tests.data.lidc_archive import Outline, Reader, write_lidc_xml

    size, slices, px, thick = 96, 16, 1.5, 3.0
    for p in range(10):
        study_dir = root / "LIDC-IDRI" / f"LIDC-IDRI-{p + 1:04d}" / f"01-01-2000-NA-NA-{rng.integers(10000, 99999)}"
        ct_dir = study_dir / f"3000{rng.integers(100, 999)}.000000-NA-{rng.integers(10000, 99999)}"
        ct_dir.mkdir(parents=True)
        uids = (generate_uid(), generate_uid(), generate_uid())
        body, lungs, cord = _thorax(size, rng)
        nodules = []
        for _ in range(int(rng.integers(0 if p % 4 == 0 else 1, 3))):
            cy, cx, ry, rx = lungs[int(rng.integers(0, 2))]
            at = (cy + rng.uniform(-0.5, 0.5) * ry, cx + rng.uniform(-0.5, 0.5) * rx)
            nodules.append((at[0], at[1], rng.uniform(3, 6), rng.uniform(3, slices - 3)))  # row, col, radius, slice
        readers = [Reader() for _ in range(4)]
        outlines: list[list[list[Outline]]] = [[[] for _ in nodules] for _ in readers]
        for k in range(slices):
            hu = _thorax_hu(size, body, lungs, cord, rng)
            for cy, cx, r, kz in nodules:
                rk2 = r * r - ((k - kz) * thick / px) ** 2  # the sphere's radius on this slice, squared
                if rk2 > 0:
                    hu[_ellipse(size, size, cy, cx, np.sqrt(rk2), np.sqrt(rk2))] = 20
            hu += rng.normal(0, 25, hu.shape)
            sop = _ct_slice(
                ct_dir / f"1-{k + 1:03d}.dcm", hu, uids, f"LIDC-IDRI-{p + 1:04d}", k, -200 + k * thick, px, thick
            ).SOPInstanceUID
            for n, (cy, cx, r, kz) in enumerate(nodules):
                rk2 = r * r - ((k - kz) * thick / px) ** 2
                for j in range(4):
                    drawn = np.sqrt(rk2) + rng.uniform(-1, 1) if rk2 > 0 else 0
                    if drawn >= 1.5:
                        ring = np.unique(np.rint(_ring(cy, cx, drawn + 0.5, drawn + 0.5, 64)).astype(int), axis=0)
                        order = np.argsort(np.arctan2(ring[:, 0] - cy, ring[:, 1] - cx))
                        outlines[j][n].append(Outline(sop, [(int(c), int(r_)) for r_, c in ring[order]]))
        for j, reader in enumerate(readers):
            reader.nodules = [o for o in outlines[j] if o and rng.random() > 0.15]  # a reader misses one now and then
            if rng.random() < 0.5:
                reader.nodules.append([Outline(sop, [(int(rng.integers(30, 60)), int(rng.integers(30, 60)))])])
        write_lidc_xml(ct_dir / "069.xml", uids[1], readers)
    cxr = root / "LIDC-IDRI" / "LIDC-IDRI-0001" / "cxr"
    write_lidc_xml(cxr / "158.xml", "1.2.3", [Reader()], "IdriReadMessage")
    _chest_xray(cxr / "1-1.dcm", rng)


def _chest_xray(path: Path, rng: np.random.Generator) -> None:
    """A DX chest radiograph (LIDC-IDRI holds some beside its CTs), 128 x 128, 12-bit."""
    from pydicom.dataset import FileDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation as DX
    from pydicom.uid import generate_uid

    sop = generate_uid()
    ds = FileDataset("", {}, file_meta=_meta(DX, sop), preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = DX, sop, "DX"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = generate_uid(), generate_uid(), "LIDC-IDRI-0001"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = 1, "MONOCHROME2", 128, 128
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = rng.integers(500, 3500, (128, 128)).astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


CASES = {
    "mixed": make_mixed,
    "unsampled-class": make_unsampled_class,
    "kaggle": make_kaggle,
    "jpeg01": make_jpeg01,
    "instances": make_instances,
    "tcia-contours": make_tcia_contours,
    # the cord drawn for 4 of 7 patients: a class (half or more), planned with missing_rois: ignore
    "tcia-partial": lambda root, rng: make_tcia_contours(root, rng, no_cord=(1, 2, 4)),
    "tcia-archive": lambda root, rng: make_tcia_archive(root, rng),
    "lidc": make_lidc,
    "crackforest": make_crackforest,
    "kolektor": make_kolektor,
    "montgomery": make_montgomery,
    "carvana": make_carvana,
    "concrete": lambda root, rng: make_concrete(root, rng, _crack),
    "cityscapes-instances": make_cityscapes,
    "drive": make_drive,
    "stare": make_stare,
    "acdc": make_acdc,
    "kits": make_kits,
    "cvppp": make_cvppp,
    "wgisd": make_wgisd,
    "camvid": make_camvid,
    "floodnet": make_floodnet,
    "roboflow-masks": make_roboflow_masks,
    "visa": make_visa,
    "monuseg": make_monuseg,
    "realiad": make_realiad,
}
#: What a user types after ``segops plan DIR`` for a folder (the README's options), where anything.
PLAN_ARGS = {"cityscapes-instances": ["--task", "instance"]}


def run_case(name: str, budget: float, seed: int) -> dict[str, Any]:
    folder = OUT / name
    data = folder / "data"
    if not (folder / "made").exists():
        shutil.rmtree(folder, ignore_errors=True)
        CASES[name](data, np.random.default_rng(seed))
        (folder / "made").touch()
    plan_dir = folder / "plan"
    rc, plan_s = segops(
        ["plan", str(data), "-o", str(plan_dir / "workflow.yaml"), "--budget-minutes", str(budget)]
        + PLAN_ARGS.get(name, []),
        folder,
        folder / "plan.log",
    )
    row: dict[str, Any] = {"case": name, "plan_rc": rc, "plan_s": round(plan_s, 1)}
    if rc != 0:
        return row | {"plan_error": (folder / "plan.log").read_text()[-600:]}
    doc = yaml.safe_load((plan_dir / "workflow.yaml").read_text())
    train = next(s for s in doc["steps"] if s["step"] == "train")
    text = (plan_dir / "workflow.yaml").read_text()
    planned = next((line for line in text.splitlines() if line.strip().startswith("epochs:")), "")
    row |= {
        "arch": train["model"]["arch"],
        "classes": train["model"]["classes"],
        "labels": doc["steps"][0]["source"]["labels"],
        "epochs": train["epochs"],
        "planned_epoch_s": float(planned.split("~")[1].split(" s/epoch")[0]) if "~" in planned else None,
    }
    rc, run_s = segops(["run", "workflow.yaml"], plan_dir, folder / "run.log")
    row |= {"run_rc": rc, "run_s": round(run_s, 1)}
    runs = sorted((plan_dir / "runs").glob("*/outputs.parquet"), key=lambda p: p.stat().st_mtime)
    if rc != 0 or not runs:
        return row | {"run_error": (folder / "run.log").read_text()[-600:]}
    run_dir = runs[-1].parent
    outputs = pd.read_parquet(run_dir / "outputs.parquet", columns=["rel_path", "has_label"])
    failed = run_dir / "segment-quarantine.parquet"
    progress = run_dir / "ray-train" / "progress.jsonl"
    epochs = (
        [json.loads(line)["epoch_seconds"] for line in progress.read_text().splitlines()] if progress.exists() else []
    )
    report = pd.read_parquet(run_dir / "report.parquet")
    test = report[report["split"] == "test"] if "split" in report else report.iloc[0:0]
    # instances: F1 of the objects over the held-out cases (a mean of matched pairs' Dice skips the cases
    # where nothing matched, so it looks fine for a model that finds one object in six cases)
    instances = "tp" in report and len(test)
    f1 = 2 * test["tp"].sum() / max(1, 2 * test["tp"].sum() + test["fp"].sum() + test["fn"].sum()) if instances else 0
    return row | {
        "outputs": len(outputs),
        "unlabelled_outputs": int((~outputs["has_label"].astype(bool)).sum()),
        "failed": len(pd.read_parquet(failed)) if failed.exists() else 0,
        "ingest_quarantined": len(pd.read_parquet(run_dir / "quarantine.parquet")),
        "heldout_dice_mean": round(float(test["dice"].mean()), 4) if len(test) and not instances else None,
        "heldout_instance_f1": round(float(f1), 4) if instances else None,
        # beside it the figure empty cases cannot lift: Dice over the held-out cases whose truth has foreground
        "heldout_fg_dice_mean": round(float(fg["dice"].mean()), 4)
        if len(fg := test[test["label_fg_fraction"] > 0])
        else None,
        "measured_epoch_s": round(statistics.median(epochs[2:] or epochs), 2) if epochs else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--budget-minutes", type=float, default=1.5, help="each plan's training budget")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.cases:
        rows.append(run_case(name, args.budget_minutes, args.seed))
        print(json.dumps(rows[-1], default=str), flush=True)
    (ROOT / "out" / "new_user.json").write_text(json.dumps(rows, indent=2, default=str))
    print(
        "\n| folder | plan | model, classes | run | outputs (unlabelled) | failed | held-out "
        "| epoch s planned / taken |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        held = ", ".join(f"{k[8:]} {v}" for k, v in r.items() if k.startswith("heldout_") and v is not None) or "-"
        print(
            f"| {r['case']} | {'ok' if r['plan_rc'] == 0 else 'failed'} "
            f"| {r.get('arch', '-')}, {r.get('classes', '-')} "
            f"| {'ok' if r.get('run_rc') == 0 else 'failed' if 'run_rc' in r else '-'} "
            f"| {r.get('outputs', '-')} ({r.get('unlabelled_outputs', '-')}) | {r.get('failed', '-')} | {held} "
            f"| {r.get('planned_epoch_s', '-')} / {r.get('measured_epoch_s', '-')} |"
        )


if __name__ == "__main__":
    main()
