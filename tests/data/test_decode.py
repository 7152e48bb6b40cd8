from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from pydicom.data import get_testdata_file

from segops.config.schema import DicomSource, ImageSource, MaskPngLabels
from segops.data.decode import decode_file, list_source_files
from segops.data.records import META_COLUMNS, quarantine_table


def _dicom_source(root: Path, labels: Path | None = None) -> DicomSource:
    lbl = MaskPngLabels(kind="mask-png", path=labels) if labels else None
    return DicomSource(kind="dicom", path=root, labels=lbl)


def test_rows_have_the_documented_layout(ct_archive: Path) -> None:
    source = _dicom_source(ct_archive / "images", ct_archive / "labels")
    files = list_source_files(source)
    assert len(files) == 18 and files[0]["rel_path"] == "series-000/slice-0000.dcm"
    (row,) = decode_file(files[0]["path"], files[0]["rel_path"], source)
    assert set(row) == set(META_COLUMNS) | {"image", "label"}
    assert row["status"] == "ok" and row["has_label"]
    assert row["label"].shape == row["image"].shape[1:] and row["label"].max() <= 1


def test_missing_label_means_unlabelled_not_error(ct_archive: Path, tmp_path: Path) -> None:
    source = _dicom_source(ct_archive / "images", tmp_path)  # empty label folder
    path = next((ct_archive / "images").rglob("*.dcm"))
    (row,) = decode_file(str(path), "series-000/slice-0000.dcm", source)
    assert row["status"] == "ok" and not row["has_label"] and row["label"].size == 0


def test_bad_files_become_quarantine_or_skip_rows(tmp_path: Path) -> None:
    source = _dicom_source(tmp_path)
    (garbage,) = decode_file(str(_write(tmp_path / "x.dcm", b"not dicom at all")), "x.dcm", source)
    assert garbage["status"] == "quarantined" and garbage["stage"] == "read"
    assert garbage["error_type"] == "DecodeError" and "not a DICOM file" in garbage["error"]
    (truncated,) = decode_file(get_testdata_file("MR_truncated.dcm"), "MR_truncated.dcm", source)
    assert truncated["status"] == "quarantined" and "without complete Pixel Data: truncated" in truncated["error"]
    (plan,) = decode_file(get_testdata_file("rtplan.dcm"), "rtplan.dcm", source)
    assert plan["status"] == "skipped" and plan["error_type"] == "NoPixelDataError"


def test_label_of_wrong_size_leaves_the_image_unlabelled_and_says_why(tmp_path: Path) -> None:
    images, labels = tmp_path / "img", tmp_path / "lbl"
    images.mkdir()
    labels.mkdir()
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(images / "a.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(labels / "a.png")
    source = ImageSource(kind="images", path=images, labels=MaskPngLabels(kind="mask-png", path=labels))
    (row,) = decode_file(str(images / "a.png"), "a.png", source)
    assert (row["status"], row["has_label"], row["stage"]) == ("ok", False, "label")  # still segmented
    assert "is 10x10 but its image is 30x20" in row["error"]
    (listed,) = quarantine_table(pd.DataFrame([row])).to_dict("records")
    assert (listed["status"], listed["stage"], listed["rel_path"]) == ("unlabelled", "label", "a.png")


def test_inspection_png_gray_and_rgb(inspection_archive: Path) -> None:
    source = ImageSource(
        kind="images",
        path=inspection_archive / "images",
        labels=MaskPngLabels(kind="mask-png", path=inspection_archive / "labels"),
    )
    channels = set()
    for f in list_source_files(source):
        (row,) = decode_file(f["path"], f["rel_path"], source)
        assert row["status"] == "ok" and row["has_label"]
        assert not row["spacing_known"]  # a photo has no pixel spacing
        channels.add(row["channels"])
    assert channels == {1, 3}


def test_hidden_files_and_other_suffixes_are_not_listed(tmp_path: Path) -> None:
    (tmp_path / ".hidden").mkdir()
    _write(tmp_path / ".hidden" / "a.png", b"x")
    _write(tmp_path / "notes.txt", b"x")
    _write(tmp_path / "b.png", b"x")
    source = ImageSource(kind="images", path=tmp_path)
    assert [f["rel_path"] for f in list_source_files(source)] == ["b.png"]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_listing_entries_split_the_tree_without_listing_it_all(tmp_path: Path) -> None:
    from segops.data.decode import entry_files, listing_entries

    for i in range(130):
        _write(tmp_path / f"loose-{i:03d}.png", b"x")
    for p in range(3):
        for s in range(2):
            folder = tmp_path / f"patient{p}" / f"study{s}"
            folder.mkdir(parents=True)
            for k in range(5):
                _write(folder / f"img{k}.png", b"x")
    source = ImageSource(kind="images", path=tmp_path)
    entries = listing_entries(source, min_entries=4, chunk=64)
    loose = [e for e in entries if e["files"]]
    subtrees = [e["dir"] for e in entries if not e["files"]]
    assert [len(e["files"]) for e in loose] == [64, 64, 2]
    assert subtrees == ["patient0", "patient1", "patient2"]  # enough units: not opened further
    listed = sorted(f["rel_path"] for e in entries for f in entry_files(source, e))
    assert listed == sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png"))
    deeper = listing_entries(source, min_entries=1000, chunk=64)
    assert sorted(e["dir"] for e in deeper if not e["files"]) == []  # whole tree opened: only file chunks
    assert sum(len(e["files"]) for e in deeper) == 130 + 30


def test_a_photo_is_read_as_its_exif_orientation_shows_it(tmp_path: Path) -> None:
    """A phone's portrait photo is stored landscape with EXIF Orientation 6; its mask was drawn upright."""
    images, labels = tmp_path / "img", tmp_path / "lbl"
    images.mkdir()
    labels.mkdir()
    upright = np.zeros((40, 24), np.uint8)
    upright[2:10, 3:7] = 200  # a mark near the top left as shown
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(images / "a.jpg", exif=exif, quality=95)
    Image.fromarray((upright > 0).astype(np.uint8)).save(labels / "a.png")
    source = ImageSource(kind="images", path=images, labels=MaskPngLabels(kind="mask-png", path=labels))
    (row,) = decode_file(str(images / "a.jpg"), "a.jpg", source)
    assert row["status"] == "ok" and row["has_label"]
    image = np.asarray(row["image"]).reshape(row["channels"], row["height"], row["width"])[0]
    assert image.shape == (40, 24) and image[2:10, 3:7].mean() > 150 > image[20:, 12:].mean()


def test_a_float_image_with_nan_pixels_is_quarantined_saying_so(tmp_path: Path) -> None:
    depth = np.full((12, 16), 3.5, np.float32)
    depth[2:4, 5:9] = np.nan  # a depth sensor's missing points
    Image.fromarray(depth).save(tmp_path / "scan.tif")
    Image.fromarray(np.full((12, 16), 2.0, np.float32)).save(tmp_path / "fine.tif")
    source = ImageSource(kind="images", path=tmp_path)
    (row,) = decode_file(str(tmp_path / "scan.tif"), "scan.tif", source)
    assert (row["status"], row["stage"]) == ("quarantined", "read")
    assert "8 pixel(s) are NaN or infinite" in row["error"] and "replace them" in row["error"]
    (ok,) = decode_file(str(tmp_path / "fine.tif"), "fine.tif", source)
    assert ok["status"] == "ok"


def test_an_image_source_groups_its_images_by_file_folder_or_pattern(tmp_path: Path) -> None:
    """The split group of each record: the file by default (a TIFF's pages together), its folder
    with ``group_by: folder``, the captured text of a pattern (an unmatched file its own group)."""
    from segops.data.images import image_group
    from segops.data.records import path_case_id

    for rel in ("kos01/Part0.png", "kos01/Part1.png", "kos02/Part0.png", "loose.png", "p7_s3.png"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((8, 8), 9, np.uint8)).save(tmp_path / rel)

    def groups(group_by: str) -> dict[str, str]:
        source = ImageSource(kind="images", path=tmp_path, group_by=group_by)
        rows = [r for f in list_source_files(source) for r in decode_file(f["path"], f["rel_path"], source)]
        return {r["rel_path"]: r["group_id"] for r in rows}

    assert groups("file") == {rel: path_case_id(rel) for rel in groups("file")}
    assert groups("folder") == {
        "kos01/Part0.png": "kos01",
        "kos01/Part1.png": "kos01",
        "kos02/Part0.png": "kos02",
        "loose.png": ".",
        "p7_s3.png": ".",
    }
    by_part = groups(r"Part(\d)")
    assert by_part["kos01/Part0.png"] == by_part["kos02/Part0.png"] == "re:0" and by_part["kos01/Part1.png"] == "re:1"
    assert by_part["loose.png"] == path_case_id("loose.png")  # no match: its own group
    assert image_group("p7_s3.png", r"^p(\d+)_") == "re:7" and image_group("loose.png", r"^p(\d+)_") is None
