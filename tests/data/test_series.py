from pathlib import Path

import numpy as np
import pandas as pd
import pydicom

from segops.config.schema import DicomSource
from segops.data.decode import decode_file, list_source_files
from segops.data.series import assemble_series, series_table, slice_normal, stack_volume
from segops.synth import make_ct_archive


def _rows(root: Path) -> pd.DataFrame:
    source = DicomSource(kind="dicom", path=root)
    rows = [r for f in list_source_files(source) for r in decode_file(f["path"], f["rel_path"], source)]
    return pd.DataFrame(rows)


def test_shuffled_names_are_sorted_by_position_and_a_missing_slice_is_a_gap(tmp_path: Path) -> None:
    make_ct_archive(tmp_path / "ct", series=1, slices=8, seed=4)
    src = tmp_path / "ct" / "images" / "series-000"
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    rng = np.random.default_rng(0)
    files = sorted(src.glob("*.dcm"))
    truth = [pydicom.dcmread(f).SOPInstanceUID for f in files]  # written in z order
    for name, f in zip(rng.permutation(len(files)), files):
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = int(rng.integers(1, 100))  # unreliable on purpose
        ds.save_as(shuffled / f"img{name:03d}.dcm")
    (series,) = assemble_series(_rows(shuffled))
    assert series.case_ids == truth
    assert series.is_volume and series.gaps == 0 and abs(series.spacing - 2.5) < 1e-6

    (shuffled / sorted(shuffled.iterdir())[3].name).unlink()
    missing = pydicom.dcmread(files[4]).SOPInstanceUID
    for f in shuffled.iterdir():
        if pydicom.dcmread(f).SOPInstanceUID == missing:
            f.unlink()
    (series,) = assemble_series(_rows(shuffled))
    assert series.gaps >= 1 and not series.is_volume
    assert any("gap" in p for p in series.problems)
    table = series_table([series])
    assert table.loc[0, "slices"] == 6 and not table.loc[0, "is_volume"]


def test_oblique_and_reversed_normals() -> None:
    assert np.allclose(slice_normal([1, 0, 0, 0, 1, 0]), [0, 0, 1])
    assert np.allclose(slice_normal([0, 1, 0, 0, 0, -1]), [-1, 0, 0])  # sagittal
    rows = pd.DataFrame(
        {
            "case_id": ["a", "b", "c"],
            "group_id": ["s"] * 3,
            "position": [[0, 0, -5.0], [0, 0, 5.0], [0, 0, 0.0]],
            "orientation": [[1, 0, 0, 0, -1, 0]] * 3,  # normal points to -z: order is reversed
            "instance_number": [1, 2, 3],
            "height": [4] * 3,
            "width": [4] * 3,
        }
    )
    (series,) = assemble_series(rows)
    assert series.case_ids == ["b", "c", "a"] and series.spacing == 5.0
    volume = stack_volume(series, {cid: np.full((1, 4, 4), i, np.float32) for i, cid in enumerate("abc")})
    assert volume.shape == (1, 3, 4, 4) and [volume[0, z, 0, 0] for z in range(3)] == [1, 2, 0]


def test_missing_geometry_falls_back_to_instance_number_and_says_so() -> None:
    rows = pd.DataFrame(
        {
            "case_id": ["x", "y"],
            "group_id": ["s", "s"],
            "position": [[], []],
            "orientation": [[], []],
            "instance_number": [2, 1],
            "height": [4, 4],
            "width": [4, 4],
        }
    )
    (series,) = assemble_series(rows)
    assert series.case_ids == ["y", "x"] and not series.is_volume
    assert "ordered by InstanceNumber" in series.problems[0]


def test_duplicate_positions_and_mixed_orientations_are_reported() -> None:
    rows = pd.DataFrame(
        {
            "case_id": list("abc"),
            "group_id": ["s"] * 3,
            "position": [[0, 0, 0.0], [0, 0, 0.0], [0, 0, 2.0]],
            "orientation": [[1, 0, 0, 0, 1, 0]] * 2 + [[0, 1, 0, 0, 0, -1]],
            "instance_number": [1, 2, 3],
            "height": [4] * 3,
            "width": [4] * 3,
        }
    )
    (series,) = assemble_series(rows)
    assert any("orientations" in p for p in series.problems)
    assert any("duplicate" in p for p in series.problems)
