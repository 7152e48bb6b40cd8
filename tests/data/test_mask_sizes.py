"""Masks stored at another size than their images (SCR's 1024² lung masks for JSRT's 2048²
radiographs): resized when rescaled (same aspect ratio), a label error otherwise, and planned so."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segops.config.schema import ImageSource
from segops.data.decode import decode_file, list_source_files
from segops.data.mask_files import resized
from segops.data.pairing import detect
from segops.errors import LabelError


def test_a_rescaled_mask_is_resized_by_nearest_neighbour_and_a_crop_is_an_error() -> None:
    mask = np.array([[0, 1, 2], [3, 4, 5]], np.uint8)
    np.testing.assert_array_equal(resized(mask, (4, 6), "m"), np.repeat(np.repeat(mask, 2, axis=0), 2, axis=1))
    np.testing.assert_array_equal(resized(np.repeat(np.repeat(mask, 2, axis=0), 2, axis=1), (2, 3), "m"), mask)
    assert resized(mask, (2, 3), "m") is mask
    rgb = np.stack([mask, mask, mask], axis=-1)  # colour masks keep their channels
    assert resized(rgb, (4, 6), "m").shape == (4, 6, 3)
    with pytest.raises(LabelError, match="another aspect ratio"):
        resized(mask, (4, 3), "m")


def _archive(root: Path, mask_size: tuple[int, int]) -> None:
    """Radiographs of 96x128 px with lung masks saved at ``mask_size`` (w, h)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :128]
    for i in range(8):
        lung = ((yy - 48) / 30) ** 2 + ((xx - 40 - 4 * i) / 20) ** 2 < 1
        image = rng.normal(150, 10, (96, 128)) - 70 * lung
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(root / "images" / f"JPCLN{i:03d}.png")
        small = Image.fromarray((lung * 255).astype(np.uint8)).resize(mask_size, Image.NEAREST)
        small.save(root / "masks" / f"JPCLN{i:03d}.png")


def test_masks_at_half_size_are_planned_resized_and_ingested_at_the_image_size(tmp_path: Path) -> None:
    _archive(tmp_path, (64, 48))
    d = detect(tmp_path)
    assert d.source["labels"]["resize"] is True
    assert (
        "8 of 8 sampled masks are of another size than their images but of the same aspect ratio" in (d.notes["labels"])
    )
    source = ImageSource.model_validate(d.source)
    row = next(
        decode_file(f["path"], f["rel_path"], source)[0]
        for f in list_source_files(source)
        if f["rel_path"] == "JPCLN002.png"
    )
    label = np.asarray(row["label"]).reshape(96, 128)
    yy, xx = np.mgrid[:96, :128]
    truth = ((yy - 48) / 30) ** 2 + ((xx - 48) / 20) ** 2 < 1
    assert label.shape == (96, 128) and set(np.unique(label).tolist()) == {0, 1}
    assert (label.astype(bool) != truth).mean() < 0.02  # a 2x nearest-neighbour round trip: edge pixels only


def test_masks_of_another_aspect_ratio_are_not_resized(tmp_path: Path) -> None:
    """A square mask for a 4:3 image is a crop or another image's mask: no resize, and each file stays a
    label problem that names both sizes."""
    _archive(tmp_path, (64, 64))
    d = detect(tmp_path)
    assert "resize" not in d.source["labels"] and "another size" not in d.notes["labels"]
    source = ImageSource.model_validate(d.source | {"labels": d.source["labels"] | {"resize": True}})
    f = next(iter(list_source_files(source)))
    row = decode_file(f["path"], f["rel_path"], source)[0]
    assert (row["stage"], row["has_label"]) == ("label", False)
    assert "is 64x64 but its image is 128x96: another aspect ratio" in row["error"]


def test_scr_gif_masks_in_a_folder_per_class_at_half_size(tmp_path: Path) -> None:
    """SCR's layout for JSRT radiographs: ``masks/{heart,left lung,right lung}/JPCLN001.gif`` at half
    the image's size. With ``--labels`` on the mask folder: one class per folder, resized."""
    from segops.data.detection import PlanOverrides

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:96, :96]
    shapes = {
        "heart": ((yy - 64) / 14) ** 2 + ((xx - 52) / 16) ** 2 < 1,
        "left lung": ((yy - 44) / 30) ** 2 + ((xx - 68) / 14) ** 2 < 1,
        "right lung": ((yy - 44) / 30) ** 2 + ((xx - 28) / 14) ** 2 < 1,
    }
    (tmp_path / "All247images").mkdir()
    for i in range(1, 7):
        name = f"JPCLN{i:03d}"
        image = rng.normal(160, 10, (96, 96)) - 70 * (shapes["left lung"] | shapes["right lung"])
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(tmp_path / "All247images" / f"{name}.png")
        for organ, mask in shapes.items():
            (tmp_path / "masks" / organ).mkdir(parents=True, exist_ok=True)
            small = Image.fromarray(mask.astype(np.uint8) * 255).resize((48, 48), Image.NEAREST)
            small.convert("P").save(tmp_path / "masks" / organ / f"{name}.gif")
    d = detect(tmp_path, PlanOverrides(labels=tmp_path / "masks"))
    labels = d.source["labels"]
    assert (labels["pattern"], labels["resize"], d.classes) == ("heart/{rel_stem}.gif", True, 4)
    assert labels["class_files"] == {"left lung/{rel_stem}.gif": 2, "right lung/{rel_stem}.gif": 3}
    source = ImageSource.model_validate(d.source)
    f = next(iter(list_source_files(source)))
    label = np.asarray(decode_file(f["path"], f["rel_path"], source)[0]["label"]).reshape(96, 96)
    for k, organ in enumerate(("heart", "left lung", "right lung"), start=1):
        assert ((label == k) != shapes[organ]).mean() < 0.03  # later classes on top; edges from the 2x round trip
