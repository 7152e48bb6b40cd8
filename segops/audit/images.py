"""Overlay pictures of an audit: each of the worst cases' image with both sides' mask outlines.

The image is re-decoded and the outlines drawn by :mod:`segops.outputs.overlays` (as the segment
step's overlay thumbnails are); this module only picks the cases, reads their masks and adds a title
and legend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segops.audit.plots import new_figure, save_figure
from segops.audit.tables import COLOUR_A, COLOUR_B, slug
from segops.errors import DecodeError, SegopsError

#: Pixels across an overlay's image on the page (5.2 inch at 100 dpi): small images are enlarged to
#: about this before outlines are drawn, so outlines stay thin; large ones get thicker outlines.
_DISPLAY_PIXELS = 520

Mask = tuple[np.ndarray | None, str, str]  # class map (H, W) or None when missing, colour, legend label


def plot_overlay(image: np.ndarray, masks: list[Mask], title: str, path: Path) -> Path:
    """An image with mask outlines; ``masks``: (class map (H, W) or None if missing, colour, label).

    Args:
        image: (H, W) or (H, W, 3) float in [0, 1].
    """
    from matplotlib.colors import to_rgb
    from matplotlib.lines import Line2D

    from segops.outputs.overlays import draw_masks

    height, width = image.shape[:2]
    scale = max(1, _DISPLAY_PIXELS // max(height, width))
    thickness = 2 * max(1, round(max(height, width) / _DISPLAY_PIXELS))
    outlines = [(mask, to_rgb(colour)) for mask, colour, _ in masks if mask is not None]
    rgb = draw_masks(image, outlines=outlines, scale=scale, width=thickness)
    fig = new_figure(5.2, 5.2 * height / width + 0.5)
    ax = fig.add_subplot()
    ax.imshow(rgb, interpolation="antialiased")
    handles = []
    for mask, colour, label in masks:
        suffix = " (mask missing)" if mask is None else (" (empty)" if not (mask > 0).any() else "")
        handles.append(Line2D([], [], color=colour, linewidth=2, label=label + suffix))
    ax.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.85)
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    return save_figure(fig, path)


def write_overlays(
    paired: pd.DataFrame, labels: tuple[str, str], folder: Path, worst: int
) -> list[tuple[str | None, str]]:
    """Overlay PNGs of the first ``worst`` paired cases (largest drop first) under ``folder/overlays``.

    Returns:
        per case, (path relative to ``folder`` or None when skipped, a note: why skipped, or what is missing).
    """
    from segops.outputs.overlays import display_image

    out_dir = folder / "overlays"
    for stale in out_dir.glob("*.png") if out_dir.is_dir() else []:
        stale.unlink()  # an earlier audit into this folder: its overlays are not this one's
    results: list[tuple[str | None, str]] = []
    for rank, row in enumerate(paired.head(worst).to_dict("records"), start=1):
        try:
            image = display_image(
                str(row.get("source_uri", "")),
                str(row.get("rel_path", "")),
                str(row["case_id"]),
                int(row.get("frame", 0) or 0),
                str(row.get("modality", "")),
            )
        except (FileNotFoundError, DecodeError) as exc:
            results.append((None, f"skipped: {exc}"))
            continue
        masks, missing = _side_masks(row, labels, image.shape[:2])
        if all(m is None for m, _, _ in masks):
            results.append((None, "skipped: " + "; ".join(missing)))
            continue
        title = f"#{rank} {row.get('rel_path', '')}  Dice A {row['dice_a']:.3f} → B {row['dice_b']:.3f}"
        stem = slug(str(row.get("rel_path") or row["case_id"]))[:48]
        name = f"overlays/{rank:02d}_{stem}_{slug(str(row['case_id']))[-8:]}.png"
        plot_overlay(image, masks, title, folder / name)
        results.append((name, "; ".join(missing)))
    return results


def _side_masks(row: dict[str, Any], labels: tuple[str, str], shape: tuple[int, int]) -> tuple[list[Mask], list[str]]:
    """Both sides' masks of a paired case (None where not readable here), and what is missing."""
    from segops.data.mask_files import read_mask_png

    masks, missing = [], []
    for side, colour, label in (("a", COLOUR_A, labels[0]), ("b", COLOUR_B, labels[1])):
        mask_path = str(row.get(f"mask_path_{side}") or "")
        mask = None
        if mask_path.lower().endswith((".png", ".tif", ".tiff")) and Path(mask_path).is_file():
            try:
                mask = read_mask_png(mask_path, shape)
            except SegopsError as exc:
                missing.append(f"{side.upper()} mask unreadable ({exc})")
        else:
            missing.append(f"{side.upper()} mask not on this machine ({mask_path or 'no path'})")
        masks.append((mask, colour, f"{side.upper()}: {label}"))
    return masks, missing
