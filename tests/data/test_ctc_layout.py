"""The Cell Tracking Challenge's 2D layout through ``segops plan``'s detection and the ingest reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from segops.config.schema import ImageSource
from segops.data.decode import decode_file, list_source_files
from segops.data.detection import PlanOverrides
from segops.data.pairing import detect


def _cells(seed: int, n: int) -> np.ndarray:
    """A uint16 instance-id mask of ``n`` separate discs numbered 1..n."""
    ids = np.zeros((48, 64), np.uint16)
    yy, xx = np.ogrid[:48, :64]
    for k in range(1, n + 1):
        y, x = 8 + (k % 3) * 14, 6 + (k // 3) * 14 + seed % 3
        ids[(yy - y) ** 2 + (xx - x) ** 2 < 16] = k
    return ids


def _sequence(root: Path, seq: str, frames: int, gold: tuple[int, ...], silver: bool = False) -> None:
    (root / seq).mkdir(parents=True)
    for t in range(frames):
        ids = _cells(t, 2 + t % 4)
        tifffile.imwrite(root / seq / f"t{t:03d}.tif", (1000 + 2000 * (ids > 0)).astype(np.uint16))
        tra = root / f"{seq}_GT" / "TRA"
        tra.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(tra / f"man_track{t:03d}.tif", (ids > 0).astype(np.uint16))  # markers, not outlines
        if t in gold:
            (root / f"{seq}_GT" / "SEG").mkdir(exist_ok=True)
            tifffile.imwrite(root / f"{seq}_GT" / "SEG" / f"man_seg{t:03d}.tif", ids)
        if silver:
            (root / f"{seq}_ST" / "SEG").mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(root / f"{seq}_ST" / "SEG" / f"man_seg{t:03d}.tif", ids)


def test_frames_pair_with_their_gold_segmentations_and_the_rest_are_unlabelled(tmp_path: Path) -> None:
    _sequence(tmp_path, "01", 6, gold=(0, 3))
    _sequence(tmp_path, "02", 6, gold=(1, 4, 5))
    d = detect(tmp_path)
    assert (d.pairing, d.task, d.mask_kind, d.n_images, d.n_paired) == ("ctc", "instance", "instance-id", 12, 5)
    assert d.source["include"] == ["01/t*.tif", "02/t*.tif"]
    labels = d.source["labels"]
    assert (labels["kind"], labels["replace"]) == ("instance-png", {"/t": "_GT/SEG/man_seg"})
    source = ImageSource.model_validate(d.source)
    listed = [f["rel_path"] for f in list_source_files(source)]
    assert listed == [f"{s}/t{t:03d}.tif" for s in ("01", "02") for t in range(6)]  # no TRA or SEG file is an input
    row = decode_file(str(tmp_path / "02" / "t004.tif"), "02/t004.tif", source)[0]
    assert row["label_uri"] == str(tmp_path / "02_GT" / "SEG" / "man_seg004.tif")
    assert len(np.unique(row["label"])) == 1 + 2  # background and frame 4's 2 cells (2 + 4 % 4), one id each
    unlabelled = decode_file(str(tmp_path / "01" / "t001.tif"), "01/t001.tif", source)[0]
    assert not unlabelled["has_label"]


def test_gold_truth_wins_over_silver_and_silver_alone_is_used(tmp_path: Path) -> None:
    both, silver = tmp_path / "both", tmp_path / "silver"
    _sequence(both, "01", 4, gold=(2,), silver=True)
    _sequence(silver, "01", 4, gold=(), silver=True)
    d = detect(both)
    assert d.source["labels"]["replace"] == {"/t": "_GT/SEG/man_seg"} and d.n_paired == 1
    d = detect(silver)
    assert d.source["labels"]["replace"] == {"/t": "_ST/SEG/man_seg"} and d.n_paired == 4
    assert "silver segmentation" in d.notes["labels"]
    assert detect(silver, PlanOverrides(task="semantic")).task == "semantic"
