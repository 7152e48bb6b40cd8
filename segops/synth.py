"""Deterministic synthetic archives for tests and demos.

- :func:`make_ct_archive`: CT-like DICOM series (16-bit signed, rescale slope/intercept,
  real geometry and UIDs) with bright ellipsoid "lesions", plus one label PNG per slice.
- :func:`make_inspection_archive`: textured gray/RGB surface photos with thin scratches and
  blob defects, plus binary mask PNGs.
- :func:`make_defect_archive`: grayscale JPEG surface photos, 70 % defect-free, with rare
  defects from 0.2 % to 24 % of the area; anti-aliased mask PNG beside each image (``x.jpg`` + ``x.png``).
- :func:`make_instance_archive`: gray microscopy-like scenes of touching and overlapping
  objects of several classes, with instance-id PNGs, class PNGs and COCO JSON.
- :func:`make_membrane_archive`: EM-like cell tilings with dark membranes, labelled the way
  the ISBI 2012 data is (0 = membrane, 255 = cell interior): a small stand-in for that set.

Same arguments and seed → byte-identical files.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid
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


# --------------------------------------------------------------------------- rare defects (same-folder masks)

#: defect kind → share among defect images; the kinds span ~0.2 % (blowholes) to ~24 % (uneven) of the area
_DEFECT_KINDS = {"blowhole": 0.35, "crack": 0.25, "break": 0.15, "uneven": 0.25}
_SUPERSAMPLE = 4  # masks are drawn at 4x and averaged down: anti-aliased edges (values 1..254)


def make_defect_archive(
    out: str | Path, count: int = 60, seed: int = 0, size: int = 96, defect_free: float = 0.7
) -> ArchiveSummary:
    """Write ``count`` grayscale JPEG surface photos with rare defects, each mask beside its image.

    Layout (as public inspection sets ship it): ``out/<kind>/part-NNNN.jpg`` and the mask
    ``out/<kind>/part-NNNN.png`` (same folder, same stem; ``kind`` is ``free``, ``blowhole``,
    ``crack``, ``break`` or ``uneven``), plus two stray overview figures in the root,
    ``README.png`` and ``dataset.jpg``, that are neither images to segment nor masks.
    A share ``defect_free`` of the images has no defect (an all-zero mask). Defects range from
    small dark blowholes (~0.2-0.6 % of the image) over thin cracks and chipped edges to large
    uneven regions (~8-24 %). Masks are anti-aliased: 0 = intact, 255 = defect, 1..254 on
    edges (binarise at 128). Sides are ``2/3 * size`` to ``size`` pixels.

    Returns:
        ``images`` and ``labels`` are both ``out``; ``n_foreground`` counts defect images.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kinds, shares = list(_DEFECT_KINDS), np.array(list(_DEFECT_KINDS.values()))
    n_fg, thumbs = 0, []
    for i in range(count):
        rng = np.random.default_rng([seed, 30_000 + i])
        h, w = (int(v) for v in rng.integers(round(2 * size / 3), size + 1, 2))
        kind = "free" if rng.random() < defect_free else str(rng.choice(kinds, p=shares / shares.sum()))
        image, mask = _defect_photo(rng, h, w, kind)
        folder = out / kind
        folder.mkdir(exist_ok=True)
        Image.fromarray(image).save(folder / f"part-{i:04d}.jpg", quality=92)
        Image.fromarray(mask).save(folder / f"part-{i:04d}.png")
        n_fg += kind != "free"
        if len(thumbs) < 8:
            thumbs.append(np.asarray(Image.fromarray(image).resize((size, size))))
    _overview(thumbs, size).save(out / "README.png")
    _overview(thumbs[::-1], size).convert("RGB").save(out / "dataset.jpg", quality=85)
    log.info("wrote %d defect photos (%d with defects) to %s", count, n_fg, out)
    return ArchiveSummary(out, out, count, n_fg)


def _defect_photo(rng: np.random.Generator, h: int, w: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) uint8 photo and (H, W) uint8 anti-aliased mask (0..255) of one ``kind``."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    light = rng.uniform(95, 150) + rng.uniform(-0.25, 0.25) * (x - w / 2) + rng.uniform(-0.25, 0.25) * (y - h / 2)
    grain = ndimage.gaussian_filter(rng.normal(0, 1, (h, w)), sigma=(rng.uniform(0.6, 1.2), rng.uniform(2, 5))) * 18
    image = light + grain
    alpha = np.zeros((h, w), np.float32)
    if kind != "free":
        alpha = _defect_alpha(rng, h, w, kind)
        if kind == "uneven":  # a patch of coarser, shifted texture
            coarse = ndimage.gaussian_filter(rng.normal(0, 1, (h, w)), 2.5) * 40
            image = image + alpha * (rng.choice([-1, 1]) * rng.uniform(28, 40) + coarse)
        else:  # holes, cracks and chipped edges are dark
            image = image - alpha * rng.uniform(55, 85)
    image = image + rng.normal(0, 3, (h, w))
    return np.clip(image, 0, 255).astype(np.uint8), np.round(alpha * 255).astype(np.uint8)


def _defect_alpha(rng: np.random.Generator, h: int, w: int, kind: str) -> np.ndarray:
    """Defect coverage in 0..1 per pixel: shapes drawn at 4x resolution, then box-averaged."""
    from PIL import ImageDraw  # local: only the generator draws

    s = _SUPERSAMPLE
    canvas = Image.new("L", (w * s, h * s), 0)
    draw = ImageDraw.Draw(canvas)
    area = h * w
    if kind == "blowhole":
        for _ in range(int(rng.integers(1, 3))):
            r = np.sqrt(rng.uniform(0.0015, 0.003) * area / np.pi) * s
            cx, cy = rng.uniform(0.15, 0.85) * w * s, rng.uniform(0.15, 0.85) * h * s
            draw.ellipse([cx - r, cy - r * rng.uniform(0.7, 1.0), cx + r, cy + r], fill=255)
    elif kind == "crack":
        points = [(rng.uniform(0.2, 0.8) * w * s, rng.uniform(0.2, 0.8) * h * s)]
        for _ in range(int(rng.integers(2, 5))):
            angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(0.08, 0.18) * min(h, w) * s
            points.append((points[-1][0] + length * np.cos(angle), points[-1][1] + length * np.sin(angle)))
        draw.line(points, fill=255, width=int(rng.uniform(1.5, 2.5) * s), joint="curve")
    else:  # break: a chip off one edge; uneven: a large irregular region inside
        fraction = rng.uniform(0.03, 0.07) if kind == "break" else rng.uniform(0.08, 0.24)
        if kind == "break":
            cx, cy = (rng.choice([0.0, 1.0]) * w * s, rng.uniform(0.2, 0.8) * h * s)
            fraction *= 2  # half the polygon falls outside the image
        else:
            cx, cy = rng.uniform(0.35, 0.65) * w * s, rng.uniform(0.35, 0.65) * h * s
        draw.polygon(_wobbly_polygon(rng, cx, cy, np.sqrt(fraction * area / np.pi) * s), fill=255)
    big = np.asarray(canvas, dtype=np.float32) / 255.0
    return big.reshape(h, s, w, s).mean(axis=(1, 3))


def _wobbly_polygon(rng: np.random.Generator, cx: float, cy: float, radius: float) -> list[tuple[float, float]]:
    """A star-shaped polygon of mean radius ``radius`` with a smoothly varying outline."""
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    wobble = sum(rng.uniform(0, 0.18) * np.cos(k * angles + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    radii = radius * (1 + wobble)
    return [(float(cx + r * np.cos(a)), float(cy + r * np.sin(a))) for a, r in zip(angles, radii)]


def _overview(thumbs: list[np.ndarray], size: int) -> Image.Image:
    """A 2 x 4 montage of thumbnails: the kind of figure a dataset's README shows."""
    sheet = np.full((2 * size, 4 * size), 255, np.uint8)
    for k, thumb in enumerate(thumbs[:8]):
        sheet[(k // 4) * size : (k // 4 + 1) * size, (k % 4) * size : (k % 4 + 1) * size] = thumb
    return Image.fromarray(sheet)


# --------------------------------------------------------------------------- instance scenes

#: class index → COCO category name. Cells: bright round bodies with a darker membrane and
#: nucleus; rods: dark elongated capsules; rings: thin bright outlines (a vesicle).
INSTANCE_CLASS_NAMES = {1: "cell", 2: "rod", 3: "ring"}


@dataclass(frozen=True)
class InstanceArchiveSummary:
    """What :func:`make_instance_archive` wrote. Images, instances and classes share file names.

    Attributes:
        images: folder of (H, W) uint8 grayscale PNGs.
        instances: folder of uint16 instance-id PNGs: 0 = background, k = k-th object drawn.
        classes: folder of uint8 class-index PNGs: 0 = background, k = ``class_names[k - 1]``.
        annotations: COCO JSON (RLE masks) of the same visible instances, ``file_name``
            relative to ``images``.
        class_names: the COCO category name of each class, category id = class index.
    """

    images: Path
    instances: Path
    classes: Path
    annotations: Path
    n_images: int
    n_instances: int
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class _Scene:
    image: np.ndarray  # (H, W) uint8
    ids: np.ndarray  # (H, W) uint16 visible instance ids 1..N, in drawing order (later on top)
    classes: tuple[int, ...]  # class of instance k at [k - 1]
    shapes: tuple[np.ndarray, ...]  # full (H, W) bool masks before occlusion, in drawing order


def make_instance_archive(
    out: str | Path, count: int = 40, size: int = 128, seed: int = 0, classes: int = 2
) -> InstanceArchiveSummary:
    """Write ``count`` scenes of 3–8 objects (rarely fewer: one that finds no spot is left out).

    Layout: ``images/scene-NNNN.png`` (gray), ``instances/scene-NNNN.png`` (uint16 ids),
    ``classes/scene-NNNN.png`` (uint8 classes) and ``annotations.json`` (COCO, RLE masks,
    category id = class index). Every scene holds at least one overlapping pair (the second
    object is drawn over the first); later objects are on top, and every object keeps at
    least half its area visible. Each scene shows every class when it has enough objects.

    Args:
        size: image height and width in pixels (object sizes scale with it); at least 48.
        classes: 1–3 classes: cell, rod, ring (see :data:`INSTANCE_CLASS_NAMES`).

    Raises:
        ValueError: ``classes`` or ``size`` out of range.
    """
    if not 1 <= classes <= len(INSTANCE_CLASS_NAMES):
        raise ValueError(f"classes must be 1..{len(INSTANCE_CLASS_NAMES)}, got {classes}")
    if size < 48:
        raise ValueError(f"size must be at least 48 pixels, got {size}")
    out = Path(out)
    images, instances, class_dir = out / "images", out / "instances", out / "classes"
    for folder in (images, instances, class_dir):
        folder.mkdir(parents=True, exist_ok=True)
    names = tuple(INSTANCE_CLASS_NAMES[c] for c in range(1, classes + 1))
    coco: dict = {
        "info": {"description": f"segops synth instances (seed {seed})"},
        "images": [],
        "annotations": [],
        "categories": [{"id": c, "name": n, "supercategory": "object"} for c, n in enumerate(names, start=1)],
    }
    for i in range(count):
        scene = _instance_scene(np.random.default_rng([seed, 20_000 + i]), size, classes)
        name = f"scene-{i:04d}.png"
        Image.fromarray(scene.image).save(images / name)
        Image.fromarray(scene.ids).save(instances / name)
        class_of = np.array((0, *scene.classes), dtype=np.uint8)
        Image.fromarray(class_of[scene.ids]).save(class_dir / name)
        coco["images"].append({"id": i + 1, "file_name": name, "height": size, "width": size})
        coco["annotations"] += _coco_annotations(scene, i + 1, len(coco["annotations"]) + 1)
    annotations = out / "annotations.json"
    annotations.write_text(json.dumps(coco, indent=1))
    n_instances = len(coco["annotations"])
    log.info("wrote %d instance scenes (%d objects) to %s", count, n_instances, out)
    return InstanceArchiveSummary(images, instances, class_dir, annotations, count, n_instances, names)


def _instance_scene(rng: np.random.Generator, size: int, n_classes: int) -> _Scene:
    """One scene; drawn again (same stream) in the rare case that fewer than two objects fit."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    while True:
        n = int(rng.integers(3, 9))
        kinds = rng.permutation([*range(1, n_classes + 1), *rng.integers(1, n_classes + 1, n - n_classes)])
        image = _background(rng, yy, xx)
        ids = np.zeros((size, size), dtype=np.uint16)
        shapes: list[np.ndarray] = []
        objects: list[tuple[float, float, _Object]] = []  # (cy, cx, object)
        for cls in kinds.tolist():
            placed = _place(rng, cls, ids, shapes, objects, yy, xx)
            if placed is None:
                continue
            mask, look, where = placed
            image[mask] = look[mask]
            shapes.append(mask)
            objects.append(where)
            ids[mask] = len(shapes)
        if len(shapes) >= 2:  # the second leans on the first (see _place): an overlapping pair
            break
    image = ndimage.gaussian_filter(image, 0.6) + rng.normal(0, 5, image.shape)
    pixels = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return _Scene(pixels, ids, tuple(o.cls for _, _, o in objects), tuple(shapes))


def _background(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Dim, unevenly lit background with slow blotches: (H, W) float32 around 50..90."""
    size = yy.shape[0]
    level = rng.uniform(60, 80) + rng.uniform(-10, 10) * (xx / size) + rng.uniform(-10, 10) * (yy / size)
    blotches = ndimage.gaussian_filter(rng.normal(0, 1, yy.shape), sigma=size / 16)
    return (level + 8 * blotches / blotches.std()).astype(np.float32)


def _place(
    rng: np.random.Generator,
    cls: int,
    ids: np.ndarray,
    shapes: list[np.ndarray],
    objects: list[tuple[float, float, _Object]],
    yy: np.ndarray,
    xx: np.ndarray,
    attempts: int = 40,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, _Object]] | None:
    """Find a spot for one object of class ``cls``: (mask, appearance, (cy, cx, object)), or None.

    The second object always leans on the first (their masks overlap); later ones lean on a
    random earlier one half the time, else go anywhere. A spot is refused if the object would
    hide more than half of an earlier one, or if too little of it is inside the image.
    """
    size = yy.shape[0]
    scale, margin = size / 128, 0.08 * size
    min_pixels = 20 * scale**2
    areas = [int(s.sum()) for s in shapes]
    for _ in range(attempts):
        obj = _random_object(rng, cls, scale)
        anchor = _anchor(rng, len(shapes))
        if anchor is None:
            cy, cx = rng.uniform(margin, size - margin, 2)
        else:
            ay, ax, other = objects[anchor]
            angle, reach = rng.uniform(0, 2 * np.pi), (other.extent + obj.extent) * rng.uniform(0.45, 0.85)
            cy, cx = ay + reach * np.sin(angle), ax + reach * np.cos(angle)
        if not (margin <= cy <= size - margin and margin <= cx <= size - margin):
            continue
        mask, look = obj.draw(yy, xx, float(cy), float(cx))
        if mask.sum() < min_pixels or (anchor is not None and not (mask & shapes[anchor]).any()):
            continue
        kept = np.bincount(ids[~mask].ravel(), minlength=len(shapes) + 1)[1:]
        if all(k >= max(0.5 * a, min_pixels) for k, a in zip(kept, areas)):
            return mask, look, (float(cy), float(cx), obj)
    return None


def _anchor(rng: np.random.Generator, placed: int) -> int | None:
    """The earlier object the next one leans on: the first for the second, else a random one half the time."""
    if placed == 1:
        return 0
    if placed and rng.random() < 0.5:
        return int(rng.integers(placed))
    return None


@dataclass(frozen=True)
class _Object:
    """One object's look, before it is placed. Lengths in pixels, ``angle`` in radians."""

    cls: int  # 1 cell (ellipse), 2 rod (capsule), 3 ring (disk with a bright rim)
    angle: float
    length: float  # cell/ring: radius along the long axis; rod: length of its core segment
    width: float  # cell/ring: radius across; rod: half its thickness
    contrast: float  # grey levels above (cell, ring) or below (rod) the background
    nucleus: tuple[float, float, float]  # cell: (dy, dx, radius) in units of its radii
    texture_seed: int

    @property
    def extent(self) -> float:
        """A typical radius, for placing objects next to each other."""
        return self.width + self.length / 4 if self.cls == 2 else (self.length + self.width) / 2

    def draw(self, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float) -> tuple[np.ndarray, np.ndarray]:
        """(mask (H, W) bool, appearance (H, W) float32) of the object centred at (cy, cx)."""
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        u = (xx - cx) * cos + (yy - cy) * sin
        v = -(xx - cx) * sin + (yy - cy) * cos
        grain = ndimage.gaussian_filter(np.random.default_rng(self.texture_seed).normal(0, 1, yy.shape), 1.0) * 20
        if self.cls == 2:
            along = np.clip(u, -self.length / 2, self.length / 2)
            rho = np.hypot(u - along, v) / self.width
            look = 70 - self.contrast * (1 - 0.3 * rho**2) + 6 * np.sin(1.3 * u) + 0.5 * grain
        elif self.cls == 1:
            rho = np.hypot(u / self.length, v / self.width)
            dy, dx, radius = self.nucleus
            nucleus = np.hypot(u / self.length - dx, v / self.width - dy) <= radius
            look = 70 + self.contrast * (1 - 0.35 * rho**2) - 40 * (rho > 0.82) - 30 * nucleus + grain
        else:
            rho = np.hypot(u / self.length, v / self.width)
            look = 80 + self.contrast * (rho > 0.7) + 0.5 * grain
        return rho <= 1, look.astype(np.float32)


def _random_object(rng: np.random.Generator, cls: int, scale: float) -> _Object:
    """Size, orientation, contrast and texture of one object of class ``cls`` (sizes × ``scale``)."""
    angle, seed = float(rng.uniform(0, np.pi)), int(rng.integers(2**31))
    if cls == 1:
        radius = rng.uniform(8, 13) * scale
        nucleus = (*rng.uniform(-0.3, 0.3, 2), rng.uniform(0.28, 0.4))
        return _Object(1, angle, radius, radius * rng.uniform(0.7, 1.0), rng.uniform(70, 100), nucleus, seed)
    if cls == 2:
        length, half_width = rng.uniform(18, 32) * scale, rng.uniform(2.2, 3.5) * scale
        return _Object(2, angle, length, half_width, rng.uniform(35, 55), (0.0, 0.0, 0.0), seed)
    radius = rng.uniform(7, 11) * scale
    return _Object(3, angle, radius, radius, rng.uniform(70, 95), (0.0, 0.0, 0.0), seed)


def _coco_annotations(scene: _Scene, image_id: int, first_id: int) -> list[dict]:
    """One COCO annotation (compressed RLE, bbox, area) per visible instance, in drawing order."""
    from pycocotools import mask as mask_utils

    anns = []
    for k, cls in enumerate(scene.classes, start=1):
        mask = scene.ids == k
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        ys, xs = np.nonzero(mask)
        bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
        anns.append(
            {
                "id": first_id + k - 1,
                "image_id": image_id,
                "category_id": cls,
                "iscrowd": 0,
                "area": int(mask.sum()),
                "bbox": bbox,
                "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")},
            }
        )
    return anns


# --------------------------------------------------------------------------- EM membranes


def make_membrane_archive(out: str | Path, count: int = 10, size: int = 128, seed: int = 0) -> ArchiveSummary:
    """Write ``count`` EM-like slices as ``out/images/<k>.png`` and labels as ``out/labels/<k>.png``.

    Each slice tiles the plane with irregular cells (a Voronoi tessellation of jittered seeds,
    warped by a smooth field) separated by dark membranes 2–4 px wide; the cell interiors
    carry organelle-like dark blobs (which are *not* membrane, as in real EM) and noise.
    Labels follow ISBI 2012: 0 = membrane, 255 = cell interior.
    """
    out = Path(out)
    images, labels = out / "images", out / "labels"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        rng = np.random.default_rng([seed, 20_000 + k])
        image, membrane = _membrane_slice(rng, size)
        Image.fromarray(image).save(images / f"{k}.png")
        Image.fromarray(np.where(membrane, 0, 255).astype(np.uint8)).save(labels / f"{k}.png")
    log.info("wrote %d membrane slices to %s", count, out)
    return ArchiveSummary(images, labels, count, count)


def _membrane_slice(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) uint8 image and boolean membrane mask."""
    n_cells = int(rng.integers(size * size // 900, size * size // 500)) + 2
    seeds = rng.uniform(0, size, (n_cells, 2))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    warp = [ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), size / 8) * size / 3 for _ in range(2)]
    py, px = yy + warp[0], xx + warp[1]
    dist = (py[..., None] - seeds[:, 0]) ** 2 + (px[..., None] - seeds[:, 1]) ** 2
    cells = np.argmin(dist, axis=-1)
    edges = np.zeros((size, size), dtype=bool)
    edges[:-1] |= cells[:-1] != cells[1:]
    edges[:, :-1] |= cells[:, :-1] != cells[:, 1:]
    membrane = ndimage.binary_dilation(edges, iterations=int(rng.integers(1, 3)))
    interior = rng.uniform(140, 175, n_cells)[cells]
    image = interior + ndimage.gaussian_filter(rng.normal(0, 12, (size, size)), 1.5)
    blobs = ndimage.gaussian_filter((rng.random((size, size)) < 0.002).astype(np.float32), 2.0) * 600
    image = image - np.clip(blobs, 0, 70)
    image[membrane] -= rng.uniform(55, 75)
    image = ndimage.gaussian_filter(image, 0.8) + rng.normal(0, 6, (size, size))
    return np.clip(image, 0, 255).astype(np.uint8), membrane


def read_back_geometry(path: str | Path) -> dict:
    """Geometry tags of a written slice, for checks: position, spacing, rescale, shape."""
    ds = pydicom.dcmread(str(path))
    return {
        "position": [float(v) for v in ds.ImagePositionPatient],
        "spacing": [float(v) for v in ds.PixelSpacing],
        "intercept": float(ds.RescaleIntercept),
        "shape": ds.pixel_array.shape,
    }
