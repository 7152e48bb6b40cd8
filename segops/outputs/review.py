"""The review queue: every segmented case ranked by its ``risk`` (:mod:`segops.engine.risk`), and a
page of the riskiest ones as overlay thumbnails.

``review.parquet`` / ``review.csv`` hold one row per segmented case, riskiest first, with the
reasons in words; ``review/index.html`` shows the top N with their thumbnail (prediction tinted
red, truth outlined green where there is one), risk, reasons and relative links to the mask and the
source file. A case is *flagged* when its risk reaches the step's ``review.flag_risk``.
"""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segops.engine.risk import RISK_FLAG_COLUMNS, RISK_FLOAT_COLUMNS
from segops.outputs.atomic import atomic_write, atomic_write_text
from segops.outputs.storage import is_uri

log = logging.getLogger(__name__)

#: Columns of the review table, in order (signals after the reasons; ``dice`` where labelled).
REVIEW_COLUMNS = (
    "rank",
    "case_id",
    "risk",
    "flagged",
    "risk_reasons",
    "source_uri",
    "rel_path",
    "frame",
    "mask_path",
    "dice",
    *(c for c in RISK_FLOAT_COLUMNS if c != "risk"),
    *RISK_FLAG_COLUMNS,
)
THUMBS_DIR = "thumbs"
PAGE = "index.html"

#: (H, W, 3) uint8 overlay of a review row, or None when it has no picture (a volume, an image
#: that no longer decodes).
Thumbnail = Callable[[dict[str, Any]], np.ndarray | None]


def build_review(results: pd.DataFrame, flag_risk: float) -> pd.DataFrame:
    """The review table of ``results`` (result rows of segmented cases): riskiest first (cases
    without a risk last, then by path), ``rank`` from 1, ``flagged`` = risk >= ``flag_risk``."""
    df = results.copy()
    for column in REVIEW_COLUMNS:
        if column not in df.columns:
            df[column] = float("nan") if column not in ("risk_reasons", "mask_path", "source_uri") else ""
    df = df.sort_values(["risk", "rel_path", "frame"], ascending=[False, True, True], na_position="last")
    df["flagged"] = (df["risk"] >= flag_risk).fillna(False).astype(bool)
    df["rank"] = np.arange(1, len(df) + 1)
    return df[list(REVIEW_COLUMNS)].reset_index(drop=True)


def write_review_page(review: pd.DataFrame, top: int, out_dir: Path, thumbnail: Thumbnail) -> Path:
    """``out_dir/index.html`` of the first ``top`` rows of ``review`` (:func:`build_review`), their
    thumbnails in ``out_dir/thumbs/``; returns the page. Links are relative to ``out_dir`` (URIs,
    e.g. masks on S3, stay absolute), so the folder can be moved with the run folder."""
    rows = []
    for row in review.head(top).to_dict("records"):
        picture = thumbnail(row)
        thumb = None
        if picture is not None:
            thumb = f"{THUMBS_DIR}/{int(row['rank']):04d}_{_safe(str(row['case_id']))[-16:]}.png"
            atomic_write(out_dir / thumb, lambda tmp, rgb=picture: _save_png(rgb, tmp))
        rows.append(_row_html(row, thumb, out_dir))
    flagged = int(review["flagged"].sum())
    text = _PAGE.format(
        shown=min(top, len(review)),
        total=len(review),
        flagged=flagged,
        rows="\n".join(rows),
    )
    return atomic_write_text(out_dir / PAGE, text)


def _row_html(row: dict[str, Any], thumb: str | None, out_dir: Path) -> str:
    picture = f'<img src="{html.escape(thumb)}" alt="overlay">' if thumb else "<em>no picture</em>"
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in str(row["risk_reasons"]).split("; ") if r)
    dice = row.get("dice")
    dice_text = "" if dice is None or pd.isna(dice) else f"<br>Dice {dice:.3f}"
    links = " · ".join(
        f'<a href="{html.escape(_link(path, out_dir))}">{name}</a>'
        for name, path in (("mask", row["mask_path"]), ("source", row["source_uri"]))
        if path
    )
    return (
        f'<tr class="{"flagged" if row["flagged"] else ""}"><td>{int(row["rank"])}</td><td>{picture}</td>'
        f"<td>{row['risk']:.2f}{' ⚑' if row['flagged'] else ''}{dice_text}</td>"
        f"<td>{html.escape(str(row['rel_path']))} (frame {row['frame']})<br><small>{html.escape(str(row['case_id']))}"
        f"</small><br>{links}</td><td><ul>{reasons or '<li>nothing notable</li>'}</ul></td></tr>"
    )


def _link(path: str, out_dir: Path) -> str:
    """``path`` relative to ``out_dir`` (a URI as is)."""
    if is_uri(path):
        return path
    try:
        return Path(os.path.relpath(Path(path).resolve(), out_dir.resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return Path(path).resolve().as_uri()


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def _save_png(rgb: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(rgb).save(path, format="PNG")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>segops review queue</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; }}
td {{ border-top: 1px solid #ccc; padding: 0.4em; vertical-align: top; }}
img {{ width: 256px; image-rendering: pixelated; }}
tr.flagged td:first-child {{ border-left: 4px solid #d33; }}
</style></head><body>
<h1>Review queue</h1>
<p>The {shown} riskiest of {total} segmented cases; {flagged} flagged (⚑). Prediction tinted red,
truth (where labelled) outlined green. Risk and reasons: see segops.engine.risk.</p>
<table>
<tr><th>#</th><th>overlay</th><th>risk</th><th>case</th><th>reasons</th></tr>
{rows}
</table></body></html>
"""
