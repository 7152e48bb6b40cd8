"""Grayscale JPEG surface photos, mostly defect-free, with rare defects and an anti-aliased mask beside each."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from segops.synth.summary import ArchiveSummary

log = logging.getLogger(__name__)

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
