"""Drift: does a new source look like the data a model was trained on? Pure numpy/scipy.

A new source's fingerprint (of a sample of its images, its intensity histogram on the training
bin edges) is compared feature by feature with the training fingerprint stored with the model:

- **intensity histogram**: population stability index (PSI) of the two histograms (bins of the
  training p0.5-p99.5, plus under- and overflow);
- **per-image scalars** (mean intensity, height, width, row and column spacing): two-sample
  Kolmogorov-Smirnov statistic; it moves when above ``max_ks`` *and* significant (p < :data:`ALPHA`)
  *and* more than ``max_unseen`` of the new images lie outside the training images' range. The
  last condition is there because slices of one series share their size and spacing: a KS
  p-value counts them as independent, so a fresh archive from the same scanners (spacing 0.8 mm
  where training had 0.7-0.9 mm) looked significant; a value inside the training range is one
  the model has seen;
- **census** (channels, modality, transfer syntax, photometric interpretation, slice plane: a
  model trained on axial slices given sagittal ones): the share of the new images with a value the
  training images never had;
- **encoder embeddings** (:mod:`segops.engine.embeddings`): the new cases' median distance as a
  multiple of the training cases' 95th percentile.

Each feature gets a :class:`DriftRow` (train value, new value, distance, threshold, moved); a
feature the training fingerprint lacks (a model trained before segops stored it) is listed
with distance NaN and never moves.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import stats

from segops.config.steps import DriftSpec
from segops.data.fingerprint import Fingerprint

#: Significance a KS statistic also needs to count as moved.
ALPHA = 0.01
#: Floor of a bin's share in PSI (an empty bin would make it infinite).
PSI_EPSILON = 1e-4
#: Per-image scalars compared by KS: (fingerprint key, feature name).
KS_FEATURES = (
    ("mean", "image mean intensity"),
    ("height", "image height (px)"),
    ("width", "image width (px)"),
    ("spacing_y", "row spacing (mm)"),
    ("spacing_x", "column spacing (mm)"),
)
_CENSUS = (
    ("channels", "channels"),
    ("modalities", "modality"),
    ("transfer_syntaxes", "transfer syntax"),
    ("photometrics", "photometric"),
    ("planes", "slice plane"),
)
_NOT_STORED = "not in the training fingerprint (stored by an older segops)"


def psi(expected: Sequence[float], actual: Sequence[float], eps: float = PSI_EPSILON) -> float:
    """Population stability index of two histograms on the same bins: sum over bins of
    (q - p) * ln(q / p), with p, q the bins' shares (each floored at ``eps``).

    Rules of thumb: < 0.1 no change, 0.1-0.25 some, > 0.25 a shift worth acting on.
    """
    p, q = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    if p.shape != q.shape or p.sum() <= 0 or q.sum() <= 0:
        return float("nan")
    p, q = np.maximum(p / p.sum(), eps), np.maximum(q / q.sum(), eps)
    return float(((q - p) * np.log(q / p)).sum())


def ks(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(statistic, p-value) of the two-sample Kolmogorov-Smirnov test; NaNs are dropped, and an
    empty sample gives (NaN, NaN)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if not len(a) or not len(b):
        return float("nan"), float("nan")
    result = stats.ks_2samp(a, b)
    return float(result.statistic), float(result.pvalue)


def outside_share(train: Sequence[float], new: Sequence[float]) -> float:
    """Share of the ``new`` values outside ``[min(train), max(train)]`` (NaNs dropped; NaN when
    either side is empty)."""
    a, b = np.asarray(train, np.float64), np.asarray(new, np.float64)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if not len(a) or not len(b):
        return float("nan")
    return float(((b < a.min()) | (b > a.max())).mean())


def unseen_share(train: Mapping[object, int], new: Mapping[object, int]) -> float:
    """Share of the ``new`` images (value → count) whose value no ``train`` image had."""
    total = sum(new.values())
    return sum(n for v, n in new.items() if v not in train) / total if total else float("nan")


@dataclass(frozen=True)
class DriftRow:
    """One feature compared: ``train`` and ``new`` are short summaries for people; ``distance`` is
    PSI, KS statistic, unseen share or embedding ratio (``test`` says which)."""

    feature: str
    test: str
    train: str
    new: str
    distance: float
    threshold: float
    moved: bool
    note: str = ""


@dataclass(frozen=True)
class DriftReport:
    """Every feature compared, the sample sizes, and the verdict."""

    rows: tuple[DriftRow, ...]
    n_train: int
    n_new: int

    @property
    def moved(self) -> list[DriftRow]:
        return [r for r in self.rows if r.moved]

    @property
    def verdict(self) -> str:
        """``drift`` when any feature moved, else ``ok``."""
        return "drift" if self.moved else "ok"

    def row(self, feature: str) -> DriftRow | None:
        return next((r for r in self.rows if r.feature == feature), None)

    def with_row(self, row: DriftRow) -> DriftReport:
        """This report plus ``row`` (replacing a row of the same feature)."""
        return replace(self, rows=(*(r for r in self.rows if r.feature != row.feature), row))

    def metrics(self) -> dict[str, float]:
        """``drift_psi_intensity``, ``drift_features_moved`` and, when compared, ``drift_embedding_ratio``."""
        out = {
            "drift_psi_intensity": _distance(self.row("intensity histogram")),
            "drift_features_moved": float(len(self.moved)),
        }
        embedding = self.row("encoder embedding")
        return out | ({"drift_embedding_ratio": embedding.distance} if embedding is not None else {})

    def table(self) -> list[dict[str, object]]:
        """Rows as dicts (feature, train, new, distance, threshold, moved, ...) for JSON and MLflow."""
        return [asdict(r) for r in self.rows]

    def to_json(self) -> str:
        rows = [{k: _finite(v) for k, v in row.items()} for row in self.table()]
        body = {"verdict": self.verdict, "n_train": self.n_train, "n_new": self.n_new, "rows": rows}
        return json.dumps(body, indent=2)

    def text(self, only_moved: bool = False) -> str:
        """A plain-text table for logs and error messages."""
        rows = self.moved if only_moved else list(self.rows)
        cells = [("feature", "train", "new", "distance", "threshold", "moved")] + [
            (r.feature, r.train, r.new, _fmt(r.distance, r.test), _fmt(r.threshold, r.test), "yes" if r.moved else "no")
            for r in rows
        ]
        widths = [max(len(c[i]) for c in cells) for i in range(6)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells)


def compare(train: Fingerprint, new: Fingerprint, spec: DriftSpec) -> DriftReport:
    """Compare ``new`` (a sample of the input, its histogram on ``train``'s bin edges) with ``train``."""
    rows = [_histogram_row(train, new, spec.max_psi)]
    for key, name in KS_FEATURES:
        samples = train.image_samples.get(key), new.image_samples.get(key, [])
        rows.append(_ks_row(name, *samples, spec.max_ks, spec.max_unseen))
    for attr, name in _CENSUS:
        rows.append(_census_row(name, getattr(train, attr), getattr(new, attr), spec.max_unseen))
    return DriftReport(tuple(rows), train.n_images, new.n_images)


def embedding_row(train_p95: float, distances: Sequence[float], threshold: float) -> DriftRow:
    """The encoder-embedding row: median of the new cases' ``distances`` / the training ``train_p95``."""
    d = np.asarray(distances, np.float64)
    ratio = float(np.median(d) / train_p95) if len(d) and train_p95 > 0 else float("nan")
    return DriftRow(
        "encoder embedding",
        "median distance / training p95",
        f"p95 distance {train_p95:.3g}",
        f"median {np.median(d):.3g} over {len(d)} cases" if len(d) else "no cases",
        ratio,
        threshold,
        bool(ratio > threshold),
    )


def missing_row(feature: str, test: str, threshold: float, note: str) -> DriftRow:
    """A feature that could not be compared (``note`` says why); it never moves."""
    return DriftRow(feature, test, "-", "-", float("nan"), threshold, False, note)


def _histogram_row(train: Fingerprint, new: Fingerprint, threshold: float) -> DriftRow:
    name, test = "intensity histogram", "psi"
    hist, other = train.intensity_histogram, new.intensity_histogram
    if hist is None:
        return missing_row(name, test, threshold, _NOT_STORED)
    if other is None or tuple(other.edges) != tuple(hist.edges):
        return missing_row(name, test, threshold, "the new sample has no histogram on the training bin edges")
    value = psi(hist.counts, other.counts)
    return DriftRow(name, test, _intensity_text(train), _intensity_text(new), value, threshold, bool(value > threshold))


def _ks_row(
    name: str, train: Sequence[float] | None, new: Sequence[float], threshold: float, max_outside: float
) -> DriftRow:
    if not train:
        return missing_row(name, "ks", threshold, _NOT_STORED)
    statistic, p = ks(train, new)
    outside = outside_share(train, new)
    moved = bool(statistic > threshold and p < ALPHA and outside > max_outside)
    note = f"p = {p:.2g}, {outside:.0%} outside the training range"
    return DriftRow(name, "ks", _spread(train), _spread(new), statistic, threshold, moved, note)


def _census_row(name: str, train: Mapping[object, int], new: Mapping[object, int], threshold: float) -> DriftRow:
    if not train or set(train) == {""}:  # "" alone: the training rows did not carry it
        return missing_row(name, "unseen share", threshold, _NOT_STORED)
    share = unseen_share(train, new)
    return DriftRow(name, "unseen share", _shares(train), _shares(new), share, threshold, bool(share > threshold))


def _intensity_text(fp: Fingerprint) -> str:
    s = fp.intensity_all
    return "-" if s is None else f"mean {s.mean:.4g}, p0.5-p99.5 {s.p00_5:.4g}-{s.p99_5:.4g}"


def _spread(values: Sequence[float]) -> str:
    v = np.asarray(values, np.float64)
    v = v[~np.isnan(v)]
    if not len(v):
        return "-"
    lo, med, hi = np.percentile(v, [0, 50, 100])
    return f"{med:.4g}" if lo == hi else f"median {med:.4g} ({lo:.4g}-{hi:.4g})"


def _shares(counts: Mapping[object, int], top: int = 3) -> str:
    total = sum(counts.values()) or 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    text = ", ".join(f"{k if k != '' else '?'} {100 * n / total:.0f}%" for k, n in ranked[:top])
    return text + (f", +{len(ranked) - top} more" if len(ranked) > top else "")


def _distance(row: DriftRow | None) -> float:
    return float("nan") if row is None else row.distance


def _fmt(value: float, test: str) -> str:
    if math.isnan(value):
        return "-"
    return f"{100 * value:.1f}%" if test == "unseen share" else f"{value:.3g}"


def _finite(value: object) -> object:
    """NaN as None (JSON has no NaN)."""
    return None if isinstance(value, float) and math.isnan(value) else value
