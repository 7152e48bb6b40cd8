"""The review queue: ranking, flags, and a page whose pictures and links exist."""

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from segops.outputs.overlays import overlay_rgb
from segops.outputs.review import REVIEW_COLUMNS, build_review, write_review_page


class _Page(HTMLParser):
    """Rows (``tr`` with a class attribute), image sources and link targets of the review page."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and "class" in a:
            self.rows.append(a["class"] or "")
        elif tag == "img":
            self.images.append(a["src"])
        elif tag == "a":
            self.links.append(a["href"])


def _results(tmp_path: Path) -> pd.DataFrame:
    """Four segmented cases with masks and sources on disk; case c is a volume (no picture)."""
    rows = []
    for name, risk, reasons in (
        ("a", 0.4, ""),
        ("b", 2.5, "empty prediction, but 95% of training images had foreground; uncertain boundary (0.61)"),
        ("c", 1.2, "uncertain foreground (mean entropy 0.55)"),
        ("d", float("nan"), ""),
    ):
        source = tmp_path / "archive" / f"{name}.png"
        source.parent.mkdir(exist_ok=True)
        source.write_bytes(b"source")
        mask = tmp_path / "run" / "masks" / (f"{name}.nii.gz" if name == "c" else f"{name}.png")
        mask.parent.mkdir(parents=True, exist_ok=True)
        if name == "c":
            mask.write_bytes(b"nifti")
        else:
            Image.fromarray(np.eye(8, dtype=np.uint8)).save(mask)
        rows.append(
            {
                "case_id": f"case-{name}",
                "source_uri": str(source),
                "rel_path": f"{name}.png",
                "frame": 0,
                "mask_path": str(mask),
                "risk": risk,
                "risk_reasons": reasons,
                "dice": 0.3 if name == "b" else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def test_cases_are_ranked_by_risk_and_flagged_at_the_threshold(tmp_path: Path) -> None:
    review = build_review(_results(tmp_path), flag_risk=1.0)
    assert list(review.columns) == list(REVIEW_COLUMNS)
    assert list(review["case_id"]) == ["case-b", "case-c", "case-a", "case-d"]  # no risk: last
    assert list(review["rank"]) == [1, 2, 3, 4]
    assert list(review["flagged"]) == [True, True, False, False]
    assert review["entropy_fg"].isna().all()  # signals absent from the input stay empty, not invented


def test_the_page_renders_the_top_cases_with_existing_pictures_and_links(tmp_path: Path) -> None:
    review = build_review(_results(tmp_path), flag_risk=1.0)
    asked = []

    def thumbnail(row: dict) -> np.ndarray | None:
        asked.append(row["case_id"])
        if not row["mask_path"].endswith(".png"):
            return None  # a volume: no picture
        mask = np.asarray(Image.open(row["mask_path"]))
        return overlay_rgb(np.full(mask.shape, 0.5), mask)

    out_dir = tmp_path / "run" / "review"
    page = write_review_page(review, top=3, out_dir=out_dir, thumbnail=thumbnail)
    assert Path(page) == out_dir / "index.html" and asked == ["case-b", "case-c", "case-a"]
    parser = _Page()
    text = Path(page).read_text(encoding="utf-8")
    parser.feed(text)
    assert parser.rows == ["flagged", "flagged", ""]
    assert len(parser.images) == 2  # b and a; c is a volume
    for src in parser.images:
        assert not Path(src).is_absolute() and (out_dir / src).is_file()
        assert Image.open(out_dir / src).size == (8, 8)
    assert len(parser.links) == 6  # mask and source of each row
    for href in parser.links:
        assert not Path(href).is_absolute() and (out_dir / href).resolve().is_file()
    assert "../masks/b.png" in parser.links and "../../archive/b.png" in parser.links
    assert "empty prediction, but 95% of training images had foreground" in text
    assert "2 flagged" in text and "The 3 riskiest of 4" in text
