"""EM-like cell tilings with dark membranes, labelled as ISBI 2012 stores them (0 = membrane)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from segops.synth.summary import ArchiveSummary

log = logging.getLogger(__name__)


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
