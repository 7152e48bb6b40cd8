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


def make_fuzzed_copies(originals: list[Path], out: Path, count: int = 60, seed: int = 0) -> dict[Path, Path]:
    """``count`` damaged copies of randomly chosen ``originals``: damaged copy → its original.

    Half are truncated at a random byte; half have 1–4 random bytes overwritten in the header
    (before the Pixel Data element, or anywhere in a file without one).
    """
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    copies = {}
    for i in range(count):
        original = originals[int(rng.integers(len(originals)))]
        data = bytearray(original.read_bytes())
        if i % 2 == 0:
            damaged, kind = bytes(data[: int(rng.integers(1, len(data)))]), "truncated"
        else:
            header_end = data.rfind(b"\xe0\x7f\x10\x00")
            header_end = header_end if header_end > 132 else len(data)
            start = 132 if data[128:132] == b"DICM" else 0  # the preamble is free text: damage after it
            for at in rng.integers(start, header_end, size=int(rng.integers(1, 5))):
                data[int(at)] = int(rng.integers(256))
            damaged, kind = bytes(data), "flipped"
        path = out / f"{i:03d}-{kind}-{original.name}"
        path.write_bytes(damaged)
        copies[path] = original
    return copies
