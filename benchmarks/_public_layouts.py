"""More public datasets' layouts for ``new_user.py`` (names, folders, file formats and value codes as
the datasets ship them; the pixels are drawn here): Montgomery's chest X-rays, Carvana's car views,
the Concrete Crack Segmentation set and Cityscapes' instance ids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def make_montgomery(root: Path, rng: np.random.Generator) -> None:
    """``MontgomerySet/CXR_png/MCUCXR_0001_0.png`` (gray X-rays; the last digit the diagnosis) with
    the lungs in ``ManualMask/leftMask/`` and ``ManualMask/rightMask/`` under the same names, and
    ``ClinicalReadings/*.txt``."""
    base = root / "MontgomerySet"
    for sub in ("CXR_png", "ManualMask/leftMask", "ManualMask/rightMask", "ClinicalReadings"):
        (base / sub).mkdir(parents=True)
    yy, xx = np.mgrid[:128, :128]
    for i in range(1, 41):
        name = f"MCUCXR_{i:04d}_{int(rng.integers(0, 2))}.png"
        cy, dx, ry, rx = rng.integers(58, 70), rng.integers(26, 34), rng.integers(34, 44), rng.integers(14, 20)
        right = ((yy - cy) / ry) ** 2 + ((xx - 64 + dx) / rx) ** 2 < 1  # the patient's right: the image's left
        left = ((yy - cy) / (ry - 2)) ** 2 + ((xx - 64 - dx) / (rx - 1)) ** 2 < 1
        image = rng.normal(170, 12, (128, 128)) - 90 * (left | right) + 25 * (np.abs(xx - 64) < 6)
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(base / "CXR_png" / name)
        Image.fromarray((left * 255).astype(np.uint8)).save(base / "ManualMask/leftMask" / name)
        Image.fromarray((right * 255).astype(np.uint8)).save(base / "ManualMask/rightMask" / name)
        (base / "ClinicalReadings" / name.replace(".png", ".txt")).write_text("Patient's Sex: F\n")


def make_carvana(root: Path, rng: np.random.Generator) -> None:
    """``train/<car>_01.jpg`` … ``_16`` (a car photographed from 16 angles in a studio) with GIF masks
    ``train_masks/<car>_01_mask.gif``, and ``test/`` without masks; 10 cars of 8 views here."""
    for sub in ("train", "train_masks", "test"):
        (root / sub).mkdir(parents=True)
    yy, xx = np.mgrid[:96, :144]
    for c in range(11):
        car = f"{int(rng.integers(0, 2**44)):011x}"
        colour = rng.integers(20, 235, 3)
        for v in range(1, 9):
            length = 40 + 18 * abs(np.cos(v * np.pi / 8))  # seen from the side: long; from the front: short
            body = (np.abs(xx - 72) < length) & (yy > 40) & (yy < 70)
            cabin = (np.abs(xx - 72 + 6 * np.sin(v)) < length * 0.5) & (yy > 26) & (yy <= 40)
            mask = body | cabin
            image = np.where(
                mask[..., None], colour + rng.normal(0, 12, (96, 144, 3)), rng.normal(200, 6, (96, 144, 3))
            )
            folder, stem = ("test", f"{car}_{v:02d}") if c == 10 else ("train", f"{car}_{v:02d}")
            Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(root / folder / f"{stem}.jpg", quality=90)
            if folder == "train":
                Image.fromarray(mask.astype(np.uint8), "P").save(root / "train_masks" / f"{stem}_mask.gif")


def make_concrete(root: Path, rng: np.random.Generator, crack) -> None:  # noqa: ANN001 - new_user's _crack
    """The Concrete Crack Segmentation set: ``rgb/00001.jpg`` with its mask ``BW/00001.jpg`` (a JPEG,
    0/255 with compression noise along every 2-px crack), folders named without a mask word."""
    (root / "rgb").mkdir(parents=True)
    (root / "BW").mkdir()
    for i in range(1, 41):
        lines = crack(96, 96, rng) | (crack(96, 96, rng).T if i % 2 else False)
        image = rng.normal(150, 16, (96, 96, 3)) - 80 * lines[..., None]
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(root / "rgb" / f"{i:05d}.jpg", quality=90)
        Image.fromarray((lines * 255).astype(np.uint8)).save(root / "BW" / f"{i:05d}.jpg", quality=75)


def make_cityscapes(root: Path, rng: np.random.Generator) -> None:
    """Cityscapes' ``leftImg8bit/train/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` with
    ``gtFine/…_gtFine_labelIds.png`` (8-bit label ids: road 7, sky 23, person 24, car 26),
    ``_gtFine_instanceIds.png`` (16-bit: class x 1000 + object for cars and persons, the label id
    elsewhere, a crowd of cars stored as plain 26), ``_gtFine_color.png`` and ``_gtFine_polygons.json``."""
    for city in ("aachen", "bochum", "bremen", "cologne", "darmstadt"):
        for split in ("leftImg8bit", "gtFine"):
            (root / split / "train" / city).mkdir(parents=True)
        for j in range(6):
            stem = f"{city}_{j:06d}_000019"
            labels = np.full((96, 192), 7, np.uint8)
            labels[:36] = 23
            ids = labels.astype(np.uint16)
            image = np.where((labels == 23)[..., None], [120, 160, 220], [90, 90, 90]) + rng.normal(0, 8, (96, 192, 3))
            for k in range(int(rng.integers(1, 4))):
                x, w = int(rng.integers(4, 150)), int(rng.integers(26, 40))
                y = int(rng.integers(46, 70))
                labels[y : y + 18, x : x + w], ids[y : y + 18, x : x + w] = 26, 26000 + k
                image[y : y + 18, x : x + w] = rng.integers(30, 220, 3)
            for k in range(int(rng.integers(0, 3))):
                x = int(rng.integers(4, 180))
                labels[40:70, x : x + 7], ids[40:70, x : x + 7] = 24, 24000 + k
                image[40:70, x : x + 7] = [200, 60, 60]
            if j % 3 == 0:
                labels[80:92, 150:190], ids[80:92, 150:190] = 26, 26  # a crowd: no instance id
            out = root / "gtFine" / "train" / city
            Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(
                root / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png"
            )
            Image.fromarray(labels).save(out / f"{stem}_gtFine_labelIds.png")
            Image.fromarray(ids).save(out / f"{stem}_gtFine_instanceIds.png")
            Image.fromarray(np.stack([labels * 9] * 3, -1).astype(np.uint8)).save(out / f"{stem}_gtFine_color.png")
            (out / f"{stem}_gtFine_polygons.json").write_text('{"imgHeight": 96, "imgWidth": 192, "objects": []}')


def add_archive_objects(root: Path, rng: np.random.Generator, ct_slice, meta) -> None:  # noqa: ANN001 - new_user's
    """What a hospital's or TCIA's CT export holds beside the axial slices, added to each CT series'
    study under ``root``: a localizer (coronal scout, ImageType LOCALIZER; in the CT series itself for
    the first patient, its own series for the others), a dose-report screenshot (Secondary Capture,
    RGB, Modality CT), and for the first two patients a PET series (PET/CT) of 16 slices."""
    import pydicom
    from pydicom.dataset import FileDataset
    from pydicom.uid import PositronEmissionTomographyImageStorage as PET
    from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

    series_dirs = sorted(p for p in root.glob("*/*/*") if p.is_dir() and len(list(p.iterdir())) > 1)
    for i, ct_dir in enumerate(series_dirs):
        first = pydicom.dcmread(sorted(ct_dir.iterdir())[0], stop_before_pixels=True)
        study, frame = first.StudyInstanceUID, first.FrameOfReferenceUID
        scout_dir = ct_dir if i == 0 else ct_dir.parent / f"2.000000-TOPOGRAM-{rng.integers(10000, 99999)}"
        scout_dir.mkdir(exist_ok=True)
        series = first.SeriesInstanceUID if i == 0 else generate_uid()
        projection = rng.normal(0, 30, (128, 96)) - 824
        scout = ct_slice(scout_dir / "1-999.dcm", projection, (study, series, frame), first.PatientID, 998, 0.0, 3.5, 1)
        scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        scout.ImageOrientationPatient, scout.ImagePositionPatient = (
            ["1", "0", "0", "0", "0", "-1"],
            ["-168", "0", "100"],
        )
        scout.save_as(scout_dir / "1-999.dcm", enforce_file_format=True)
        dose_dir = ct_dir.parent / f"999.000000-Dose Report-{rng.integers(10000, 99999)}"
        dose_dir.mkdir()
        sop = generate_uid()
        dose = FileDataset("", {}, file_meta=meta(SecondaryCaptureImageStorage, sop), preamble=b"\0" * 128)
        dose.SOPClassUID, dose.SOPInstanceUID, dose.Modality = SecondaryCaptureImageStorage, sop, "CT"
        dose.StudyInstanceUID, dose.SeriesInstanceUID, dose.PatientID = study, generate_uid(), first.PatientID
        dose.ImageType, dose.SeriesDescription = ["DERIVED", "SECONDARY", "OTHER"], "Dose Report"
        dose.SamplesPerPixel, dose.PhotometricInterpretation, dose.PlanarConfiguration = 3, "RGB", 0
        dose.Rows, dose.Columns = 80, 120
        dose.BitsAllocated, dose.BitsStored, dose.HighBit, dose.PixelRepresentation = 8, 8, 7, 0
        text = np.zeros((80, 120, 3), np.uint8)
        text[10:70:12, 10:110] = 255  # lines of "text"
        dose.PixelData = text.tobytes()
        dose.save_as(dose_dir / "1-1.dcm", enforce_file_format=True)
        if i >= 2:
            continue
        pet_dir, pet_series = ct_dir.parent / f"4.000000-PET AC-{rng.integers(10000, 99999)}", generate_uid()
        pet_dir.mkdir()
        for k in range(16):
            sop = generate_uid()
            pet = FileDataset("", {}, file_meta=meta(PET, sop), preamble=b"\0" * 128)
            pet.SOPClassUID, pet.SOPInstanceUID, pet.Modality = PET, sop, "PT"
            pet.StudyInstanceUID, pet.SeriesInstanceUID, pet.FrameOfReferenceUID = study, pet_series, frame
            pet.PatientID, pet.InstanceNumber = first.PatientID, k + 1
            pet.ImagePositionPatient = ["-168", "-168", f"{float(first.ImagePositionPatient[2]) + 5 * k:.1f}"]
            pet.ImageOrientationPatient, pet.PixelSpacing = ["1", "0", "0", "0", "1", "0"], ["7", "7"]
            pet.SamplesPerPixel, pet.PhotometricInterpretation, pet.Rows, pet.Columns = 1, "MONOCHROME2", 48, 48
            pet.BitsAllocated, pet.BitsStored, pet.HighBit, pet.PixelRepresentation = 16, 16, 15, 0
            pet.PixelData = rng.integers(0, 3000, (48, 48)).astype(np.uint16).tobytes()
            pet.save_as(pet_dir / f"1-{k + 1:03d}.dcm", enforce_file_format=True)


def _retina(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RGB photo, vessels, field of view) of a drawn retina: four straight vessels 2-3 px wide through
    an elliptic disc, darker in the red and green channels; black outside the disc."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    fov = ((yy - h / 2) / (h / 2 - 3)) ** 2 + ((xx - w / 2) / (w / 2 - 4)) ** 2 < 1
    vessels = np.zeros(shape, bool)
    for _ in range(4):
        a, b = rng.uniform(0, np.pi), rng.uniform(-30, 30)
        vessels |= np.abs((xx - w / 2) * np.cos(a) + (yy - h / 2) * np.sin(a) - b) < 1.2
    vessels &= fov
    rgb = [rng.normal(150, 10, shape) - 60 * vessels, rng.normal(80, 8, shape) - 40 * vessels, rng.normal(40, 5, shape)]
    photo = (np.stack(rgb, -1) * fov[..., None]).clip(0, 255).astype(np.uint8)
    return photo, vessels, fov


def make_drive(root: Path, rng: np.random.Generator) -> None:
    """DRIVE's layout: ``DRIVE/training/images/21_training.tif`` (RGB retina photos) with the vessels in
    ``training/1st_manual/21_manual1.gif`` and the field of view, the same disc for every image, in
    ``training/mask/21_training_mask.gif``; ``test/`` alike (``01_test.tif`` …) with a second
    observer's ``2nd_manual/01_manual2.gif``. 20 + 20 images of 96 px here (565 x 584 in DRIVE)."""
    for split, ids in (("training", range(21, 41)), ("test", range(1, 21))):
        base = root / "DRIVE" / split
        for sub in ("images", "1st_manual", "mask") + (("2nd_manual",) if split == "test" else ()):
            (base / sub).mkdir(parents=True, exist_ok=True)
        for i in ids:
            photo, vessels, fov = _retina((96, 96), rng)
            Image.fromarray(photo).save(base / "images" / f"{i:02d}_{split}.tif")
            Image.fromarray((vessels * 255).astype(np.uint8)).save(base / "1st_manual" / f"{i:02d}_manual1.gif")
            if split == "test":
                second = vessels & (rng.random(vessels.shape) > 0.1)  # another observer misses some pixels
                Image.fromarray((second * 255).astype(np.uint8)).save(base / "2nd_manual" / f"{i:02d}_manual2.gif")
            Image.fromarray((fov * 255).astype(np.uint8)).save(base / "mask" / f"{i:02d}_{split}_mask.gif")


def make_stare(root: Path, rng: np.random.Generator) -> None:
    """STARE's layout: ``stare-images/im0001.ppm`` (Netpbm RGB retina photos) with two observers'
    vessel masks, ``labels-ah/im0001.ah.ppm`` and ``labels-vk/im0001.vk.ppm``; 20 images of 96x128."""
    for sub in ("stare-images", "labels-ah", "labels-vk"):
        (root / sub).mkdir(parents=True)
    for i in range(1, 21):
        photo, vessels, _ = _retina((96, 128), rng)
        Image.fromarray(photo).save(root / "stare-images" / f"im{i:04d}.ppm")
        Image.fromarray((vessels * 255).astype(np.uint8)).save(root / "labels-ah" / f"im{i:04d}.ah.ppm")
        wider = vessels | np.roll(vessels, 1, axis=1)  # the second observer draws them wider
        Image.fromarray((wider * 255).astype(np.uint8)).save(root / "labels-vk" / f"im{i:04d}.vk.ppm")


def make_acdc(root: Path, rng: np.random.Generator) -> None:
    """ACDC's layout: ``training/patient001/`` with ``Info.cfg``, the end-diastolic and end-systolic
    frames ``patient001_frame01.nii.gz`` / ``patient001_frame12.nii.gz``, each with its label
    ``_gt.nii.gz`` (right ventricle 1, myocardium 2, left ventricle 3), and the unlabelled cine
    ``patient001_4d.nii.gz`` (8 frames on the fourth axis); 8 patients of 64x64x8 at 1.5x1.5x10 mm."""
    import nibabel as nib

    affine = np.diag([1.5, 1.5, 10.0, 1.0])
    yy, xx = np.mgrid[:64, :64]
    for p in range(1, 9):
        folder = root / "training" / f"patient{p:03d}"
        folder.mkdir(parents=True)
        (folder / "Info.cfg").write_text("ED: 1\nES: 12\nGroup: NOR\n")
        frames = []
        for frame, squeeze in (("frame01", 0.0), ("frame12", 3.0)):
            label = np.zeros((64, 64, 8), np.uint8)
            cy, cx = 32 + rng.normal(0, 2), 32 + rng.normal(0, 2)
            for k in range(8):
                r = 14 - abs(k - 4) * 1.5 - squeeze
                dist = np.hypot(yy - cy, xx - cx)
                label[..., k][(dist < r + 8) & (xx < cx - r)] = 1
                label[..., k][dist < r + 4] = 2
                label[..., k][dist < r] = 3
            image = (label * 60 + rng.normal(0, 12, label.shape)).astype(np.float32)
            frames.append(image)
            nib.save(nib.Nifti1Image(image, affine), folder / f"patient{p:03d}_{frame}.nii.gz")
            nib.save(nib.Nifti1Image(label, affine), folder / f"patient{p:03d}_{frame}_gt.nii.gz")
        cine = np.stack([frames[0]] * 4 + [frames[1]] * 4, -1)
        nib.save(nib.Nifti1Image(cine, affine), folder / f"patient{p:03d}_4d.nii.gz")


def make_kits(root: Path, rng: np.random.Generator) -> None:
    """KiTS19's layout: ``data/case_00000/imaging.nii.gz`` + ``segmentation.nii.gz`` (kidney 1, tumour
    2), each CT stored as KiTS stores it, (slices, rows, columns): the first voxel axis runs head to
    foot (3 or 5 mm), the second back to front, the third right to left (2 mm). 10 abdomens of
    80x80 px, 100-150 mm long: body, spine, two kidneys (160 HU), a tumour (90 HU) on one of them."""
    import nibabel as nib

    for n in range(10):
        thick = 3.0 if n % 3 == 0 else 5.0
        slices = int(rng.uniform(100, 150) / thick)
        # KiTS' RAS affine: i → foot-ward, j → posterior (-y RAS), k → patient's left (-x RAS)
        affine = np.array([[0, 0, -2.0, 0], [0, -2.0, 0, 0], [-thick, 0, 0, 0], [0, 0, 0, 1.0]])
        z, y, x = np.meshgrid(np.arange(slices) * thick, np.arange(80) * 2.0, np.arange(80) * 2.0, indexing="ij")
        body = ((x - 80) / 70) ** 2 + ((y - 80) / 50) ** 2 < 1
        image = np.where(body, 40.0, -1000.0) + 400 * (np.hypot(x - 80, y - 115) < 10)
        label = np.zeros(z.shape, np.uint8)
        middle = slices * thick / 2 + rng.uniform(-10, 10)
        for side in (-1, 1):
            cx, cz = 80 + side * rng.uniform(36, 44), middle + rng.uniform(-8, 8)
            kidney = ((x - cx) / 18) ** 2 + ((y - 104) / 14) ** 2 + ((z - cz) / 45) ** 2 < 1
            label[kidney] = 1
        side = rng.choice([-1, 1])
        centre = (80 + side * 40 + rng.uniform(-6, 6), 104 + rng.uniform(-6, 6), middle + rng.uniform(-20, 20))
        tumour = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) < rng.uniform(8, 14)
        label[tumour & (label == 1)] = 2
        image = np.where(label == 1, 160.0, np.where(label == 2, 90.0, image)) + rng.normal(0, 20, z.shape)
        case = root / "data" / f"case_{n:05d}"
        case.mkdir(parents=True)
        nib.save(nib.Nifti1Image(image.astype(np.int16), affine), case / "imaging.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), case / "segmentation.nii.gz")


def make_cvppp(root: Path, rng: np.random.Generator) -> None:
    """CVPPP 2017's leaf segmentation set: ``A1/plant001_rgb.png`` (the photo) beside
    ``plant001_label.png`` (palette PNG of leaf ids), ``plant001_fg.png`` (the binary plant),
    ``plant001_centers.png`` (a dot per leaf) and ``A1.csv`` (leaf counts): four files per plant in
    one folder, 30 plants of 120 x 140 px, 3-8 leaves each."""
    base = root / "CVPPP2017_LSC_training" / "training" / "A1"
    base.mkdir(parents=True)
    yy, xx = np.mgrid[:120, :140]
    counts = []
    for i in range(1, 31):
        ids, centres = np.zeros((120, 140), np.uint8), np.zeros((120, 140), np.uint8)
        n = int(rng.integers(3, 9))
        for k in range(1, n + 1):  # leaves as ellipses radiating from the plant's centre
            angle, length = 2 * np.pi * k / n + rng.normal(0, 0.2), rng.uniform(18, 30)
            cy, cx = 60 + 0.6 * length * np.sin(angle), 70 + 0.6 * length * np.cos(angle)
            u = (yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)
            v = (yy - cy) * np.cos(angle) - (xx - cx) * np.sin(angle)
            ids[((u / (length / 2)) ** 2 + (v / rng.uniform(5, 8)) ** 2 < 1) & (ids == 0)] = k
            centres[int(round(cy)), int(round(cx))] = 255
        counts.append(f"plant{i:03d}_rgb.png,{n}")
        soil = rng.normal((90, 70, 50), 14, (120, 140, 3))
        leaf = rng.normal((60, 150, 50), 14, (120, 140, 3)) + 6 * (ids[..., None] % 3)
        photo = np.where(ids[..., None] > 0, leaf, soil)
        Image.fromarray(photo.clip(0, 255).astype(np.uint8)).save(base / f"plant{i:03d}_rgb.png")
        label = Image.fromarray(ids, "P")
        label.putpalette([0, 0, 0] + [int(v) for v in rng.integers(40, 255, 765)])
        label.save(base / f"plant{i:03d}_label.png")
        Image.fromarray(((ids > 0) * 255).astype(np.uint8)).save(base / f"plant{i:03d}_fg.png")
        Image.fromarray(centres).save(base / f"plant{i:03d}_centers.png")
    (base / "A1.csv").write_text("\n".join(counts) + "\n")


def make_wgisd(root: Path, rng: np.random.Generator) -> None:
    """WGISD's grape bunches: ``data/CDY_2015.jpg`` beside ``CDY_2015.npz`` (``arr_0``: one binary
    mask per bunch, stacked on the last axis) and ``CDY_2015.txt`` (YOLO boxes), 30 photos of 144 x 192
    px with 1-5 bunches, and ``train.txt`` / ``test.txt`` listing the ids."""
    (root / "data").mkdir(parents=True)
    yy, xx = np.mgrid[:144, :192]
    ids = []
    for i in range(30):
        name = f"{['CDY', 'CFR', 'SVB'][i % 3]}_{2015 + i}"
        masks, photo = [], rng.normal((70, 110, 60), 18, (144, 192, 3))
        for _ in range(int(rng.integers(1, 6))):  # a bunch: a cluster of berries, wider at the top
            cy, cx, h = rng.integers(30, 110), rng.integers(20, 172), rng.integers(24, 40)
            bunch = np.zeros((144, 192), bool)
            for _ in range(40):
                dy = rng.uniform(-h / 2, h / 2)
                by, bx = cy + dy, cx + rng.normal(0, 0.25 * (h / 2 - dy / 2))
                bunch |= (yy - by) ** 2 + (xx - bx) ** 2 < 16
            masks.append(bunch)
            photo[bunch] = rng.normal((60, 30, 70), 10, (int(bunch.sum()), 3))
        Image.fromarray(photo.clip(0, 255).astype(np.uint8)).save(root / "data" / f"{name}.jpg")
        np.savez_compressed(root / "data" / f"{name}.npz", arr_0=np.stack(masks, -1).astype(np.uint8))
        boxes = [f"0 {xs.mean() / 192:.4f} {ys.mean() / 144:.4f} 0.1 0.1" for ys, xs in (np.nonzero(m) for m in masks)]
        (root / "data" / f"{name}.txt").write_text("\n".join(boxes) + "\n")
        ids.append(name)
    (root / "train.txt").write_text("\n".join(ids[:24]) + "\n")
    (root / "test.txt").write_text("\n".join(ids[24:]) + "\n")


def _street(rng: np.random.Generator, h: int = 72, w: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A drawn street scene: (RGB photo, class map 0 void / 1 road / 2 sky / 3 car / 4 pedestrian)."""
    yy, xx = np.mgrid[:h, :w]
    horizon = int(rng.integers(h // 4, h // 3))
    classes = np.where(yy < horizon, 2, 1).astype(np.uint8)
    for _ in range(int(rng.integers(1, 3))):
        y, x = int(rng.integers(horizon + 6, h - 14)), int(rng.integers(0, w - 24))
        classes[y : y + 10, x : x + 22] = 3
    if rng.random() < 0.5:
        x = int(rng.integers(4, w - 8))
        classes[horizon : horizon + 18, x : x + 4] = 4
    classes[(xx < 3) | (xx >= w - 3)] = 0  # the frame's edge, left unlabelled
    base = np.array([[20, 20, 20], [110, 100, 110], [150, 190, 230], [200, 40, 40], [240, 200, 60]], float)
    image = base[classes] + rng.normal(0, 14, (h, w, 3))
    return image.clip(0, 255).astype(np.uint8), classes


def make_camvid(root: Path, rng: np.random.Generator) -> None:
    """CamVid as Kaggle ships it: ``CamVid/{train,val,test}/0001TP_006690.png`` with colour masks
    ``CamVid/{train,val,test}_labels/0001TP_006690_L.png`` and ``class_dict.csv`` (``name,r,g,b``;
    ``Void`` black, a thin border here, while road fills the most pixels)."""
    colours = {"Void": (0, 0, 0), "Road": (128, 64, 128), "Sky": (128, 128, 128), "Car": (64, 0, 128)}
    colours["Pedestrian"] = (64, 64, 0)
    palette = np.array(list(colours.values()), np.uint8)
    base = root / "CamVid"
    for split, n in (("train", 24), ("val", 8), ("test", 8)):
        (base / split).mkdir(parents=True)
        (base / f"{split}_labels").mkdir()
        for i in range(n):
            image, classes = _street(rng)
            stem = f"0001TP_{6690 + 30 * i + {'train': 0, 'val': 1, 'test': 2}[split]:06d}"
            Image.fromarray(image).save(base / split / f"{stem}.png")
            Image.fromarray(palette[classes]).save(base / f"{split}_labels" / f"{stem}_L.png")
    rows = "".join(f"{name},{r},{g},{b}\n" for name, (r, g, b) in colours.items())
    (base / "class_dict.csv").write_text("name,r,g,b\n" + rows)


def make_floodnet(root: Path, rng: np.random.Generator) -> None:
    """FloodNet's layout: ``train/train-org-img/6467.jpg`` with class ids in
    ``train/train-label-img/6467_lab.png`` (0 background, 1 building-flooded … 9 grass; here 0-4 of
    the street scene), ``val/`` the same, ``test/test-org-img`` without masks."""
    for split, n in (("train", 24), ("val", 8), ("test", 6)):
        (root / split / f"{split}-org-img").mkdir(parents=True)
        if split != "test":
            (root / split / f"{split}-label-img").mkdir()
        for i in range(n):
            image, classes = _street(rng)
            stem = str(6000 + 100 * ("train", "val", "test").index(split) + i)
            Image.fromarray(image).save(root / split / f"{split}-org-img" / f"{stem}.jpg", quality=92)
            if split != "test":
                Image.fromarray(classes).save(root / split / f"{split}-label-img" / f"{stem}_lab.png")


def make_roboflow_masks(root: Path, rng: np.random.Generator) -> None:
    """Roboflow's "Semantic Segmentation Masks" export: ``train/<name>_jpg.rf.<hash>.jpg`` beside
    ``<name>_jpg.rf.<hash>_mask.png`` (class values), ``_classes.csv`` in each split, README files."""
    for split, n in (("train", 28), ("valid", 8), ("test", 4)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            image, classes = _street(rng)
            stem = f"street_{i:03d}_jpg.rf.{int(rng.integers(0, 2**62)):032x}"
            Image.fromarray(image).save(root / split / f"{stem}.jpg", quality=92)
            Image.fromarray(classes).save(root / split / f"{stem}_mask.png")
        (root / split / "_classes.csv").write_text(
            "Pixel Value, Class\n0, background\n1, road\n2, sky\n3, car\n4, pedestrian\n"
        )
    (root / "README.roboflow.txt").write_text("Exported via roboflow.com\n")


def make_visa(root: Path, rng: np.random.Generator) -> None:
    """VisA: ``<object>/Data/Images/Anomaly/000.JPG`` and ``Normal/0000.JPG`` with masks
    ``<object>/Data/Masks/Anomaly/000.png`` that number a part's defects in the order its
    ``image_anno.csv`` lists them (1, then 2 where it has a second: no class), ``split_csv/1cls.csv``
    at the root; two objects here (candle, pcb1), most parts defect-free."""
    yy, xx = np.mgrid[:96, :128]
    rows = []
    for obj, normals, anomalies in (("candle", 40, 24), ("pcb1", 20, 12)):
        data = root / obj / "Data"
        for sub in ("Images/Anomaly", "Images/Normal", "Masks/Anomaly"):
            (data / sub).mkdir(parents=True)
        anno = ["image,label,mask"]
        for i in range(normals + anomalies):
            part = ((yy - 48) / 38) ** 2 + ((xx - 64) / 54) ** 2 < 1
            image = rng.normal(70, 8, (96, 128, 3)) + part[..., None] * (rng.integers(90, 130, 3) + rng.normal(0, 6))
            defect = i >= normals
            mask = np.zeros((96, 128), np.uint8)
            kinds = []
            for k in range(1 + int(defect and rng.random() < 0.3) if defect else 0):
                cy, cx = rng.integers(28, 68), rng.integers(24 + 40 * k, 64 + 40 * k)
                r = rng.integers(3, 7)
                spot = (yy - cy) ** 2 / r**2 + (xx - cx) ** 2 / (2 * r) ** 2 < 1
                mask[spot] = k + 1
                image[spot] -= rng.integers(40, 70)
                kinds.append(("chunk of wax missing", "foreign particles")[k])
            folder = "Anomaly" if defect else "Normal"
            stem = f"{i - normals:03d}" if defect else f"{i:04d}"
            rel = f"{obj}/Data/Images/{folder}/{stem}.JPG"
            Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(root / rel, quality=90)
            mask_rel = f"{obj}/Data/Masks/Anomaly/{stem}.png" if defect else ""
            if defect:
                Image.fromarray(mask).save(root / mask_rel)
            anno.append(f'{rel},"{",".join(kinds) or "normal"}",{mask_rel}')
            split = "test" if defect or i % 5 == 0 else "train"
            rows.append(f"{obj},{split},{'anomaly' if defect else 'normal'},{rel},{mask_rel}")
        (root / obj / "image_anno.csv").write_text("\n".join(anno) + "\n")
    (root / "split_csv").mkdir()
    (root / "split_csv" / "1cls.csv").write_text("object,split,label,image,mask\n" + "\n".join(rows) + "\n")
    (root / "LICENSE-DATASET").write_text("CC BY 4.0\n")


def _imagescope_xml(nuclei: list[tuple[float, float, float, float]], layer: str = "") -> str:
    """An Aperio ImageScope XML file outlining ``nuclei`` (cy, cx, ry, rx) as freehand regions of one
    layer, with the attribute header ImageScope writes (MoNuSeg's files)."""
    regions = []
    for n, (cy, cx, ry, rx) in enumerate(nuclei, 1):
        angles = np.linspace(0, 2 * np.pi, 14, endpoint=False)
        vertices = "".join(
            f'<Vertex X="{cx + rx * np.cos(a):.6f}" Y="{cy + ry * np.sin(a):.6f}" Z="0"/>\n' for a in angles
        )
        regions.append(
            f'<Region Id="{n}" Type="0" Zoom="1" Selected="0" ImageLocation="" ImageFocus="-1" Length="40" '
            f'Area="120" LengthMicrons="10" AreaMicrons="7.6" Text="" NegativeROA="0" InputRegionId="0" '
            f'Analyze="0" DisplayId="{n}">\n<Attributes/>\n<Vertices>\n{vertices}</Vertices>\n</Region>\n'
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Annotations MicronsPerPixel="0.252100">\n'
        f'<Annotation Id="1" Name="{layer}" ReadOnly="0" NameReadOnly="0" LineColorReadOnly="0" Incremental="0" '
        'Type="4" LineColor="65280" Visible="1" Selected="1" MarkupImagePath="" MacroName="">\n'
        '<Attributes>\n<Attribute Name="Description" Id="0" Value=""/>\n</Attributes>\n<Regions>\n'
        '<RegionAttributeHeaders>\n<AttributeHeader Id="9999" Name="Region" ColumnWidth="-1"/>\n'
        "</RegionAttributeHeaders>\n" + "".join(regions) + "</Regions>\n<Plots/>\n</Annotation>\n</Annotations>\n"
    )


def make_monuseg(root: Path, rng: np.random.Generator) -> None:
    """MoNuSeg 2018: ``MoNuSeg 2018 Training Data/Tissue Images/TCGA-<site>-<id>-01Z-00-DX1.tif`` (H&E
    tiles) with ``Annotations/<same>.xml`` (Aperio ImageScope outlines, one region per nucleus), and
    ``MoNuSegTestData/`` holding each tile's ``.tif`` beside its ``.xml``; 24 + 6 tiles of 128 px."""
    train = root / "MoNuSeg 2018 Training Data"
    for sub in (train / "Tissue Images", train / "Annotations", root / "MoNuSegTestData"):
        sub.mkdir(parents=True)
    yy, xx = np.mgrid[:128, :128]
    for i in range(30):
        nuclei = []
        image = np.empty((128, 128, 3))
        image[...] = (225, 160, 200) + rng.normal(0, 10, (128, 128, 3))  # eosin pink
        for _ in range(int(rng.integers(14, 24))):
            cy, cx = rng.uniform(8, 120, 2)
            ry, rx = rng.uniform(3, 6, 2)
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
            image[inside] = (95, 60, 150) + rng.normal(0, 12, (int(inside.sum()), 3))  # haematoxylin purple
            nuclei.append((cy, cx, ry, rx))
        stem = f"TCGA-{rng.choice(['18', '21', '38', '49', 'A7'])}-{int(rng.integers(1000, 9999))}-01Z-00-DX1"
        test = i >= 24
        image_path = root / "MoNuSegTestData" / f"{stem}.tif" if test else train / "Tissue Images" / f"{stem}.tif"
        xml_path = image_path.with_suffix(".xml") if test else train / "Annotations" / f"{stem}.xml"
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(image_path)
        xml_path.write_text(_imagescope_xml(nuclei))


def make_realiad(root: Path, rng: np.random.Generator) -> None:
    """Real-IAD: ``realiad_1024/<object>/OK/S0001/<object>_0001_OK_C1_<time>.jpg`` (a folder per part,
    five camera views) and ``NG/<defect>/S0001/…_NG_<defect>_C1_<time>.jpg`` with a ``.png`` mask beside
    each view where the defect shows, each category numbering its parts from S0001; the split lists in
    ``realiad_jsons/<object>.json``. One object, 10 clean and 8 defective parts here."""
    base = root / "realiad_1024" / "audiojack"
    yy, xx = np.mgrid[:80, :96]
    samples = []
    for kind, n in (("OK", 10), ("NG/AK", 4), ("NG/QS", 4)):
        defect = kind.split("/")[-1] if kind != "OK" else ""
        for s in range(1, n + 1):
            folder = base / kind / f"S{s:04d}"
            folder.mkdir(parents=True)
            spot = (int(rng.integers(16, 64)), int(rng.integers(16, 80)), int(rng.integers(4, 8)))
            for cam in range(1, 6):
                name = f"audiojack_{s:04d}_{'NG_' + defect if defect else 'OK'}_C{cam}_20231021{s:02d}{cam:02d}31"
                image = rng.normal(120, 10, (80, 96, 3)) + 30 * (np.abs(xx - 48) < 30)[..., None]
                if defect and cam in (1, 2, 4):
                    cy, cx, r = spot[0] + cam, spot[1] - cam, spot[2]
                    mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
                    image[mask] -= 70
                    Image.fromarray((mask * 255).astype(np.uint8)).save(folder / f"{name}.png")
                Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f"{name}.jpg", quality=90)
                samples.append({"anomaly_class": defect or "OK", "image_path": f"audiojack/{kind}/S{s:04d}/{name}.jpg"})
    (root / "realiad_jsons").mkdir()
    (root / "realiad_jsons" / "audiojack.json").write_text(
        json.dumps({"meta": {"prefix": "", "normal_class": "OK"}, "train": samples[::2], "test": samples[1::2]})
    )
