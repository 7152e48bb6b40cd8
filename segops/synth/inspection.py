"""Textured gray/RGB surface photos with thin scratches and blob defects, and binary mask PNGs."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from segops.synth.summary import ArchiveSummary

log = logging.getLogger(__name__)


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
