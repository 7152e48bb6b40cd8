"""``segops plan`` for volume files (NIfTI, NRRD, MHA) outside the nnU-Net layout: which files
are images, which their labels, and the ``pattern`` that joins them.

Layouts found by trying, for a sample of images, every pattern that names a label-like file
(:data:`LABEL_WORDS` in its name, or under a mask-named folder) from the image's own name:

- a folder per case with fixed names: KiTS' ``<case>/imaging.nii.gz`` + ``<case>/segmentation.nii.gz``
  → ``{rel_dir}/segmentation.nii.gz``;
- the case's number under another word: LiTS' ``volume-12.nii`` + ``segmentation-12.nii``
  → ``{rel_dir}/segmentation-{case_number}.nii``; BTCV's ``img/img0001.nii.gz`` +
  ``label/label0001.nii.gz`` (labels folder ``label``) → ``{rel_dir}/label{case_number}.nii.gz``;
- a suffix: ``x.nii.gz`` + ``x_seg.nii.gz`` → ``{rel_dir}/{case}_seg.nii.gz``;
- the same name in a mask-named sibling folder: ``images/x.nrrd`` + ``masks/x.nrrd``;
- one binary file per structure in a mask-named folder of each case (TotalSegmentator, AbdomenAtlas:
  ``s0001/ct.nii.gz`` + ``s0001/segmentations/liver.nii.gz`` …) → ``structures`` and
  ``{rel_dir}/segmentations/{structure}.nii.gz``.

The pattern naming the most labels wins, provided it pairs at least half of the images and
nearly every paired image has a label of its own. Pure: names only, and a few label files read
for the number of classes; the headers of a sample of images for the plane they are cut in
(:func:`planned_slice_plane`).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path, PurePosixPath

import numpy as np

from segops.data.detection import Detection
from segops.data.globs import path_selected
from segops.data.mask_names import is_mask_dir
from segops.data.nnunet_layout import VOLUME_EXTS, named_channels, volume_classes
from segops.data.seg_layout import common_dir
from segops.data.slice_planes import SlicePlane, plan_slice_plane
from segops.data.volume_labels import label_path_of, slicer_segment_names
from segops.data.volumes import case_of, channel_case_of, file_grid, volume_extension
from segops.errors import PlanError

log = logging.getLogger(__name__)

#: Words that make a volume file a label (case-insensitive, not inside a longer word).
LABEL_WORDS = re.compile(
    r"(?<![a-z])(seg|segs|segmentations?|labels?|masks?|gt|ground_?truth|annotations?)(?![a-z])", re.IGNORECASE
)
#: Images whose patterns are proposed (the proposals are then counted on every image).
PROPOSING = 20


def find_volume_pairs(root: Path, files: list[str], pictures: list[str], sample: int = 5) -> Detection | None:
    """The volumes source of the archive under ``root``, or None when it holds fewer volume files
    than pictures (or none).

    Raises:
        PlanError: volume files that no pattern pairs with labels (the message says what to write).
    """
    volumes = [f for f in files if volume_extension(f, VOLUME_EXTS)]
    if not volumes or len(volumes) < len(pictures):
        return None
    labelish = {f for f in volumes if _label_like(f)}
    images = [f for f in volumes if f not in labelish]
    structures = _structure_folders(root, images, labelish)
    if structures is not None:
        return structures
    channels = named_channels(images)
    if channels and _labelled_apart(images, labelish, channels):
        channels = ()  # ACDC: <case>_frame01 and <case>_frame12 each have their _gt: cases of their own
    if channels:  # BraTS: a case is read from its first channel's file, with the others beside it
        images = [i for i in images if case_of(i, VOLUME_EXTS, channels)[1] in (0, None)]
    found = Counter(volumes)
    best: tuple[int, str, str, str, int, int] | None = None  # (hits, image root, label root, pattern, images, rank)
    for image_root, label_root in _roots(images, labelish):
        under = [_relative(i, image_root) for i in images if _inside(i, image_root)]
        labels_rel = {_relative(f, label_root) for f in labelish if _inside(f, label_root)}
        cases = {i: _case(i, image_root, found, channels) for i in under}
        for pattern in sorted(_proposals(under[:PROPOSING], labels_rel, cases)):
            named = [_named(pattern, i, cases[i]) for i in under]
            paths = [_join(label_root, n) for n in named]
            hits = sum(1 for p in paths if p in found)
            distinct = len({p for p in paths if p in found})
            if hits and distinct >= 0.9 * hits and (best is None or (hits, -_rank(pattern)) > (best[0], -best[5])):
                best = (hits, image_root, label_root, pattern, len(under), _rank(pattern))
    if best is None or best[0] < 0.5 * best[4]:
        raise PlanError(
            f"found {len(volumes)} volume files under {root} ({len(labelish)} named like labels) but no pattern "
            "pairs most images with a label file; write the source by hand: kind volumes with labels {kind: volume, "
            "path, pattern} (fields case, rel_dir, case_number, e.g. '{rel_dir}/{case}_seg.nii.gz'). Cases of "
            "several files are named as nnU-Net's channels (<case>_0000.nii.gz …) or by the source's channels "
            "(BraTS' <case>_flair.nii.gz …: channels: [flair, t1, t1ce, t2])"
        )
    hits, image_root, label_root, pattern, n_images, _ = best
    paired = [
        _join(label_root, _named(pattern, rel, _case(rel, image_root, found, channels)))
        for rel in (_relative(i, image_root) for i in images if _inside(i, image_root))
    ]
    classes, why, names = _label_classes([root / p for p in paired if p in found][:sample])
    source: dict = {"kind": "volumes", "path": str(root / image_root)}
    notes = {
        "labels": f"volume files: {hits} of {n_images} cases have a label ({pattern} under {label_root or '.'}); {why}"
    }
    unlabelled = [
        i for i, p in zip((i for i in images if _inside(i, image_root)), paired, strict=True) if p not in found
    ]
    odd = [] if channels else _other_depth(root, images, set(unlabelled), sample)
    if odd:  # ACDC's <case>_4d.nii.gz: a cine of many frames beside the labelled ones, no volume of the model's
        tails = {PurePosixPath(f).name.rpartition("_")[2] for f in odd}
        glob = f"**/*_{tails.pop()}" if len(tails) == 1 else None  # one glob where they share a last word
        others = [_relative(i, image_root) for i in images if _inside(i, image_root) and i not in odd]
        one = glob is not None and all(path_selected(f, exclude=(glob,)) for f in others)
        source["exclude"] = [glob] if one else [_relative(f, image_root) for f in odd]
        n_images -= len(odd)
        notes["exclude"] = (
            f"{len(odd)} unlabelled file(s) of another number of channels or frames than every labelled case (a "
            "cine or time series, e.g. " + PurePosixPath(odd[0]).name + "): no input of this model"
        )
    if channels:
        source["channels"] = list(channels)
        notes["channels"] = (
            f"each case is {len(channels)} files, <case>_<channel>: {', '.join(channels)} (in this order, the model's "
            "input channels; name order unless you reorder them here and retrain)"
        )
    source["labels"] = {"kind": "volume", "path": str(root / label_root), "pattern": pattern}
    return Detection(source, "semantic", classes, "volume-files", "volume", n_images, hits, notes, class_names=names)


def _other_depth(root: Path, images: list[str], unlabelled: set[str], sample: int) -> list[str]:
    """The unlabelled volume files whose channel count (a 4D file's fourth axis) no labelled one has,
    read from NIfTI headers (other formats: none); labelled ones sampled, every unlabelled one read."""
    import nibabel as nib

    def depth(f: str) -> int | None:
        if not f.lower().endswith((".nii", ".nii.gz")):
            return None
        try:
            shape = nib.load(str(root / f)).shape
        except Exception:  # noqa: BLE001 - an unreadable file is for ingest to quarantine
            return None
        return int(shape[3]) if len(shape) > 3 else 1

    labelled = {depth(f) for f in [i for i in images if i not in unlabelled][:sample]} - {None}
    return sorted(f for f in unlabelled if labelled and (d := depth(f)) is not None and d not in labelled)


def _labelled_apart(images: list[str], labelish: set[str], channels: tuple[str, ...]) -> bool:
    """Whether files named as channels (``<case>_<word>``) have label files of their own, named after them
    (``<case>_<word>_gt``) for two or more of the words: cases, not channels of one (ACDC's
    ``patient001_frame01.nii.gz`` + ``patient001_frame01_gt.nii.gz``, the same for ``frame12``)."""
    label_stems = {_stem(f) for f in labelish}
    words = set()
    for f in images:
        stem = _stem(f)
        word = stem.rpartition("_")[2]
        if word in channels and any(
            len(s) > len(stem) and s.startswith(stem) and s[len(stem)] in "_-." for s in label_stems
        ):
            words.add(word)
    return len(words) >= 2


def _stem(f: str) -> str:
    """A volume file's path without its volume extension (``.nii.gz`` is one)."""
    return f[: len(f) - len(volume_extension(f, VOLUME_EXTS) or "")]


def _structure_folders(root: Path, images: list[str], labelish: set[str]) -> Detection | None:
    """TotalSegmentator's and AbdomenAtlas' layout, or None: a folder per case holding its image and a
    mask-named folder (``segmentations/``) of one binary file per structure, the same names in every
    case. Structures are numbered in name order; the pattern is ``{rel_dir}/<folder>/{structure}<ext>``."""
    by_parent: dict[str, dict[str, list[str]]] = {}  # case folder → mask-named child → its file names
    for f in labelish:
        path = PurePosixPath(f)
        if is_mask_dir(path.parent.name):
            case_dir = path.parent.parent.as_posix()
            by_parent.setdefault(case_dir, {}).setdefault(path.parent.name, []).append(path.name)
    image_dirs = Counter(PurePosixPath(i).parent.as_posix() for i in images)
    cases = [d for d, n in image_dirs.items() if n == 1 and any(len(v) >= 2 for v in by_parent.get(d, {}).values())]
    if not cases or len(cases) < 0.5 * len(images):
        return None
    folder = Counter(k for d in cases for k, v in by_parent[d].items() if len(v) >= 2).most_common(1)[0][0]
    files = Counter(name for d in cases for name in by_parent[d].get(folder, []))
    ext = Counter(volume_extension(n, VOLUME_EXTS) or "" for n in files).most_common(1)[0][0]
    names = sorted(n[: len(n) - len(ext)] for n in files if n.endswith(ext))
    if files.most_common(1)[0][1] < 0.5 * len(cases):  # no name shared by most cases: not one set of structures
        return None
    structures = {name: k for k, name in enumerate(names, start=1)}
    pattern = f"{{rel_dir}}/{folder}/{{structure}}{ext}"
    source = {
        "kind": "volumes",
        "path": str(root),
        "labels": {"kind": "volume", "path": str(root), "pattern": pattern, "structures": structures},
    }
    partial = [n for n in names if files[n + ext] < len(cases)]
    note = (
        f"per-structure label files: {len(cases)} of {len(images)} cases have a {folder}/ folder of "
        f"{len(names)} structures ({pattern}), numbered in name order; where structures overlap the first "
        "listed wins"
        + (f"; missing in some cases (empty there): {', '.join(partial[:5])}" if partial else "")
        + (f" and {len(partial) - 5} more" if len(partial) > 5 else "")
    )
    class_names = {k: name for name, k in structures.items()}
    return Detection(
        source,
        "semantic",
        len(names) + 1,
        "volume-files",
        "volume",
        len(images),
        len(cases),
        {"labels": note},
        class_names=class_names,
    )


def _rank(pattern: str) -> int:
    """Of patterns that pair as many images: the case's name first, then its number, then a fixed name."""
    return 0 if "{case}" in pattern else 1 if "{case_number}" in pattern else 2


def _label_like(f: str) -> bool:
    parts = PurePosixPath(f).parts
    stem = parts[-1][: len(parts[-1]) - len(volume_extension(parts[-1], VOLUME_EXTS) or "")]
    return LABEL_WORDS.search(stem) is not None or any(is_mask_dir(p) for p in parts[:-1])


def _roots(images: list[str], labelish: set[str]) -> list[tuple[str, str]]:
    """("", "") and every (image folder, mask-named sibling folder) pair that holds images and labels."""
    pairs = {("", "")}
    image_dirs = {PurePosixPath(i).parts[:d] for i in images for d in range(1, len(PurePosixPath(i).parts))}
    for f in labelish:
        parts = PurePosixPath(f).parts
        for d in range(len(parts) - 1):
            if is_mask_dir(parts[d]):
                for dirs in image_dirs:
                    if len(dirs) == d + 1 and dirs[:d] == parts[:d] and dirs[d] != parts[d]:
                        pairs.add(("/".join(dirs), "/".join(parts[: d + 1])))
    return sorted(pairs)


def _label_classes(sampled: list[Path]) -> tuple[int, str, dict[int, str]]:
    """(classes, why, class names) of label volumes: the classes their values hold
    (:func:`volume_classes`), or as many as a 3D Slicer header names (its segments, numbered in
    order in a file of several layers), and those names."""
    classes, why = volume_classes({}, sampled)
    names = next((n for n in map(slicer_segment_names, sampled) if n), {})
    return max(classes, max(names, default=0) + 1), why, names


def _case(rel_image: str, image_root: str, listed: Counter[str], channels: tuple[str, ...] = ()) -> str:
    """The case name of an image (relative to ``image_root``): its name less extension and channel suffix."""
    return channel_case_of(rel_image, VOLUME_EXTS, lambda rel: _join(image_root, rel) in listed, channels)[0]


def _proposals(images: list[str], labels: set[str], cases: dict[str, str]) -> set[str]:
    """Patterns that name a label of the same relative folder from an image's name."""
    by_dir: dict[str, list[str]] = {}
    for label in labels:
        by_dir.setdefault(PurePosixPath(label).parent.as_posix(), []).append(PurePosixPath(label).name)
    out = set()
    for image in images:
        folder, case = PurePosixPath(image).parent.as_posix(), cases[image]
        number = re.search(r"[0-9]+$", case)
        for name in by_dir.get(folder, []):
            out.add("{rel_dir}/" + name)  # a fixed name per case folder
            if name.startswith(case):
                out.add("{rel_dir}/{case}" + name[len(case) :])
            stem = name[: len(name) - len(volume_extension(name, VOLUME_EXTS) or "")]
            if number and stem.endswith(number[0]):
                out.add("{rel_dir}/" + stem[: len(stem) - len(number[0])] + "{case_number}" + name[len(stem) :])
    return out


def _named(pattern: str, rel_image: str, case: str) -> str:
    """The label path (relative to the label root) ``pattern`` names for an image (relative to the
    image root) of case ``case``."""
    folder = PurePosixPath(rel_image).parent.as_posix()
    return label_path_of("", pattern, case, "" if folder == "." else folder).as_posix()


def _inside(f: str, folder: str) -> bool:
    return not folder or f.startswith(folder + "/")


def _relative(f: str, folder: str) -> str:
    return f[len(folder) + 1 :] if folder else f


def _join(folder: str, rel: str) -> str:
    return f"{folder}/{rel}" if folder else rel


def find_dicom_volume_labels(root: Path, dicom: list[str], files: list[str], sample: int = 5) -> Detection | None:
    """A DICOM archive whose series are labelled by label volumes (NIfTI, NRRD …: ITK-SNAP's and 3D
    Slicer's segmentations, NIH Pancreas-CT's ``label0001.nii.gz`` for ``PANCREAS_0001/``): the
    pattern (relative to ``root``; ``{case}`` the first folder of a DICOM file below the folder that
    holds them all, ``{case_number}`` its trailing digits) naming a label for the most cases, at
    least half of them; else None."""
    volumes = [f for f in files if volume_extension(f, VOLUME_EXTS) and "{" not in f and "}" not in f]
    base = common_dir(dicom)  # the DICOM source's folder: each case a folder below it
    under = [_relative(f, base) for f in dicom]
    cases = sorted({PurePosixPath(f).parts[0] for f in under if len(PurePosixPath(f).parts) > 1})
    if not volumes or len(cases) < 2:
        return None
    found = set(volumes)
    candidates: set[str] = set()
    for case in cases[:PROPOSING]:  # patterns proposed from a few cases, then counted on all
        number = re.search(r"[0-9]+$", case)
        for volume in volumes:
            if case in volume:
                candidates.add("{case}".join(volume.split(case)))
            if number and number[0] in PurePosixPath(volume).name:
                name = PurePosixPath(volume).name.replace(number[0], "{case_number}", 1)
                candidates.add(str(PurePosixPath(volume).with_name(name)))
    counts = {p: sum(1 for c in cases if label_path_of("", p, c, "").as_posix() in found) for p in candidates}
    if not counts:
        return None
    pattern, hits = max(counts.items(), key=lambda kv: (kv[1], "{case}" in kv[0], -len(kv[0])))
    if hits < max(2, 0.5 * len(cases)):
        return None
    paths = [root / label_path_of("", pattern, c, "") for c in cases]
    classes, why, names = _label_classes([p for p in paths if p.is_file()][:sample])
    labels = {"kind": "volume", "path": str(root), "pattern": pattern}
    source = {"kind": "dicom", "path": str(root / base), "labels": labels}
    note = (
        f"label volumes of DICOM series: {hits} of {len(cases)} cases (first folders) have one ({pattern}); each "
        f"slice's label is its plane of the volume, read at the slice's position; {why}"
    )
    return Detection(
        source, "semantic", classes, "volume-files", "volume", len(cases), hits, {"labels": note}, class_names=names
    )


def planned_slice_plane(paths: list[str], sample: int = 40) -> tuple[SlicePlane, str] | None:
    """The ``slice_plane`` a volume source of the files ``paths`` (one per case) needs, and why
    (:func:`segops.data.slice_planes.plan_slice_plane`), from the headers of a spread sample of
    them; files of one slice and unreadable ones are left out (ingest quarantines those)."""
    step = max(1, len(paths) // sample)
    grids = []
    for path in paths[::step][:sample]:
        try:
            shape, _components, affine, _fmt = file_grid(path)
        except Exception as exc:  # an unreadable file says nothing about the archive's planes
            log.debug("slice plane: %s not read: %s", path, exc)
            continue
        if min(shape) > 1:
            steps = np.linalg.norm(affine[:3, :3], axis=0)
            grids.append(((float(steps[0]), float(steps[1]), float(steps[2])), affine))
    return plan_slice_plane(grids)
