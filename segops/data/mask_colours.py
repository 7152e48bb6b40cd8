"""Colour-coded masks (CamVid's ``class_dict.csv`` colours, VOC's palette PNGs saved as RGB): the colours
``segops plan`` finds in sampled masks, their classes, and the class map of one stored colour frame."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from segops.data.mask_kinds import as_single_channel
from segops.errors import LabelError, PlanError

log = logging.getLogger(__name__)

#: Most unlisted pixels a colour mask may hold (anti-aliased or JPEG edges between listed colours,
#: read as the nearest listed colour); more means the list misses a class.
MAX_UNLISTED_SHARE = 0.05
#: Most class colours ``segops plan`` reads from colour masks.
MAX_COLOUR_CLASSES = 32


def _rgb_and_opaque(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A stored mask frame as (H, W, 3) uint8 colours and an (H, W) "not transparent" mask."""
    if frame.ndim == 2:
        frame = frame[..., None]
    alpha = frame.shape[2] in (2, 4)
    colour = frame[..., :-1] if alpha else frame
    rgb = np.repeat(colour, 3, axis=2) if colour.shape[2] == 1 else colour[..., :3]
    opaque = frame[..., -1] > 0 if alpha else np.ones(frame.shape[:2], bool)
    return np.clip(rgb, 0, 255).astype(np.uint8), opaque


def _packed(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def colour_classes(frame: np.ndarray, colors: dict[str, int], where: str) -> np.ndarray:
    """A colour-coded mask → (H, W) uint8 class map through ``colors`` (``#rrggbb`` → class).

    Transparent pixels are background (0). Pixels of an unlisted colour (anti-aliased or JPEG
    edges) take the class of the nearest listed colour, up to :data:`MAX_UNLISTED_SHARE` of the
    mask.

    Raises:
        LabelError: more unlisted pixels than that, naming the commonest unlisted colours.
    """
    rgb, opaque = _rgb_and_opaque(frame)
    keys = np.array([int(k[1:], 16) for k in colors], np.int64)
    classes = np.array(list(colors.values()), np.uint8)
    packed = _packed(rgb)
    order = np.argsort(keys)
    pos = np.clip(np.searchsorted(keys[order], packed), 0, len(keys) - 1)
    listed = keys[order][pos] == packed
    out = classes[order][pos]
    stray = ~listed & opaque
    if stray.any():
        if stray.mean() > MAX_UNLISTED_SHARE:
            values, counts = np.unique(packed[stray], return_counts=True)
            common = [f"#{v:06x}" for v in values[np.argsort(-counts)][:5]]
            raise LabelError(
                f"colour mask {where}: {stray.mean():.1%} of its pixels have colours labels.colors does not list "
                f"(commonest {', '.join(common)}); add them to labels.colors with their class"
            )
        table = np.stack([(keys >> 16) & 255, (keys >> 8) & 255, keys & 255], axis=1).astype(np.float32)
        distance = ((rgb[stray][:, None, :].astype(np.float32) - table[None]) ** 2).sum(-1)
        out[stray] = classes[distance.argmin(1)]
    out[~opaque] = 0
    return out


def is_colour_mask(path: Path) -> bool:
    """Whether a mask file is a colour image that :func:`as_single_channel` cannot read as gray."""
    try:
        with Image.open(path) as img:
            return img.mode not in ("P", "PA") and as_single_channel(np.asarray(img)) is None
    except (UnidentifiedImageError, OSError):  # a .mat file too: never colour
        return False


def colour_census(paths: list[Path]) -> dict[str, tuple[int, int, int]]:
    """Colour → (masks holding it, pixels, pixels in a 2x2 block of that one colour) over ``paths``
    (transparent pixels count as ``#000000``). A class colour fills regions, so has block pixels;
    the blends of anti-aliased edges mostly do not."""
    found: dict[int, list[int]] = {}
    for path in paths:
        try:
            with Image.open(path) as img:
                rgb, opaque = _rgb_and_opaque(np.asarray(img))
        except (UnidentifiedImageError, OSError) as exc:
            log.warning("cannot read mask %s: %s", path, exc)
            continue
        packed = np.where(opaque, _packed(rgb), 0)
        block = (packed[:-1, :-1] == packed[1:, :-1]) & (packed[:-1, :-1] == packed[:-1, 1:])
        block &= packed[:-1, :-1] == packed[1:, 1:]
        values, counts = np.unique(packed, return_counts=True)
        in_blocks = dict(zip(*np.unique(packed[:-1, :-1][block], return_counts=True)))
        for v, c in zip(values.tolist(), counts.tolist()):
            entry = found.setdefault(v, [0, 0, 0])
            entry[0], entry[1], entry[2] = entry[0] + 1, entry[1] + c, entry[2] + int(in_blocks.get(v, 0))
    return {f"#{v:06x}": (m, p, b) for v, (m, p, b) in sorted(found.items())}


def classify_colours(census: dict[str, tuple[int, int, int]]) -> tuple[dict[str, Any], str, int, str, str]:
    """``labels.colors`` for colour-coded masks: the commonest colour (by pixels) is background (0),
    every other colour that fills a 2x2 block somewhere a class, numbered by pixels, most first;
    other colours (edge blends) are read as the nearest class colour.

    Raises:
        PlanError: more than :data:`MAX_COLOUR_CLASSES` class colours (not a mask, or a photo).
    """
    filled = sorted((c for c, (_, _, b) in census.items() if b >= 4), key=lambda c: -census[c][1])
    if len(filled) > MAX_COLOUR_CLASSES + 1:
        raise PlanError(
            f"masks are colour images with {len(filled)} colours that fill regions; expected a few class colours "
            "(are they photos?); give --labels FOLDER with class-index masks"
        )
    if len(filled) < 2:
        raise PlanError("masks are colour images but hold one colour: no class to learn")
    colors = {c: i for i, c in enumerate(filled)}
    shown = ", ".join(f"{c} → {i}" for c, i in list(colors.items())[:8])
    return (
        {"kind": "mask-png", "colors": colors},
        "semantic",
        len(colors),
        "colour-coded",
        f"colour-coded masks: {shown} (background the commonest colour)",
    )
