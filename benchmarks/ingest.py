"""Ingest throughput and memory: segops (Ray Data, all cores) vs a plain single-process loop.

Both sides run the same decode (``segops.data.decode.decode_file``: pydicom + pylibjpeg,
modality LUT, labels) and write the same Parquet rows; the difference is Ray's parallel,
streaming execution. Peak RSS (driver + Ray workers) is measured at 1× and 10× archive size.

    .venv/bin/python benchmarks/ingest.py --slices 2000 --scale 10
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless

sys.path.insert(0, str(Path(__file__).parent))
from _measure import PeakRSS, gib, rate, stopwatch  # noqa: E402

from segops.cluster.datasets import FILES_PER_BLOCK, read_source, rows_to_table, write_dataset  # noqa: E402
from segops.cluster.runtime import ensure_ray  # noqa: E402
from segops.config.schema import ClusterSpec, DicomSource, MaskPngLabels  # noqa: E402
from segops.data.decode import decode_file, list_source_files  # noqa: E402
from segops.synth import make_ct_archive  # noqa: E402

OUT = Path(__file__).parent / "out" / "ingest"
SYNTAXES = [None, RLELossless, JPEG2000Lossless, JPEGLSLossless, DeflatedExplicitVRLittleEndian]


def make_archive(root: Path, slices: int, seed: int) -> DicomSource:
    """``slices`` CT slices (series of 20), re-encoded round-robin in five transfer syntaxes."""
    if not (root / "images").is_dir():
        make_ct_archive(root, series=max(1, slices // 20), slices=min(20, slices), seed=seed)
        for i, path in enumerate(sorted((root / "images").rglob("*.dcm"))):
            ts = SYNTAXES[i % len(SYNTAXES)]
            if ts is None:
                continue
            ds = pydicom.dcmread(path)
            if ts == DeflatedExplicitVRLittleEndian:
                ds.file_meta.TransferSyntaxUID = ts
            else:
                ds.compress(ts)
            ds.save_as(path)
    return DicomSource(kind="dicom", path=root / "images", labels=MaskPngLabels(kind="mask-png", path=root / "labels"))


def plain_loop(source: DicomSource, out: Path) -> int:
    """The baseline: list, decode and write in one process, one file after another."""
    out.mkdir(parents=True)
    rows, part, n = [], 0, 0
    for f in list_source_files(source):
        rows.extend(decode_file(f["path"], f["rel_path"], source))
        if len(rows) >= FILES_PER_BLOCK:
            pq.write_table(rows_to_table(rows), out / f"part-{part:05d}.parquet")
            n, rows, part = n + len(rows), [], part + 1
    if rows:
        pq.write_table(rows_to_table(rows), out / f"part-{part:05d}.parquet")
        n += len(rows)
    return n


def segops_ingest(source: DicomSource, out: Path) -> int:
    write_dataset(read_source(source), out)
    return pq.ParquetDataset(out).read(columns=["case_id"]).num_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=2000)
    parser.add_argument("--scale", type=int, default=10, help="the large archive is this many times bigger (0: skip)")
    parser.add_argument("--num-cpus", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    small = make_archive(OUT / f"archive-{args.slices}", args.slices, seed=0)
    shutil.rmtree(OUT / "results", ignore_errors=True)
    with stopwatch() as t_init:
        resources = ensure_ray(ClusterSpec(num_cpus=args.num_cpus))
    print(f"Ray start-up: {t_init():.1f} s, {resources.get('CPU', 0):.0f} CPUs")

    plain_rate = rate("plain loop, 1x", lambda: plain_loop(small, OUT / "results" / "plain"))
    with PeakRSS() as rss_small:
        cold = rate("segops 1x, cold (Ray workers start)", lambda: segops_ingest(small, OUT / "results" / "segops"))
    warm = rate("segops 1x, warm", lambda: segops_ingest(small, OUT / "results" / "segops-warm"))
    print(
        f"throughput ratio segops / plain, 1x: cold {cold / plain_rate:.2f}, warm {warm / plain_rate:.2f}  "
        "(goal >= 1.8)"
    )
    print(f"peak memory (PSS, driver + Ray workers), 1x archive: {gib(rss_small.peak)}")

    if args.scale:
        big = make_archive(OUT / f"archive-{args.slices * args.scale}", args.slices * args.scale, seed=1)
        big_plain = rate(f"plain loop, {args.scale}x", lambda: plain_loop(big, OUT / "results" / "plain-big"))
        with PeakRSS() as rss_big:
            big_segops = rate(f"segops {args.scale}x", lambda: segops_ingest(big, OUT / "results" / "segops-big"))
        print(f"throughput ratio segops / plain, {args.scale}x: {big_segops / big_plain:.2f}  (goal >= 1.8)")
        print(
            f"peak memory, {args.scale}x archive: {gib(rss_big.peak)}; growth "
            f"{rss_big.peak / rss_small.peak:.2f}x  (goal <= 1.2)"
        )


if __name__ == "__main__":
    main()
