"""RTSTRUCT labels: contours rasterised on an oblique, anisotropic CT series equal the analytic masks."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pydicom
import pytest

from segops.config.schema import RtstructLabels
from segops.data.dicom import read_dicom
from segops.data.labels import build_resolver, declared_label_rows
from segops.data.rtstruct import (
    DEFAULT_TOLERANCE_MM,
    SliceGeometry,
    contour_report,
    rasterise_slice,
    read_structure_set,
    roi_class,
)
from segops.data.rtstruct_labels import contour_census
from segops.errors import LabelError

from .rtstruct_archive import (
    COL_DIR,
    CORD,
    GTV,
    NORMAL,
    RING_INNER,
    RING_OUTER,
    ROW_DIR,
    RULES,
    SHAPE,
    SPACING,
    SYNONYMS,
    UNKNOWN_SOP,
    ipp,
    make_rtstruct_archive,
)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory):
    return make_rtstruct_archive(tmp_path_factory.mktemp("rtstruct"))


def _geometry(k: int, uid: str) -> SliceGeometry:
    return SliceGeometry(uid, tuple(ipp(k)), (*ROW_DIR, *COL_DIR), SPACING, SHAPE)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def _slices(archive) -> list[SliceGeometry]:
    return [_geometry(k, ct.SOPInstanceUID) for k, ct in enumerate(archive[0])]


def test_structure_set_is_parsed_from_a_file_or_a_dataset_and_pickles(archive) -> None:
    series, _, path = archive
    from_file = read_structure_set(path)
    from_ds = read_structure_set(pydicom.dcmread(path))
    assert [(r.number, r.name, len(r.contours)) for r in from_file.rois] == [
        (1, "GTV_primary", 5),
        (2, "SpinalCord", 3),
        (3, "Ring", 2),
        (4, "Couch", 1),
    ]
    assert from_file.series_uids == (series[0].SeriesInstanceUID,)
    assert {ct.SOPInstanceUID for ct in series} < from_file.sop_uids
    assert from_file.rois[1].contours[2].geometric_type == "OPEN_PLANAR"
    assert from_file.rois[0].contours[0].references == ((series[1].SOPInstanceUID, None),)
    again = pickle.loads(pickle.dumps(from_file))
    np.testing.assert_allclose(again.rois[0].contours[0].points, from_ds.rois[0].contours[0].points)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_ellipses_equal_the_analytic_masks_and_the_first_rule_wins_overlaps(archive, k: int) -> None:
    structure = read_structure_set(archive[2])
    label = rasterise_slice(structure, _slices(archive)[k], RULES, SYNONYMS).label
    gtv = GTV[k].mask()
    assert label.dtype == np.uint8 and label.shape == SHAPE
    assert _dice(label == 1, gtv) >= 0.98
    if k in CORD:
        cord = CORD[k].mask()
        assert (cord & gtv).sum() > 20  # the fixture makes them overlap
        assert _dice(label == 2, cord & ~gtv) >= 0.98  # GTV* is listed first: it wins the overlap
        cord_first = {"spinal_cord": 2, "GTV*": 1, "ring": 3}
        swapped = rasterise_slice(structure, _slices(archive)[k], cord_first, SYNONYMS).label
        assert _dice(swapped == 2, cord) >= 0.98 and _dice(swapped == 1, gtv & ~cord) >= 0.98
    else:
        assert set(np.unique(label)) == {0, 1}


def test_nested_contours_make_a_hole_and_join_by_position(archive) -> None:
    drawn = rasterise_slice(read_structure_set(archive[2]), _slices(archive)[4], RULES, SYNONYMS)
    ring = RING_OUTER.mask() & ~RING_INNER.mask()
    assert _dice(drawn.label == 3, ring) >= 0.98
    assert drawn.label[32, 32] == 0 and RING_INNER.mask().sum() > 80  # the hole is background
    assert drawn.drawn == (("Ring", 0), ("Ring", 1))


@pytest.mark.parametrize(("shift_mm", "drawn"), [(0.15, True), (-0.15, True), (0.3, False)])
def test_contours_without_reference_join_slices_within_the_tolerance(archive, shift_mm: float, drawn: bool) -> None:
    shifted = SliceGeometry("", tuple(ipp(4) + shift_mm * NORMAL), (*ROW_DIR, *COL_DIR), SPACING, SHAPE)
    label = rasterise_slice(read_structure_set(archive[2]), shifted, RULES, SYNONYMS).label
    assert (label == 3).any() == drawn
    assert DEFAULT_TOLERANCE_MM == 0.2


def test_open_and_unmatched_contours_are_skipped_on_their_slice(archive) -> None:
    structure = read_structure_set(archive[2])
    on_0 = rasterise_slice(structure, _slices(archive)[0], RULES, SYNONYMS)
    on_5 = rasterise_slice(structure, _slices(archive)[5], RULES, SYNONYMS)
    assert not on_0.label.any() and not on_5.label.any()
    assert [(i.roi_name, i.contour, i.reason) for i in on_0.skipped] == [("SpinalCord", 2, "open")]
    assert [(i.roi_name, i.contour, i.reason) for i in on_5.skipped] == [("Couch", 0, "no-rule")]


def test_the_report_names_every_contour_that_is_not_drawn(archive) -> None:
    issues = contour_report(read_structure_set(archive[2]), _slices(archive), RULES, SYNONYMS)
    assert [(i.roi_name, i.contour, i.reason) for i in issues] == [
        ("GTV_primary", 3, "off-slices"),
        ("GTV_primary", 4, "unknown-reference"),
        ("SpinalCord", 2, "open"),
        ("Couch", -1, "no-rule"),
    ]
    assert "1.25 mm from the nearest slice plane" in issues[0].detail  # halfway between slices 2.5 mm apart
    assert UNKNOWN_SOP in issues[1].detail
    no_series = contour_report(read_structure_set(archive[2]), [], RULES, SYNONYMS)
    assert [i.reason for i in no_series] == ["no-slices"]


def test_roi_names_match_globs_and_synonyms_case_insensitively() -> None:
    assert roi_class("gtv_Boost", RULES, SYNONYMS) == (1, 0)
    assert roi_class("Spinal Cord", RULES, SYNONYMS) == (2, 1)
    assert roi_class("RING", RULES, SYNONYMS) == (3, 2)
    assert roi_class("Couch", RULES, SYNONYMS) == (0, -1)
    assert roi_class("SpinalCord", RULES) == (0, -1)  # without the synonym, no rule fits
    assert roi_class("GTV_ring", {"ring*": 5, "GTV*": 1}) == (1, 1)
    assert roi_class("ring_GTV", {"ring*": 5, "GTV*": 1}) == (5, 0)


def test_a_file_that_is_not_an_rtstruct_is_a_label_error(archive) -> None:
    ct = archive[0][0]
    with pytest.raises(LabelError, match="is not an RTSTRUCT"):
        read_structure_set(ct)


def _spec(path: Path) -> RtstructLabels:
    return RtstructLabels(kind="rtstruct", path=path, rois=RULES, synonyms=SYNONYMS)


def test_resolver_labels_the_referenced_series_only(archive) -> None:
    series, _, path = archive
    root = path.parent.parent
    resolver = build_resolver(_spec(path.parent))
    records = [r for p in sorted((root / "ct" / "a").glob("*.dcm")) for r in read_dicom(p, p.name)]
    others = [r for p in sorted((root / "ct" / "b").glob("*.dcm")) for r in read_dicom(p, p.name)]
    uri = f"{path.resolve()}#series={series[0].SeriesInstanceUID}"
    found = {r.instance_number - 1: resolver.label_for(r) for r in records}
    assert all(f is not None and f[1] == uri for f in found.values())
    assert not found[0][0].any() and not found[5][0].any()  # labelled, all background
    for k in (1, 2, 3):
        assert _dice(found[k][0] == 1, GTV[k].mask()) >= 0.98
    assert _dice(found[4][0] == 3, RING_OUTER.mask() & ~RING_INNER.mask()) >= 0.98
    assert [resolver.label_for(r) for r in others] == [None, None]  # no RTSTRUCT: unlabelled
    assert resolver.all_label_keys() == {uri}
    assert declared_label_rows(resolver) == [{"label_uri": uri, "label_values": [1, 2, 3], "label_pixels": [1] * 3}]
    rows = contour_census(resolver.rtstruct, [r.to_row() for r in records + others], RULES, SYNONYMS)
    assert [(r["roi_name"], r["contour"], r["reason"]) for r in rows] == [
        ("GTV_primary", 3, "off-slices"),
        ("GTV_primary", 4, "unknown-reference"),
        ("SpinalCord", 2, "open"),
        ("Couch", -1, "no-rule"),
    ]
    assert {r["rtstruct"] for r in rows} == {str(path.resolve())}
    rows = contour_census(resolver.rtstruct, [r.to_row() for r in others], RULES, SYNONYMS)
    assert [r["reason"] for r in rows] == ["no-slices"]


def test_missing_rtstruct_folder_is_a_label_error(tmp_path: Path) -> None:
    with pytest.raises(LabelError, match="RTSTRUCT folder .* does not exist"):
        build_resolver(_spec(tmp_path / "nowhere"))


def test_a_plan_lists_small_structures_first_and_merges_spellings(tmp_path: Path) -> None:
    """A clinical structure set: a body outline around everything, a lung, a tumour inside it; a
    second patient spells the lung differently. The plan's rules keep class numbers in name order
    and list the smallest structure first, so the tumour and the lung keep their pixels."""
    from pydicom.uid import generate_uid

    from segops.config.schema import RtstructLabels
    from segops.data.pairing import detect

    from .rtstruct_archive import Ellipse, _contour, build_rtstruct, write_ct_series

    def patient(name: str, lung: str) -> None:
        cts = write_ct_series(tmp_path / "ct" / name, 3, generate_uid(), generate_uid())
        uid = [ct.SOPInstanceUID for ct in cts]
        shapes = {"External": (30.0, 30.0), lung: (14.0, 12.0), "GTV": (4.0, 4.0)}
        rois = [
            (n, [_contour(Ellipse(k, 32, 32, a, b).points(), refs=(uid[k],)) for k in range(3)])
            for n, (a, b) in shapes.items()
        ]
        build_rtstruct(cts, rois).save_as(tmp_path / "rs" / f"{name}.dcm", enforce_file_format=True)

    (tmp_path / "rs").mkdir()
    patient("p1", "Lung_L")
    patient("p2", "lung-l")
    d = detect(tmp_path)
    labels = d.source["labels"]
    assert list(labels["rois"].items()) == [("GTV", 2), ("Lung_L", 3), ("External", 1)]  # priority order
    assert labels["synonyms"] == {"Lung_L": ("lung-l",)} and d.classes == 4
    spec = RtstructLabels(**labels)
    # (class, rank): the outline ranks last, so it loses every overlap
    assert roi_class("lung-l", spec.rois, spec.synonyms) == (3, 1)
    assert roi_class("EXTERNAL", spec.rois, spec.synonyms) == (1, 2)


def test_missing_rois_ignore_leaves_uncovered_pixels_of_a_series_lacking_a_class_out(tmp_path: Path) -> None:
    """Patient a's structure set draws the GTV and the cord, patient b's the GTV only: with
    ``missing_rois: ignore`` b's slices mark what no ROI covers as ignored (not cord-free
    background), keep b's GTV, and leave a's slices as they were; by default both are background."""
    from pydicom.uid import generate_uid

    from segops.config.sources import IGNORE_LABEL, ignores_void

    from .rtstruct_archive import _contour, build_rtstruct, write_ct_series

    for name, with_cord in (("a", True), ("b", False)):
        cts = write_ct_series(tmp_path / "ct" / name, 4, generate_uid(), generate_uid())
        uid = [ct.SOPInstanceUID for ct in cts]
        rois = [("GTV_primary", [_contour(GTV[k].points(), refs=(uid[k],)) for k in (1, 2)])]
        if with_cord:
            rois.append(("SpinalCord", [_contour(CORD[2].points(), refs=(uid[2],))]))
        (tmp_path / "rs").mkdir(exist_ok=True)
        build_rtstruct(cts, rois).save_as(tmp_path / "rs" / f"RS.{name}.dcm", enforce_file_format=True)
    rules = {"GTV*": 1, "spinal*": 2}
    ignoring = RtstructLabels(kind="rtstruct", path=tmp_path / "rs", rois=rules, missing_rois="ignore")
    plain = RtstructLabels(kind="rtstruct", path=tmp_path / "rs", rois=rules)
    assert ignores_void(ignoring) and not ignores_void(plain)
    labels = {}
    for spec in (ignoring, plain):
        resolver = build_resolver(spec)
        for name in ("a", "b"):
            for r in [r for p in sorted((tmp_path / "ct" / name).glob("*.dcm")) for r in read_dicom(p, p.name)]:
                labels[spec.missing_rois, name, r.instance_number - 1] = resolver.label_for(r)[0]
    for k in (1, 2):
        gtv = GTV[k].mask()
        assert _dice(labels["ignore", "b", k] == 1, gtv) >= 0.98
        assert np.array_equal(labels["ignore", "b", k] == IGNORE_LABEL, labels["background", "b", k] == 0)
    assert (labels["ignore", "b", 0] == IGNORE_LABEL).all()  # a slice of b without contours: all ignored
    for k in range(4):
        assert not (labels["ignore", "a", k] == IGNORE_LABEL).any()
        assert np.array_equal(labels["ignore", "a", k], labels["background", "a", k])
    assert (labels["background", "a", 2] == 2).any() and not (labels["background", "b", 2] == IGNORE_LABEL).any()
    with pytest.raises(ValueError, match="255 marks ignored pixels"):
        RtstructLabels(kind="rtstruct", path=tmp_path, rois={"GTV*": 255}, missing_rois="ignore")
