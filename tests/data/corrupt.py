"""Generators of broken DICOM files, for quarantine tests (not a test module)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom


def make_corrupt_corpus(good: Path, out: Path, seed: int = 0) -> list[Path]:
    """≥50 broken variants of the DICOM file ``good``; every one must end in quarantine."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    data = good.read_bytes()
    ds = pydicom.dcmread(good)
    pixel_offset = data.rfind(b"\xe0\x7f\x10\x00")  # (7FE0,0010) Pixel Data tag, little endian
    written = []

    def put(name: str, payload: bytes) -> None:
        path = out / name
        path.write_bytes(payload)
        written.append(path)

    for i, cut in enumerate(sorted(rng.integers(pixel_offset + 12, len(data) - 1, size=14))):
        put(f"truncated-pixels-{i:02d}.dcm", data[:cut])  # pixel data shorter than declared
    for i, cut in enumerate(sorted(rng.integers(200, pixel_offset, size=8))):
        put(f"truncated-header-{i:02d}.dcm", data[:cut])  # cut inside the header: no pixels at all... or garbled
    for i in range(8):
        put(f"garbage-{i:02d}.dcm", rng.bytes(int(rng.integers(10, 5000))))
    for i in range(6):
        junk = bytearray(data)
        junk[: 132 + 40 * (i + 1)] = rng.bytes(132 + 40 * (i + 1))  # preamble, magic and meta destroyed
        put(f"bad-preamble-{i:02d}.dcm", bytes(junk))
    for i, bits in enumerate((32, 64, 12, 7, 1, 48)):
        broken = ds.copy()
        broken.BitsAllocated = bits
        broken.save_as(out / f"bits-allocated-{i:02d}.dcm")
        written.append(out / f"bits-allocated-{i:02d}.dcm")
    for i in range(4):
        empty = ds.copy()
        empty.PixelData = b"" if i % 2 == 0 else b"\x00" * 10  # zeroed / emptied pixel data
        empty.save_as(out / f"empty-pixels-{i:02d}.dcm")
        written.append(out / f"empty-pixels-{i:02d}.dcm")
    for i in range(4):
        wrong = ds.copy()
        wrong.Rows, wrong.Columns = ds.Rows * 4, ds.Columns * 4  # declared larger than stored
        wrong.save_as(out / f"wrong-size-{i:02d}.dcm")
        written.append(out / f"wrong-size-{i:02d}.dcm")
    return written
