"""The longest axis of segmented objects: the maximum Feret diameter of each object's pixel-edge
contour (conventions in :mod:`segops.metrics.measurements`), exactly, one object or many at once.

The farthest pair of a point set lies on its convex hull. Along every line parallel to each axis
only the points half a pixel before an object's first and after its last pixel can be hull
vertices (:func:`hull_vertices` for one object, :func:`line_extremes` for every object of a 2D
label map in one sort). :func:`farthest_pair` searches one set, bounded by a first guess;
:func:`longest_axes` does the same for many objects at once, comparing the candidate pairs of
objects of similar size in one batch.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import ConvexHull, QhullError

#: Candidate points up to which an object's pairs are compared in one batch (more: its hull first).
BATCH_POINTS = 128
#: Point pairs compared at once in that batch (bounds its memory to ~32 MB).
BATCH_PAIRS = 1 << 20
#: Points per block when searching the farthest pair of hull vertices (bounds memory to ~2 MB per 1000 points).
_PAIR_BLOCK = 256


def hull_vertices(sub: np.ndarray) -> np.ndarray:
    """(N, ndim) vertices of the convex hull of the pixel-edge contour, in pixel indices of the box.

    Along every line parallel to each axis, only the points half a pixel before the first and
    after the last object pixel can be hull vertices; gathering those is a few passes over the box.
    In 3D, a hull vertex is also a vertex of the 2D hull of its own plane (the points with the same
    slice coordinate), which cuts a large organ's points ~15-fold before the 3D hull.
    """
    points = []
    for axis in range(sub.ndim):
        present = sub.any(axis=axis)
        size = sub.shape[axis]
        before = np.argmax(sub, axis=axis)[present] - 0.5
        after = size - np.argmax(np.flip(sub, axis=axis), axis=axis)[present] - 0.5
        others = np.nonzero(present)  # coordinates of the other axes, in order
        for along in (before, after):
            coords = list(others)
            coords.insert(axis, along)
            points.append(np.stack(coords, axis=1).astype(np.float64))
    pts = np.concatenate(points)  # no duplicates: each axis' points are half-integer along that axis only
    if sub.ndim == 3:
        pts = pts[np.argsort(pts[:, 0], kind="stable")]
        planes = np.split(pts, np.flatnonzero(np.diff(pts[:, 0])) + 1)
        pts = np.concatenate([hull_points(plane, plane[:, 1:]) for plane in planes])
    return hull_points(pts, pts)


def hull_points(points: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """The rows of ``points`` whose ``coords`` are vertices of the convex hull of ``coords``."""
    try:
        return points[ConvexHull(coords).vertices]
    except QhullError:  # too few or collinear/flat points: every one stays a candidate
        return points


def farthest_pair(points: np.ndarray) -> float:
    """Largest distance between two of ``points`` (N, d), exactly.

    A first guess ``low`` (the farthest point from the point farthest from the centre) bounds the
    search: a longer pair needs both ends farther than ``low - r_max`` from the centre, which on a
    compact object leaves few candidates; those are compared in blocks so memory stays bounded.
    """
    if len(points) < 2:
        return 0.0
    radius = np.linalg.norm(points - points.mean(axis=0), axis=1)
    start = points[np.argmax(radius)]
    low = float(np.linalg.norm(points - start, axis=1).max())
    candidates = points[radius > low - radius.max()]
    best = low**2
    for i in range(0, len(candidates), _PAIR_BLOCK):
        block, rest = candidates[i : i + _PAIR_BLOCK], candidates[i:]
        d2 = sum((block[:, k, None] - rest[None, :, k]) ** 2 for k in range(points.shape[1]))
        best = max(best, float(np.max(d2, initial=0.0)))
    return math.sqrt(best)


def line_extremes(ys: np.ndarray, xs: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) candidate hull points of every object at once and their (N,) labels: along each row
    and each column of each object, the points half a pixel before its first and after its last
    pixel (what :func:`hull_vertices` gathers for one object)."""
    points, owners = [], []
    for along, across in ((ys, xs), (xs, ys)):
        order = np.lexsort((along, across, owner))  # by object, then line, then position on it
        key_owner, key_line, pos = owner[order], across[order], along[order]
        starts = np.flatnonzero(np.r_[True, (np.diff(key_owner) != 0) | (np.diff(key_line) != 0)])
        ends = np.r_[starts[1:], order.size] - 1
        for at, shift in ((starts, -0.5), (ends, 0.5)):
            coords = np.stack([pos[at] + shift, key_line[at].astype(np.float64)], axis=1)
            points.append(coords if along is ys else coords[:, ::-1])
            owners.append(key_owner[at])
    return np.concatenate(points), np.concatenate(owners)


def longest_axes(pts: np.ndarray, owner: np.ndarray) -> list[float]:
    """:func:`farthest_pair` of each object's points, vectorised over the objects: ``pts`` (N, d)
    grouped by their (N,) ``owner`` label (sorted), one result per label in that order. The
    same first guess and bound pick each object's candidates, and objects with at
    most :data:`BATCH_POINTS` candidates compare all their pairs in one batch (padded with their
    first candidate, which changes no maximum; a few objects at a time so memory stays bounded);
    objects with more go through their hull, one by one."""
    offsets = np.flatnonzero(np.r_[True, np.diff(owner) != 0])
    sizes = np.diff(np.r_[offsets, owner.size])
    seg = np.repeat(np.arange(sizes.size), sizes)
    centre = np.add.reduceat(pts, offsets, axis=0) / sizes[:, None]
    radius = np.sqrt(((pts - centre[seg]) ** 2).sum(axis=1))
    r_max = np.maximum.reduceat(radius, offsets)
    first_max = np.flatnonzero(radius == r_max[seg])
    start = first_max[np.unique(seg[first_max], return_index=True)[1]]
    low = np.maximum.reduceat(np.sqrt(((pts - pts[start][seg]) ** 2).sum(axis=1)), offsets)
    best = low**2
    candidate = np.flatnonzero(radius > (low - r_max)[seg])
    counts = np.bincount(seg[candidate], minlength=sizes.size)
    firsts = np.r_[0, np.cumsum(counts)[:-1]]
    for fewest, most in _count_buckets(BATCH_POINTS):  # objects of similar counts padded together
        small = np.flatnonzero((counts >= fewest) & (counts <= most))
        if not small.size:
            continue
        width = int(counts[small].max())
        step = max(1, BATCH_PAIRS // (width * width))
        for i in range(0, small.size, step):
            chunk = small[i : i + step]
            index = firsts[chunk, None] + np.minimum(np.arange(width)[None, :], counts[chunk, None] - 1)
            batch = pts[candidate[index]]  # (objects, width, ndim)
            d2 = sum((batch[:, :, None, k] - batch[:, None, :, k]) ** 2 for k in range(pts.shape[1]))
            best[chunk] = np.maximum(best[chunk], d2.max(axis=(1, 2)))
    for i in np.flatnonzero(counts > BATCH_POINTS):
        own = pts[offsets[i] : offsets[i] + sizes[i]]
        best[i] = farthest_pair(hull_points(own, own)) ** 2
    return np.sqrt(best).tolist()


def _count_buckets(limit: int) -> list[tuple[int, int]]:
    """(2, 2), (3, 4), (5, 8), ... up to ``limit``: ranges of candidate counts batched together."""
    buckets, most = [], 2
    while most // 2 + 1 <= limit:
        buckets.append((max(2, most // 2 + 1), min(most, limit)))
        most *= 2
    return buckets
