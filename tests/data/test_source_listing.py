"""Which files a source reads: include/exclude globs, and masks stored beside their images."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from segops.config.schema import DicomSource, ImageSource, InstancePngLabels, MaskPngLabels
from segops.data.decode import decode_file, list_source_files
from segops.data.labels import build_resolver


def _image(path: Path, value: int = 0, size: tuple[int, int] = (12, 16), rgb: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (*size, 3) if rgb else size
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)
    return path


def _listed(source: ImageSource) -> list[str]:
    return [f["rel_path"] for f in list_source_files(source)]


def test_include_and_exclude_select_files(tmp_path: Path) -> None:
    for rel in ("good/a.png", "good/sub/b.png", "bad/c.png", "good/README.png", "top.png"):
        _image(tmp_path / rel)
    everything = ImageSource(kind="images", path=tmp_path)
    assert _listed(everything) == ["bad/c.png", "good/README.png", "good/a.png", "good/sub/b.png", "top.png"]
    chosen = ImageSource(kind="images", path=tmp_path, include=("good/**", "*.png"), exclude=("**/README*",))
    assert _listed(chosen) == ["good/a.png", "good/sub/b.png", "top.png"]


def test_same_folder_layout_lists_images_only(tmp_path: Path) -> None:
    """JPEG images + same-stem PNG masks in one tree, and a stray README.png figure."""
    for rel in ("x.jpg", "defects/y.jpg", "defects/z.jpg"):
        _image(tmp_path / rel, 90, rgb=True)
        mask = np.zeros((12, 16), np.uint8)
        mask[2:5, 3:7] = 255
        Image.fromarray(mask).save(tmp_path / Path(rel).with_suffix(".png"))
    _image(tmp_path / "README.png", 200, size=(30, 40), rgb=True)
    labels = MaskPngLabels(kind="mask-png", path=tmp_path, pattern="{rel_stem}.png")
    source = ImageSource(kind="images", path=tmp_path, labels=labels)
    assert _listed(source) == ["README.png", "defects/y.jpg", "defects/z.jpg", "x.jpg"]  # no mask listed
    source = ImageSource(kind="images", path=tmp_path, labels=labels, exclude=("**/README*",))
    files = list_source_files(source)
    assert [f["rel_path"] for f in files] == ["defects/y.jpg", "defects/z.jpg", "x.jpg"]
    rows = [row for f in files for row in decode_file(f["path"], f["rel_path"], source)]
    assert [(r["status"], r["has_label"], int(r["label"].sum())) for r in rows] == [("ok", True, 12)] * 3
    resolver = build_resolver(labels)  # the masks are still labels; the images are not "unmatched labels"
    assert resolver.all_label_keys() == {r["label_uri"] for r in rows} | {str((tmp_path / "README.png").resolve())}


def test_mask_suffix_layout(tmp_path: Path) -> None:
    for rel in ("a.png", "sub/b.png"):
        _image(tmp_path / rel, 50)
        _image(tmp_path / rel.replace(".png", "_mask.png"), 255)
    _image(tmp_path / "lonely_mask.png", 7)  # no lonely.png beside it: an image whose name ends in _mask
    labels = MaskPngLabels(kind="mask-png", path=tmp_path, pattern="{rel_dir}/{stem}_mask.png")
    source = ImageSource(kind="images", path=tmp_path, labels=labels)
    files = list_source_files(source)
    assert [f["rel_path"] for f in files] == ["a.png", "lonely_mask.png", "sub/b.png"]
    (row,) = decode_file(files[2]["path"], "sub/b.png", source)
    assert row["has_label"] and row["label_uri"] == str((tmp_path / "sub" / "b_mask.png").resolve())
    assert int(row["label"].sum()) == 12 * 16


def test_masks_in_a_folder_inside_the_source_and_instance_class_masks(tmp_path: Path) -> None:
    _image(tmp_path / "p" / "q.jpg", rgb=True)
    _image(tmp_path / "masks" / "p" / "q_ids.png")
    _image(tmp_path / "masks" / "p" / "q_cls.png")
    _image(tmp_path / "masks" / "orphan_ids.png")  # names no image: listed, as the source reads all images
    labels = InstancePngLabels(
        kind="instance-png", path=tmp_path / "masks", pattern="{rel_stem}_ids.png", classes_pattern="{rel_stem}_cls.png"
    )
    source = ImageSource(kind="images", path=tmp_path, labels=labels)
    assert _listed(source) == ["masks/orphan_ids.png", "p/q.jpg"]


def test_masks_outside_the_source_do_not_hide_images(tmp_path: Path) -> None:
    _image(tmp_path / "img" / "x.jpg")
    _image(tmp_path / "img" / "x.png")  # two images with one stem; the labels live elsewhere
    (tmp_path / "lbl").mkdir()
    source = ImageSource(
        kind="images", path=tmp_path / "img", labels=MaskPngLabels(kind="mask-png", path=tmp_path / "lbl")
    )
    assert _listed(source) == ["x.jpg", "x.png"]


@pytest.mark.parametrize("bad", ["/abs/**", "", "a\\b.png"])
def test_glob_patterns_must_be_relative_posix(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValidationError, match="is not a relative POSIX glob"):
        DicomSource(kind="dicom", path=tmp_path, exclude=(bad,))
