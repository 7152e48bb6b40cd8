"""The small NRRD reader agrees with ITK where both read a file, and reads what ITK cannot."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from segops.data.nrrd import read_nrrd
from segops.data.volumes import _read_itk
from segops.errors import DecodeError


def _write(path: Path, array: np.ndarray, space: str = "left-posterior-superior", encoding: str = "raw") -> None:
    layers = array.ndim == 4
    data = np.asfortranarray(array).tobytes(order="F")
    header = (
        f"NRRD0004\ntype: {'short' if array.dtype == np.int16 else 'unsigned char'}\ndimension: {array.ndim}\n"
        f"space: {space}\nsizes: {' '.join(map(str, array.shape))}\n"
        f"space directions: {'none ' if layers else ''}(0.8,0.1,0) (0,0.7,0) (0,0,2.5)\n"
        f"endian: little\nencoding: {encoding}\nspace origin: (-10.5,4.25,7)\n\n"
    )
    path.write_bytes(header.encode() + (gzip.compress(data) if encoding == "gzip" else data))


@pytest.mark.parametrize("space", ["left-posterior-superior", "right-anterior-superior"])
@pytest.mark.parametrize("encoding", ["raw", "gzip"])
def test_a_3d_nrrd_reads_as_itk_reads_it(tmp_path: Path, space: str, encoding: str) -> None:
    array = np.random.default_rng(0).integers(-500, 500, (7, 5, 3)).astype(np.int16)
    _write(tmp_path / "x.nrrd", array, space, encoding)
    ours, affine = read_nrrd(tmp_path / "x.nrrd")
    theirs, itk_affine = _read_itk(tmp_path / "x.nrrd")
    assert np.array_equal(ours, array) and np.array_equal(ours, theirs)
    assert np.allclose(affine, itk_affine, atol=1e-6)


def test_layers_of_8_bit_values_come_last_and_other_files_are_refused(tmp_path: Path) -> None:
    layers = np.random.default_rng(1).integers(0, 3, (2, 6, 5, 4)).astype(np.uint8)
    _write(tmp_path / "s.seg.nrrd", layers, encoding="gzip")
    array, affine = read_nrrd(tmp_path / "s.seg.nrrd")
    assert array.shape == (6, 5, 4, 2) and np.array_equal(array, np.moveaxis(layers, 0, -1))
    assert np.allclose(affine[:3, 3], [-10.5, 4.25, 7])
    (tmp_path / "detached.nhdr").write_text("NRRD0004\ntype: short\ndimension: 3\ndata file: x.raw\n\n")
    with pytest.raises(DecodeError, match="layout not read here"):
        read_nrrd(tmp_path / "detached.nhdr")


def test_a_nrrd_neither_reader_reads_is_a_decode_error_with_itks_reason_bounded(tmp_path: Path) -> None:
    from segops.data.volumes import MAX_REASON, read_volume_file

    (tmp_path / "x.nrrd").write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 4 4 4\nencoding: raw\n\nxx")
    with pytest.raises(DecodeError, match=r"cannot read volume .*x\.nrrd: RuntimeError: .*require endian info") as err:
        read_volume_file(tmp_path / "x.nrrd")
    assert "\n" not in str(err.value) and len(str(err.value)) < MAX_REASON + len(str(tmp_path)) + 80
