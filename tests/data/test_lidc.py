"""LIDC-IDRI XML nodule outlines: the readers' consensus on each slice, holes, point marks,
unlabelled series, the plan's detection in TCIA's layout, and malformed files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid

from segops.config.schema import DicomSource, LidcLabels
from segops.data.dicom import read_dicom
from segops.data.labels import build_resolver, declared_label_rows
from segops.data.pairing import detect
from segops.errors import LabelError

from .lidc_archive import Outline, Reader, rectangle, write_lidc_xml
from .rtstruct_archive import write_ct_series


def _box(y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    """The rectangle's pixels, edges included, on the 64x64 slice (rows y0..y1, columns x0..x1)."""
    out = np.zeros((64, 64), bool)
    out[y0 : y1 + 1, x0 : x1 + 1] = True
    return out


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, list, list]:
    """TCIA's layout: series ``a`` (4 slices) with its reading file in its folder, series ``b``
    (2 slices) without one, and a chest X-ray reading file (``IdriReadMessage``) elsewhere."""
    study, frame = generate_uid(), generate_uid()
    root = tmp_path / "LIDC-IDRI" / "LIDC-IDRI-0001" / "01-01-2000-NA-30178"
    a = write_ct_series(root / "3000566.000000-NA-03192", 4, study, frame)
    b = write_ct_series(root / "3000567.000000-NA-03193", 2, study, frame)
    s1, s2 = a[1].SOPInstanceUID, a[2].SOPInstanceUID
    hole = Outline(s1, rectangle(14, 14, 16, 16), inclusion=False)
    readers = [
        Reader([[Outline(s1, rectangle(10, 10, 20, 20)), hole, Outline(s2, rectangle(10, 10, 20, 20))]]),
        Reader([[Outline(s1, rectangle(10, 12, 20, 22)), hole]], [(s2, 40, 40)]),  # shifted 2 rows down
        Reader([[Outline(s1, rectangle(40, 40, 50, 50))], [Outline(s2, [(30, 30)])]]),  # alone; a < 3 mm point
        Reader(),  # saw nothing: votes background
    ]
    write_lidc_xml(root / "3000566.000000-NA-03192" / "069.xml", a[0].SeriesInstanceUID, readers)
    write_lidc_xml(tmp_path / "LIDC-IDRI" / "cxr" / "1.xml", "1.2.3", [Reader()], root_tag="IdriReadMessage")
    return tmp_path / "LIDC-IDRI", a, b


def _records(folder: Path) -> list:
    return [r for p in sorted(folder.glob("*.dcm")) for r in read_dicom(p, p.name)]


def test_each_slice_is_the_readers_consensus_with_holes_and_no_points(archive) -> None:
    root, a, b = archive
    resolver = pickle.loads(pickle.dumps(build_resolver(LidcLabels(kind="lidc-xml", path=root))))
    series_dir = root / "LIDC-IDRI-0001" / "01-01-2000-NA-30178"
    records = {r.instance_number - 1: r for r in _records(series_dir / "3000566.000000-NA-03192")}
    xml = (series_dir / "3000566.000000-NA-03192" / "069.xml").resolve()
    uri = f"{xml}#series={a[0].SeriesInstanceUID}"
    found = {k: resolver.label_for(r) for k, r in records.items()}
    assert {f[1] for f in found.values()} == {uri}
    # slice 1: readers 0 and 1 agree on rows 12..20 of columns 10..20 but for the hole; reader 2 alone elsewhere
    expected = _box(12, 10, 20, 20) & ~_box(14, 14, 16, 16)
    assert np.array_equal(found[1][0], expected.astype(np.uint8))
    assert not found[2][0].any()  # one reader's outline (2 of 4 needed); a point and a non-nodule locus: not drawn
    assert not found[0][0].any() and not found[3][0].any()  # labelled, all background
    assert [resolver.label_for(r) for r in _records(series_dir / "3000567.000000-NA-03193")] == [None, None]
    assert resolver.all_label_keys() == {uri}
    assert declared_label_rows(resolver) == [{"label_uri": uri, "label_values": [1], "label_pixels": [1]}]
    assert resolver.lidc.marks == 2

    anyone = build_resolver(LidcLabels(kind="lidc-xml", path=root, agreement=0.25, class_id=3))
    union = _box(10, 10, 22, 20) & ~_box(14, 14, 16, 16) | _box(40, 40, 50, 50)
    assert np.array_equal(anyone.label_for(records[1])[0], 3 * union.astype(np.uint8))
    assert np.array_equal(anyone.label_for(records[2])[0], 3 * _box(10, 10, 20, 20).astype(np.uint8))


def test_plan_finds_the_reading_files_in_tcias_layout(archive) -> None:
    root, _, _ = archive
    d = detect(root)
    assert d.pairing == "dicom-lidc" and d.mask_kind == "lidc-xml" and d.classes == 2
    study = root / "LIDC-IDRI-0001/01-01-2000-NA-30178"
    assert d.source["labels"] == {"kind": "lidc-xml", "path": str(study / "3000566.000000-NA-03192")}  # not cxr/
    assert d.source["path"] == str(study)
    assert (d.n_images, d.n_paired) == (6, 4) and d.class_names == {1: "nodule"}
    assert "1 LIDC reading file(s)" in d.notes["labels"]
    assert DicomSource(**d.source).labels == LidcLabels(kind="lidc-xml", path=Path(d.source["labels"]["path"]))


def test_plan_leaves_the_chest_x_rays_beside_the_cts_out_by_modality(archive) -> None:
    root, a, _ = archive
    [xray] = write_ct_series(root / "cxr", 1, generate_uid(), generate_uid())
    xray.Modality = "DX"  # LIDC-IDRI's chest radiographs, in the folder of their IdriReadMessage file
    xray.save_as(root / "cxr" / "ct0.dcm", enforce_file_format=True)
    d = detect(root)
    assert d.pairing == "dicom-lidc" and d.source["modalities"] == ["CT"] and "skip" not in d.source
    assert (d.n_images, d.n_paired) == (6, 4)  # the six CT slices; the X-ray is not read
    assert d.notes["modalities"].startswith("1 DX image(s) in no labelled series")


def test_a_malformed_or_missing_reading_file_is_a_label_error_naming_it(archive, tmp_path: Path) -> None:
    root, _, _ = archive
    bad = root / "LIDC-IDRI-0001" / "broken.xml"
    bad.write_text("<LidcReadMessage><ResponseHeader>")
    with pytest.raises(LabelError, match="broken.xml") as caught:
        build_resolver(LidcLabels(kind="lidc-xml", path=root))
    assert caught.value.label_uri == str(bad)
    bad.write_text('<LidcReadMessage xmlns="http://www.nih.gov"><readingSession/></LidcReadMessage>')
    with pytest.raises(LabelError, match="names no ResponseHeader/SeriesInstanceUid"):
        build_resolver(LidcLabels(kind="lidc-xml", path=root))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LabelError, match="no LIDC reading file"):
        build_resolver(LidcLabels(kind="lidc-xml", path=tmp_path / "empty"))
