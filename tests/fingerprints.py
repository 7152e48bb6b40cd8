"""Hand-made fingerprints for planning tests that need no folder fingerprinted."""

from __future__ import annotations

from dataclasses import replace

from segops.data.fingerprint import Fingerprint, IntensityStats, ObjectStats

#: ISBI 2012's 30 EM slices of 512x512 px, membranes (22 % of pixels) the foreground.
ISBI = Fingerprint(
    task="semantic",
    n_images=30,
    n_labelled=30,
    n_groups=30,
    modalities={"OT": 30},
    channels={1: 30},
    shapes=[[512, 512, 30]],
    median_shape=(512, 512),
    median_spacing=(1.0, 1.0),
    intensity_all=IntensityStats(120.0, 40.0, 20.0, 230.0, 0.0, 255.0, 300_000),
    intensity_fg=IntensityStats(90.0, 30.0, 25.0, 180.0, 0.0, 255.0, 300_000),
    label_census={0: (30, 6_137_070), 1: (30, 1_727_250)},
    class_fractions={0: 0.78, 1: 0.22},
    foreground_image_fraction=1.0,
    objects=ObjectStats(1.0, 3, 100.0, 5000.0, 90000.0),
)

#: Nine 64x64 CT slices of three cases, six labelled with a small class-1 object.
CT_SLICES = replace(
    ISBI,
    n_images=9,
    n_labelled=6,
    n_groups=3,
    modalities={"CT": 9},
    shapes=[[64, 64, 9]],
    median_shape=(64, 64),
    channels={1: 9},
    intensity_all=IntensityStats(100.0, 20.0, 60.0, 140.0, 20.0, 180.0, 36864),
    intensity_fg=IntensityStats(100.0, 20.0, 60.0, 140.0, 20.0, 180.0, 8),
    label_census={0: (6, 24568), 1: (2, 8)},
    class_fractions={0: 0.98, 1: 0.02},
    foreground_image_fraction=0.33,
    objects=ObjectStats(1.0, 1, 4.0, 4.0, 4.0),
)


def ct_slices(classes: int = 2) -> Fingerprint:
    """:data:`CT_SLICES` with every slice labelled and ``classes`` (background included) equally common."""
    census = {c: (9, 100) for c in range(classes)}
    fractions = {c: 1 / classes for c in range(classes)}
    return replace(
        CT_SLICES, n_labelled=9, label_census=census, class_fractions=fractions, foreground_image_fraction=1.0
    )
