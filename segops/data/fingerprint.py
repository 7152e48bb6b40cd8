"""Dataset fingerprint: per-record stats (in the Ray tasks) and their aggregate (on the driver).

As nnU-Net's fingerprint extractor: image shapes and spacing, intensity statistics over
foreground pixels (up to ``k`` sampled per case, seeded by the case id, so the whole archive's
figures come from a bounded sample), class pixel fractions and a label census, plus what 2D
inspection and instance data need: the share of images with any foreground and object sizes and
counts per image. Pure numpy/pandas; :mod:`segops.cluster.fingerprint` runs it over an archive.

Intensities are of the channel mean (gray and RGB images alike), after the modality LUT (HU
for CT). Percentiles use numpy's default (linear) interpolation over the pooled samples.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
from scipy import ndimage

from segops.config.sources import IGNORE_LABEL
from segops.data.instances import INSTANCE_STRIDE
from segops.data.splits import patient_unit_map

#: Pixels sampled per case for the intensity statistics (nnU-Net: 10^8 over the dataset).
SAMPLES_PER_CASE = 10_000
#: Pooled samples kept on the driver (a uniform bottom-k sample over all cases).
MAX_POOLED = 2_000_000
#: Object sizes returned per image.
MAX_OBJECTS_PER_CASE = 64
#: Bins of the intensity histogram between the pooled p0.5 and p99.5 (plus an underflow and an overflow bin).
HISTOGRAM_BINS = 50
#: Per-image scalars kept (a uniform sample of images) for the drift check's KS tests.
MAX_IMAGE_SAMPLES = 2_000
#: Left-out files a fingerprint names with their reason (all are counted).
MAX_LEFT_OUT_EXAMPLES = 10
#: The per-image scalars :attr:`Fingerprint.image_samples` holds.
IMAGE_SCALARS = ("mean", "height", "width", "spacing_y", "spacing_x")


@dataclass(frozen=True)
class IntensityStats:
    """Statistics of pooled pixel samples (``samples`` of them)."""

    mean: float
    std: float
    p00_5: float
    p99_5: float
    min: float
    max: float
    samples: int


@dataclass(frozen=True)
class ObjectStats:
    """Objects (instances, or connected foreground blobs of semantic masks) per labelled image.

    Sizes are areas in pixels over a sample of objects (at most 64 per image)."""

    count_median: float
    count_max: int
    size_p05: float
    size_median: float
    size_p95: float


@dataclass(frozen=True)
class Histogram:
    """Counts of pooled intensity samples on fixed bin edges.

    ``counts`` has ``len(edges) + 1`` entries: below ``edges[0]``, each of the ``len(edges) - 1``
    bins (the last one closed), above ``edges[-1]``."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]


def histogram_counts(values: np.ndarray, edges: tuple[float, ...] | np.ndarray) -> tuple[int, ...]:
    """Counts of ``values`` on ``edges`` with an underflow and an overflow bin (see :class:`Histogram`)."""
    edges = np.asarray(edges, np.float64)
    values = np.asarray(values, np.float64)
    inner = np.histogram(values, bins=edges)[0]
    return (int((values < edges[0]).sum()), *(int(c) for c in inner), int((values > edges[-1]).sum()))


@dataclass(frozen=True)
class Fingerprint:
    """What ``segops plan`` decides from, stored beside every trained model (``fingerprint.json``).

    Attributes:
        shapes: ``[height, width, images]``, most common first (at most 20).
        median_shape: (H, W), medians over images.
        median_spacing: (row, column) mm, medians over images ((1, 1) when unknown).
        label_census: class value → (images holding it, pixels), labelled images only.
        class_fractions: class value → share of labelled pixels.
        foreground_image_fraction: share of labelled images with any foreground pixel.
        class_image_fractions: class value (foreground) → (mean, std) over labelled images of the
            class's share of an image's pixels (0 where absent); empty in fingerprints written before
            it existed. The risk score's area z-scores (:mod:`segops.engine.risk`) use it.
        intensity_histogram: the pooled channel-mean samples on :data:`HISTOGRAM_BINS` bins between
            their p0.5 and p99.5 (or on edges given to the accumulator); None in older files.
        image_samples: per-image scalars (:data:`IMAGE_SCALARS`) of a uniform sample of at most
            :data:`MAX_IMAGE_SAMPLES` images, for the drift check; empty in older files.
        transfer_syntaxes, photometrics: images per transfer syntax (file format for images) and
            photometric interpretation; empty in older files.
        planes: images per slice plane (:func:`segops.data.slice_planes.plane_of`: ``axial`` …,
            ``""`` for photos); empty in older files.
        roles: images per DICOM image role (:func:`segops.data.dicom_roles.image_role`: ``localizer``,
            ``secondary``, ``""`` for cross-sections and every other source); empty in older files and
            for datasets ingested before records kept the role.
        spacing_known: images whose source gave their pixel spacing (DICOM, volume files); -1 in
            older files.
        left_out: files (or frames) that decoded to no record: unreadable, or their label could
            not be read or does not fit (a mask of another size); ``left_out_examples`` names
            :data:`MAX_LEFT_OUT_EXAMPLES` of them with the reason.
    """

    task: str
    n_images: int
    n_labelled: int
    n_groups: int
    modalities: dict[str, int]
    channels: dict[int, int]
    shapes: list[list[int]]
    median_shape: tuple[int, int]
    median_spacing: tuple[float, float]
    intensity_all: IntensityStats | None
    intensity_fg: IntensityStats | None
    label_census: dict[int, tuple[int, int]]
    class_fractions: dict[int, float]
    foreground_image_fraction: float
    objects: ObjectStats | None
    samples_per_case: int = SAMPLES_PER_CASE
    seed: int = 0
    class_image_fractions: dict[int, tuple[float, float]] = field(default_factory=dict)
    intensity_histogram: Histogram | None = None
    image_samples: dict[str, list[float]] = field(default_factory=dict)
    transfer_syntaxes: dict[str, int] = field(default_factory=dict)
    photometrics: dict[str, int] = field(default_factory=dict)
    planes: dict[str, int] = field(default_factory=dict)
    roles: dict[str, int] = field(default_factory=dict)
    spacing_known: int = -1
    left_out: int = 0
    left_out_examples: dict[str, str] = field(default_factory=dict)

    @property
    def modality(self) -> str:
        """The most common modality."""
        return max(self.modalities, key=self.modalities.get) if self.modalities else ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Fingerprint:
        """A fingerprint from :meth:`to_json`'s text. Fields this version does not know (a newer segops
        wrote the file: a model registered by it, read here) are left out, not an error."""
        d = json.loads(text)
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["channels"] = {int(k): v for k, v in d["channels"].items()}
        d["label_census"] = {int(k): tuple(v) for k, v in d["label_census"].items()}
        d["class_fractions"] = {int(k): v for k, v in d["class_fractions"].items()}
        d["class_image_fractions"] = {int(k): tuple(v) for k, v in d.get("class_image_fractions", {}).items()}
        d["median_shape"], d["median_spacing"] = tuple(d["median_shape"]), tuple(d["median_spacing"])
        hist = d.get("intensity_histogram")
        d["intensity_histogram"] = Histogram(tuple(hist["edges"]), tuple(hist["counts"])) if hist else None
        for key, kind in (
            ("intensity_all", IntensityStats),
            ("intensity_fg", IntensityStats),
            ("objects", ObjectStats),
        ):
            d[key] = kind(**d[key]) if d[key] is not None else None
        return cls(**d)


def _case_rng(case_id: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, int(hashlib.sha1(case_id.encode()).hexdigest()[:8], 16)])


def _sample(values: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """All of ``values`` when there are at most ``k``, else ``k`` drawn without replacement."""
    return values if len(values) <= k else values[rng.choice(len(values), k, replace=False)]


def record_stats(
    image: np.ndarray,
    label: np.ndarray | None,
    case_id: str,
    task: str = "semantic",
    k: int = SAMPLES_PER_CASE,
    seed: int = 0,
) -> dict[str, Any]:
    """Small stats of one record (computed where the record was decoded).

    Args:
        image: (C, H, W) float32 ((C, Z, H, W) volumes work too).
        label: (H, W) class map (semantic) or instance label map (``class * 65536 + k``, task
            instance); None or empty when unlabelled.

    Returns:
        height, width, channels, has_label, class values and pixel counts, up to ``k`` pixel
        samples of the whole image and of the foreground, object count and sizes.
    """
    rng = _case_rng(case_id, seed)
    gray = image.mean(axis=0, dtype=np.float64).ravel() if image.shape[0] > 1 else image[0].astype(np.float64).ravel()
    row: dict[str, Any] = {
        "height": int(image.shape[-2]),
        "width": int(image.shape[-1]),
        "channels": int(image.shape[0]),
        "all_samples": _sample(gray, k, rng).astype(np.float32),
        "mean": float(gray.mean()) if gray.size else float("nan"),
    }
    has_label = label is not None and label.size > 0
    row["has_label"] = has_label
    if not has_label:
        return row | {
            "class_values": [],
            "class_pixels": [],
            "fg_samples": np.zeros(0, np.float32),
            "object_sizes": [],
            "object_count": -1,
        }
    classes = label // INSTANCE_STRIDE if task == "instance" else label
    values, counts = np.unique(classes, return_counts=True)
    if task != "instance":  # ignored pixels (ignore_void) are no class and no foreground
        values, counts = values[values != IGNORE_LABEL], counts[values != IGNORE_LABEL]
        label = np.where(label == IGNORE_LABEL, 0, label)
        classes = label
    fg = classes.ravel() > 0
    row |= {
        "class_values": values.tolist(),
        "class_pixels": counts.tolist(),
        "fg_samples": _sample(gray[fg], k, rng).astype(np.float32),
    }
    if task == "instance":
        _, sizes = np.unique(label[label > 0], return_counts=True)
    else:
        blobs, n = ndimage.label(label > 0)
        sizes = np.bincount(blobs.ravel())[1:] if n else np.zeros(0, np.int64)
    return row | {
        "object_count": len(sizes),
        "object_sizes": _sample(np.asarray(sizes), MAX_OBJECTS_PER_CASE, rng).tolist(),
    }


class _BottomK:
    """A uniform sample of at most ``cap`` values from a stream: keep the ``cap`` smallest random keys."""

    def __init__(self, cap: int, rng: np.random.Generator):
        self.cap, self.rng = cap, rng
        self.values = np.zeros(0, np.float64)
        self.keys = np.zeros(0, np.float64)

    def add(self, values: np.ndarray) -> None:
        if not len(values):
            return
        self.values = np.concatenate([self.values, np.asarray(values, np.float64)])
        self.keys = np.concatenate([self.keys, self.rng.random(len(values))])
        if len(self.values) > 2 * self.cap:
            self._shrink()

    def _shrink(self) -> None:
        if len(self.values) > self.cap:
            keep = np.argpartition(self.keys, self.cap)[: self.cap]
            self.values, self.keys = self.values[keep], self.keys[keep]

    def result(self) -> np.ndarray:
        self._shrink()
        return self.values


class _RowSample:
    """A uniform sample of at most ``cap`` rows (tuples of floats), by the same bottom-k rule."""

    def __init__(self, cap: int, rng: np.random.Generator):
        self.cap, self.rng = cap, rng
        self.rows: list[tuple[float, ...]] = []
        self.keys: list[float] = []

    def add(self, row: tuple[float, ...]) -> None:
        self.rows.append(row)
        self.keys.append(float(self.rng.random()))
        if len(self.rows) > 2 * self.cap:
            self._shrink()

    def _shrink(self) -> None:
        if len(self.rows) > self.cap:
            keep = sorted(np.argpartition(self.keys, self.cap)[: self.cap])
            self.rows, self.keys = [self.rows[i] for i in keep], [self.keys[i] for i in keep]

    def columns(self, names: tuple[str, ...]) -> dict[str, list[float]]:
        self._shrink()
        return {name: [float(r[i]) for r in self.rows] for i, name in enumerate(names)} if self.rows else {}


@dataclass
class FingerprintAccumulator:
    """Driver-side aggregate of :func:`record_stats` rows; memory bounded by ``max_pooled`` samples
    (plus one id per group, to count them)."""

    task: str = "semantic"
    seed: int = 0
    samples_per_case: int = SAMPLES_PER_CASE
    max_pooled: int = MAX_POOLED
    n_images: int = 0
    n_labelled: int = 0
    n_with_fg: int = 0
    groups: set[str] = field(default_factory=set)
    patients: dict[str, str] = field(default_factory=dict)  # group → PatientID ("" where none)
    modalities: Counter = field(default_factory=Counter)
    channels: Counter = field(default_factory=Counter)
    shapes: Counter = field(default_factory=Counter)
    spacings: Counter = field(default_factory=Counter)
    census: dict[int, list[int]] = field(default_factory=dict)
    object_counts: Counter = field(default_factory=Counter)
    #: class → (sum, sum of squares) over labelled images of the class's share of the image's pixels
    image_fraction_sums: dict[int, list[float]] = field(default_factory=dict)
    #: the intensity histogram's bin edges (the drift check passes the training set's); None: the pooled p0.5-p99.5
    histogram_edges: tuple[float, ...] | None = None
    transfer_syntaxes: Counter = field(default_factory=Counter)
    photometrics: Counter = field(default_factory=Counter)
    planes: Counter = field(default_factory=Counter)
    roles: Counter = field(default_factory=Counter)
    spacing_known: int = 0
    left_out: int = 0
    left_out_examples: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self._all, self._fg, self._sizes = (
            _BottomK(self.max_pooled, rng),
            _BottomK(self.max_pooled, rng),
            _BottomK(100_000, rng),
        )
        self._images = _RowSample(MAX_IMAGE_SAMPLES, np.random.default_rng([self.seed, 1]))

    def add(
        self,
        row: dict[str, Any],
        group_id: str = "",
        modality: str = "",
        spacing: tuple[float, float] = (1.0, 1.0),
        transfer_syntax: str = "",
        photometric: str = "",
        patient_id: str = "",
        plane: str = "",
        spacing_known: bool = False,
        role: str | None = None,
    ) -> None:
        """One record's stats (from :func:`record_stats`) and its metadata (``role``: None where the
        rows do not say)."""
        self.n_images += 1
        if role is not None:
            self.roles[role] += 1
        self.spacing_known += bool(spacing_known)
        self.transfer_syntaxes[transfer_syntax] += 1
        self.photometrics[photometric] += 1
        self.planes[plane] += 1
        mean = row.get("mean", float("nan"))
        self._images.add((mean, row["height"], row["width"], float(spacing[0]), float(spacing[-1])))
        self.groups.add(group_id)
        self.patients.setdefault(group_id, patient_id)
        self.modalities[modality] += 1
        self.channels[row["channels"]] += 1
        self.shapes[(row["height"], row["width"])] += 1
        self.spacings[tuple(round(float(s), 6) for s in spacing)] += 1
        self._all.add(row["all_samples"])
        if not row["has_label"]:
            return
        self.n_labelled += 1
        for value, pixels in zip(row["class_values"], row["class_pixels"]):
            entry = self.census.setdefault(int(value), [0, 0])
            entry[0], entry[1] = entry[0] + 1, entry[1] + int(pixels)
        self.n_with_fg += any(v > 0 for v in row["class_values"])
        total = sum(row["class_pixels"]) or 1
        for value, pixels in zip(row["class_values"], row["class_pixels"]):
            if value > 0:
                sums = self.image_fraction_sums.setdefault(int(value), [0.0, 0.0])
                sums[0], sums[1] = sums[0] + pixels / total, sums[1] + (pixels / total) ** 2
        self._fg.add(row["fg_samples"])
        self.object_counts[row["object_count"]] += 1
        self._sizes.add(np.asarray(row["object_sizes"], np.float64))

    def add_left_out(self, rel_path: str, reason: str) -> None:
        """A file (or frame) that gave no record, and why (the first few are kept by name)."""
        self.left_out += 1
        if len(self.left_out_examples) < MAX_LEFT_OUT_EXAMPLES:
            self.left_out_examples[rel_path] = reason

    def result(self) -> Fingerprint:
        labelled_px = sum(p for _, p in self.census.values()) or 1
        units = patient_unit_map(self.patients)  # as the train step's split counts them
        return Fingerprint(
            task=self.task,
            n_images=self.n_images,
            n_labelled=self.n_labelled,
            n_groups=len({units.get(g, g) for g in self.groups} if units else self.groups),  # split units
            modalities=dict(self.modalities),
            channels={int(k): v for k, v in self.channels.items()},
            shapes=[[h, w, n] for (h, w), n in self.shapes.most_common(20)],
            median_shape=(
                int(_weighted_median({s[0]: n for s, n in self.shapes.items()}, True)),
                int(_weighted_median({s[1]: n for s, n in self.shapes.items()}, True)),
            ),
            median_spacing=(
                _weighted_median({s[0]: n for s, n in self.spacings.items()}),
                _weighted_median({s[-1]: n for s, n in self.spacings.items()}),
            ),
            intensity_all=intensity_stats(self._all.result()),
            intensity_fg=intensity_stats(self._fg.result()),
            label_census={v: (f, p) for v, (f, p) in sorted(self.census.items())},
            class_fractions={v: p / labelled_px for v, (_, p) in sorted(self.census.items())},
            foreground_image_fraction=self.n_with_fg / self.n_labelled if self.n_labelled else 0.0,
            objects=self._objects(),
            samples_per_case=self.samples_per_case,
            seed=self.seed,
            class_image_fractions=self._image_fractions(),
            intensity_histogram=self._histogram(),
            image_samples=self._images.columns(IMAGE_SCALARS),
            transfer_syntaxes=dict(self.transfer_syntaxes),
            photometrics=dict(self.photometrics),
            planes=dict(self.planes),
            roles=dict(self.roles),
            spacing_known=self.spacing_known,
            left_out=self.left_out,
            left_out_examples=dict(self.left_out_examples),
        )

    def _histogram(self) -> Histogram | None:
        """The pooled samples on :attr:`histogram_edges`, or on :data:`HISTOGRAM_BINS` bins between their
        p0.5 and p99.5 (None without samples, or when every sample has the same value)."""
        samples = self._all.result()
        if not len(samples):
            return None
        edges = self.histogram_edges
        if edges is None:
            lo, hi = np.percentile(samples, [0.5, 99.5])
            if hi <= lo:
                return None
            edges = tuple(float(e) for e in np.linspace(lo, hi, HISTOGRAM_BINS + 1))
        return Histogram(tuple(edges), histogram_counts(samples, edges))

    def _image_fractions(self) -> dict[int, tuple[float, float]]:
        """Class → (mean, std) of its per-image pixel share over labelled images (absent counts as 0)."""
        n = self.n_labelled
        out = {}
        for value, (total, squares) in sorted(self.image_fraction_sums.items()):
            mean = total / n
            out[value] = (mean, float(np.sqrt(max(squares / n - mean**2, 0.0))))
        return out

    def _objects(self) -> ObjectStats | None:
        if not self.object_counts:
            return None
        counts = np.repeat(list(self.object_counts), list(self.object_counts.values()))
        sizes = self._sizes.result()
        pct = np.percentile(sizes, [5, 50, 95]) if len(sizes) else [0.0, 0.0, 0.0]
        return ObjectStats(float(np.median(counts)), int(counts.max()), float(pct[0]), float(pct[1]), float(pct[2]))


def _weighted_median(counts: dict[float, int], lower: bool = False) -> float:
    """Median of values given as value → count (``lower``: the lower middle value, no averaging)."""
    if not counts:
        return 1.0
    values = np.repeat(list(counts), list(counts.values()))
    return float(np.sort(values)[(len(values) - 1) // 2]) if lower else float(np.median(values))


def intensity_stats(samples: np.ndarray) -> IntensityStats | None:
    """Mean, std, 0.5/99.5 percentiles, min and max of pooled samples (None when empty)."""
    if not len(samples):
        return None
    lo, hi = np.percentile(samples, [0.5, 99.5])
    return IntensityStats(
        float(samples.mean()),
        float(samples.std()),
        float(lo),
        float(hi),
        float(samples.min()),
        float(samples.max()),
        len(samples),
    )
