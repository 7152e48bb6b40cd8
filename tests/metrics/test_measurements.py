"""Object sizes in px and mm: shapes of known size (discs, an ellipse, a sphere, rectangles) on
anisotropic grids, components vs instances, unknown spacing, and totals against a truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import pdist

from segops.data.instances import class_map, encode_instances, instance_id_map
from segops.errors import SegopsError, ShapeError
from segops.metrics import feret
from segops.metrics.measurements import COMPONENT_COLUMNS, MAX_OBJECTS, _measure_object, measure_case, total_columns


def _ellipsoid(
    shape: tuple[int, ...], spacing: tuple[float, ...], center_mm: tuple[float, ...], radii_mm
) -> np.ndarray:
    """uint8 map, 1 where the pixel centre (index × spacing, in mm) lies inside the axis-aligned ellipsoid."""
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    d = sum(((g * s - c) / r) ** 2 for g, s, c, r in zip(grid, spacing, center_mm, radii_mm))
    return (d <= 1).astype(np.uint8)


def _close(value: float, expected: float, rel: float = 0.02) -> bool:
    return abs(value - expected) <= rel * expected


def test_a_disc_at_half_mm_measures_its_analytic_area_diameter_and_longest_axis() -> None:
    r_px, sp = 40, 0.5  # the centre off the grid, as a real object's would be
    disc = _ellipsoid((200, 200), (sp, sp), (50.15, 49.8), (r_px * sp, r_px * sp))
    m = measure_case(disc, (sp, sp), [1])
    (row,) = m.components
    assert (m.ndim, m.units, row["units"], row["class"], row["component"], row["kind"]) == (
        2,
        "mm",
        "mm",
        1,
        1,
        "component",
    )
    assert _close(row["area_px"], math.pi * r_px**2)
    assert _close(row["area_mm2"], math.pi * (r_px * sp) ** 2)
    assert _close(row["equivalent_diameter_mm"], 2 * r_px * sp)
    assert _close(row["longest_axis_mm"], 2 * r_px * sp)
    assert _close(row["longest_axis_px"], 2 * r_px)
    assert row["centroid_y_mm"] == pytest.approx(50.15, abs=0.05)
    assert row["centroid_x_mm"] == pytest.approx(49.8, abs=0.05)
    assert (row["bbox_min_y"], row["bbox_max_y"], row["bbox_min_x"], row["bbox_max_x"]) == (61, 140, 60, 139)
    assert row["voxels"] is None and row["volume_ml"] is None and row["centroid_z"] is None
    assert set(row) == set(COMPONENT_COLUMNS)


def test_anisotropic_pixels_scale_each_axis_by_its_own_spacing() -> None:
    # Rows 0.5 mm, columns 1.0 mm: 12 mm × 20 mm semi-axes are 24 px tall and 20 px wide, so the
    # longest axis in px runs down the rows but in mm along the columns (swapped spacing gives 48 mm).
    sp = (0.5, 1.0)
    ellipse = _ellipsoid((120, 120), sp, (30.2, 60.3), (12.0, 20.0))
    (row,) = measure_case(ellipse, sp, [1]).components
    assert _close(row["area_mm2"], math.pi * 12 * 20)
    assert _close(row["equivalent_diameter_mm"], 2 * math.sqrt(12 * 20))
    assert _close(row["longest_axis_mm"], 40.0)
    assert _close(row["longest_axis_px"], 48.0)
    assert row["bbox_size_y_mm"] == pytest.approx(24.0, abs=sp[0])
    assert row["bbox_size_x_mm"] == pytest.approx(40.0, abs=sp[1])


def test_a_rectangle_has_exact_pixel_edge_measurements() -> None:
    rect = np.zeros((40, 50), np.uint8)
    rect[5:15, 10:30] = 1  # 10 rows × 20 columns
    (row,) = measure_case(rect, (0.5, 0.25), [1]).components
    assert (row["area_px"], row["area_mm2"]) == (200, 25.0)
    assert (row["bbox_min_y"], row["bbox_max_y"], row["bbox_min_x"], row["bbox_max_x"]) == (5, 14, 10, 29)
    assert (row["bbox_size_y_mm"], row["bbox_size_x_mm"]) == (5.0, 5.0)
    assert (row["centroid_y"], row["centroid_x"]) == (9.5, 19.5)
    assert (row["centroid_y_mm"], row["centroid_x_mm"]) == (4.75, 4.875)
    # Pixel-edge contour: from half a pixel left of the first column to half a pixel right of the
    # last, between the first and last row centres (corners cut by half a pixel).
    assert row["longest_axis_px"] == pytest.approx(math.hypot(9, 20))
    assert row["longest_axis_mm"] == pytest.approx(math.hypot(10 * 0.5, 19 * 0.25))


@pytest.mark.parametrize(("shape", "spacing", "seed"), [((40, 40), (0.7, 0.3), 0), ((8, 14, 14), (2.5, 0.6, 0.9), 1)])
def test_longest_axis_is_the_farthest_pair_of_pixel_face_centres(shape, spacing, seed: int) -> None:
    """Against brute force over every pixel's face centres: three random ellipses around one centre
    make a connected, non-convex object."""
    rng = np.random.default_rng(seed)
    centre = np.array(shape) / 2 * np.array(spacing)
    blob = np.zeros(shape, np.uint8)
    for _ in range(3):
        blob |= _ellipsoid(shape, spacing, centre, rng.uniform(0.1, 0.45, len(shape)) * np.array(shape) * spacing)
    (row,) = measure_case(blob, spacing, [1]).components
    pixels = np.argwhere(blob).astype(float)
    faces = np.concatenate([pixels + d * np.eye(len(shape))[a] for a in range(len(shape)) for d in (-0.5, 0.5)])
    assert row["longest_axis_mm"] == pytest.approx(pdist(faces * spacing).max())
    assert row["longest_axis_px"] == pytest.approx(pdist(faces).max())


def test_a_sphere_at_anisotropic_spacing_measures_its_volume_in_ml() -> None:
    sp, radius = (1.5, 0.5, 0.5), 15.0  # 10 slices, 30 px in plane
    ball = _ellipsoid((30, 80, 80), sp, (22.1, 20.2, 19.8), (radius,) * 3)
    m = measure_case(ball, sp, [1])
    (row,) = m.components
    volume_mm3 = 4 / 3 * math.pi * radius**3
    assert (m.ndim, row["area_px"], row["area_mm2"]) == (3, None, None)
    assert _close(row["volume_mm3"], volume_mm3)
    assert _close(row["volume_ml"], volume_mm3 / 1000)
    assert _close(row["equivalent_diameter_mm"], 2 * radius)
    assert row["longest_axis_mm"] == pytest.approx(2 * radius, abs=sp[0])  # within one slice
    assert row["centroid_z_mm"] == pytest.approx(22.1, abs=0.1)
    assert m.totals["meas_volume_ml_1"] == row["volume_ml"]
    assert m.totals["meas_voxels_1"] == row["voxels"] == int(ball.sum())


def test_components_of_each_class_are_counted_separately() -> None:
    cmap = np.zeros((60, 60), np.uint8)
    cmap[2:12, 2:12] = 1  # 100 px
    cmap[20:25, 30:34] = 1  # 20 px
    cmap[40:43, 40:43] = 2  # 9 px
    m = measure_case(cmap, (2.0, 2.0), [1, 2, 3])
    assert [(r["class"], r["component"], r["area_px"]) for r in m.components] == [(1, 1, 100), (1, 2, 20), (2, 1, 9)]
    t = m.totals
    assert (t["meas_components_1"], t["meas_area_px_1"], t["meas_area_mm2_1"], t["meas_largest_mm2_1"]) == (
        2.0,
        120.0,
        480.0,
        400.0,
    )
    assert (t["meas_components_2"], t["meas_area_mm2_2"]) == (1.0, 36.0)
    assert (t["meas_components_3"], t["meas_area_mm2_3"], t["meas_largest_mm2_3"], t["meas_longest_axis_mm_3"]) == (
        0.0,
        0.0,
        0.0,
        0.0,
    )
    assert tuple(t) == total_columns([1, 2, 3], 2)


def test_a_speckled_map_measures_its_largest_objects_and_counts_every_one() -> None:
    """An untrained model's thousands of specks: rows for the MAX_OBJECTS largest, totals over all."""
    cmap = np.zeros((120, 120), np.uint8)
    cmap[0:60:3, ::3] = 1  # 800 isolated 1 px specks
    cmap[70:76, 30:41] = 1  # a 6 x 11 block
    cmap[90:94, 60:62] = 1  # a 4 x 2 block
    labels, n = ndimage.label(cmap, structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel())[1:]
    m = measure_case(cmap, (0.5, 0.5), [1])
    assert len(m.components) == MAX_OBJECTS < n
    areas = [r["area_px"] for r in m.components]
    assert n == 802 and sorted(areas, reverse=True)[:2] == sorted(sizes, reverse=True)[:2] == [66, 8]
    t = m.totals
    assert (t["meas_components_1"], t["meas_area_px_1"]) == (float(n), float(cmap.sum()))
    assert t["meas_area_mm2_1"] == pytest.approx(cmap.sum() * 0.25)
    block = np.zeros_like(cmap)
    block[70:76, 30:41] = 1
    assert t["meas_largest_px_1"] == 66
    assert t["meas_longest_axis_px_1"] == measure_case(block, None, [1]).totals["meas_longest_axis_px_1"]


def test_diagonal_neighbours_join_unless_connectivity_is_one() -> None:
    cmap = np.zeros((10, 10), np.uint8)
    cmap[2, 2] = cmap[3, 3] = 1
    assert measure_case(cmap, None, [1]).totals["meas_components_1"] == 1.0
    assert measure_case(cmap, None, [1], connectivity=1).totals["meas_components_1"] == 2.0
    with pytest.raises(SegopsError, match="connectivity must be 1..2"):
        measure_case(cmap, None, [1], connectivity=3)


def test_instances_are_objects_even_where_they_touch_or_are_split() -> None:
    ids = np.zeros((30, 30), np.int32)
    ids[5:10, 5:10] = 1  # 25 px, touching instance 2
    ids[5:10, 10:20] = 2  # 50 px
    ids[20:22, 0:3] = 3  # instance 3 in two pieces: 6 + 4 px
    ids[25:27, 20:22] = 3
    label = encode_instances(ids, {1: 1, 2: 1, 3: 2})
    m = measure_case(class_map(label), (1.0, 1.0), [1, 2], instances=instance_id_map(label))
    assert [(r["class"], r["component"], r["kind"], r["area_px"]) for r in m.components] == [
        (1, 1, "instance", 25),
        (1, 2, "instance", 50),
        (2, 3, "instance", 10),
    ]
    assert (m.totals["meas_components_1"], m.totals["meas_components_2"]) == (2.0, 1.0)
    semantic = measure_case(class_map(label), (1.0, 1.0), [1, 2])  # the same map as components
    assert (semantic.totals["meas_components_1"], semantic.totals["meas_components_2"]) == (1.0, 2.0)


@pytest.mark.parametrize("spacing", [None, (float("nan"), 0.5), (0.0, 0.5), (-1.0, 0.5)])
def test_without_spacing_only_pixels_are_measured(spacing: tuple[float, float] | None) -> None:
    rect = np.zeros((20, 20), np.uint8)
    rect[2:6, 3:13] = 1
    m = measure_case(rect, spacing, [1], truth=rect)
    (row,) = m.components
    assert m.units == row["units"] == "px"
    assert (row["area_px"], row["bbox_max_x"], row["centroid_y"]) == (40, 12, 3.5)
    assert row["longest_axis_px"] == pytest.approx(math.hypot(3, 10))
    assert all(row[name] is None for name in COMPONENT_COLUMNS if "_mm" in name)
    assert m.totals["meas_area_px_1"] == 40.0 and m.totals["meas_area_px_err_1"] == 0.0
    mm_totals = [name for name in m.totals if "mm" in name]
    assert len(mm_totals) == 9 and all(math.isnan(m.totals[name]) for name in mm_totals)


def test_truth_totals_and_their_errors_per_class() -> None:
    sp = (0.5, 0.5)
    pred = _ellipsoid((120, 120), sp, (30.0, 30.0), (8.0, 8.0))
    truth = _ellipsoid((120, 120), sp, (30.0, 30.0), (10.0, 10.0))
    truth[100:104, 100:104] = 2  # a class-2 object the prediction missed
    m = measure_case(pred, sp, [1, 2], truth=truth)
    t = m.totals
    assert tuple(t) == total_columns([1, 2], 2, truth=True)
    assert t["meas_area_px_1"] == float(pred.sum()) and t["meas_area_px_true_1"] == float((truth == 1).sum())
    assert t["meas_area_mm2_err_1"] == pytest.approx(t["meas_area_mm2_1"] - t["meas_area_mm2_true_1"])
    assert _close(-t["meas_area_mm2_err_1"], math.pi * (10**2 - 8**2), rel=0.05)
    assert t["meas_longest_axis_mm_err_1"] == pytest.approx(-4.0, abs=0.5)
    assert (t["meas_components_2"], t["meas_components_true_2"], t["meas_components_err_2"]) == (0.0, 1.0, -1.0)
    assert (t["meas_area_mm2_true_2"], t["meas_largest_mm2_err_2"]) == (4.0, -4.0)
    assert [r["class"] for r in m.components] == [1]  # rows are the prediction's objects only


def test_3d_totals_are_named_in_voxels_and_ml() -> None:
    assert total_columns([2], 3) == (
        "meas_components_2",
        "meas_voxels_2",
        "meas_volume_ml_2",
        "meas_largest_voxels_2",
        "meas_largest_ml_2",
        "meas_longest_axis_px_2",
        "meas_longest_axis_mm_2",
    )
    vol = np.zeros((4, 10, 10), np.uint8)
    vol[1:3, 2:7, 2:4] = 2  # 20 voxels of 2 mm³
    t = measure_case(vol, (2.0, 1.0, 1.0), [2]).totals
    assert (t["meas_voxels_2"], t["meas_volume_ml_2"], t["meas_largest_ml_2"]) == (20.0, 0.04, 0.04)


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ShapeError, match=r"got shape \(1, 2, 8, 8\); squeeze the channel axis"):
        measure_case(np.zeros((1, 2, 8, 8), np.uint8), None, [1])
    with pytest.raises(ShapeError, match=r"spacing \(0.5, 0.5\) has 2 values for a 3D map"):
        measure_case(np.zeros((2, 8, 8), np.uint8), (0.5, 0.5), [1])
    with pytest.raises(ShapeError, match=r"truth has shape \(8, 9\)"):
        measure_case(np.zeros((8, 8), np.uint8), None, [1], truth=np.zeros((8, 9), np.uint8))
    with pytest.raises(SegopsError, match=r"foreground ids >= 1, got \[0, 1\]"):
        measure_case(np.zeros((8, 8), np.uint8), None, [0, 1])


@pytest.mark.parametrize(("spacing", "batch_points"), [((0.7, 0.3), 128), (None, 128), ((0.7, 0.3), 3)])
def test_2d_objects_measured_together_equal_each_measured_alone(spacing, batch_points, monkeypatch) -> None:
    """The 2D path measures every object in a few array passes; each row must equal the one-object
    path's (:func:`_measure_object` on the object's own box): specks, lines (no 2D hull), a disc
    and noise, over several seeds; with a batch of 3 points, objects with more candidates take the
    hull path."""
    monkeypatch.setattr(feret, "BATCH_POINTS", batch_points)
    rng = np.random.default_rng(7)
    for seed in range(6):
        cmap = (rng.random((90, 110)) < 0.25 + 0.1 * seed).astype(np.uint8)
        cmap[:30, :40] = 0
        cmap[2, 1:30] = 1  # a 1 px line: collinear points
        cmap[5:25, 3] = 1
        cmap |= _ellipsoid((90, 110), (1.0, 1.0), (60.0, 70.0), (25.0, 30.0))  # large: the hull path
        m = measure_case(cmap, spacing, [1])
        labels, _ = ndimage.label(cmap, structure=np.ones((3, 3)))
        boxes = ndimage.find_objects(labels)
        mm = None if spacing is None else np.array(spacing)
        assert len(m.components) == min(MAX_OBJECTS, len(boxes))
        for row in m.components:
            box = boxes[row["component"] - 1]
            alone = _measure_object(labels[box] == row["component"], np.array([s.start for s in box]), mm)
            for name, value in alone.items():
                expected = value if value is None or isinstance(value, str) else pytest.approx(value, rel=1e-12)
                assert row[name] == expected, (seed, row["component"], name)
