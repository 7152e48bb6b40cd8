"""Outline files beside their images, one per image (LabelMe JSON, Aperio ImageScope XML): which
folder pair holds them, the images without one, folders outside with their own, and ``segops plan``'s
detection shared by the formats (:func:`find_outlines`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from segops.data.detection import Detection
from segops.data.mask_names import is_mask_dir
from segops.data.unannotated import clean_parts
from segops.errors import LabelError

#: Files ``segops plan`` reads for the class names (all of them up to this many, else a spread sample).
PLAN_FILES = 2000


def find_outlines(
    root: Path,
    files: list[str],
    pictures: list[str],
    task: str | None,
    kind: str,
    ext: str,
    tool: str,
    regions: Callable[[Path], list[str]],
) -> Detection | None:
    """Outline files of ``kind`` (``ext``, named ``tool`` in notes) beside their images (``x.jpg`` +
    ``x.json``) or in a mask-named sibling folder (``images/x.jpg`` + ``annotations/x.json``), or None
    when fewer than half of the images under the image folder have one (unless each outlines
    something: parts labelled only where there is a defect) or the files are of another kind.
    ``regions(path)``: the class name of each area region in a file, raising :class:`LabelError` for a
    file of another kind. Classes: every name in the files (read all up to :data:`PLAN_FILES`, else a
    spread sample), numbered 1..K in sorted order; instance task when an image holds two regions of
    one name, as for COCO."""
    sidecars = {f for f in files if f.lower().endswith(ext)}
    best = sidecar_pairs(sidecars, pictures, ext)
    if best is None:
        return None
    under, paired, image_dir, label_dir = best
    few = len(paired) < 0.5 * len(under)  # files for defective parts only (the clean ones need none)?
    if len(paired) < 2 or (few and any(is_mask_dir(part) for f in files for part in PurePosixPath(f).parts[:-1])):
        return None  # a mask folder is there: the masks label the images, not a few stray files
    step = max(1, len(paired) // PLAN_FILES)
    sample = [root / (label_dir + str(PurePosixPath(p).with_suffix(ext))) for p in paired[::step]]
    try:
        docs = [regions(path) for path in sample[:20]]
    except LabelError:
        return None  # files of another kind
    names = sorted(
        {name for d in docs for name in d} | {n for path in sample[20:] for n in _names_or_none(regions, path)}
    )
    if not names or (few and not all(docs)):
        return None
    crowded = max((n for d in docs for n in Counter(d).values()), default=0)
    chosen = task or ("instance" if crowded >= 2 else "semantic")
    classes = {name: k + 1 for k, name in enumerate(names)}
    labels: dict[str, Any] = {
        "kind": kind,
        "path": str(root / label_dir) if label_dir else str(root),
        "pattern": "{rel_stem}" + ext,
        "classes": classes,
    }
    if chosen == "instance":
        labels["instances"] = True
    read = f"{len(sample)} read" if step > 1 else "all read"
    where = f"in {label_dir[:-1]}" if label_dir else "beside their images"
    notes = {
        "labels": (
            f"{tool} files {where}: {len(paired)} of {len(under)} images have one ({read}); names → classes "
            f"1..{len(names)} in name order; up to {crowded} regions of one name per image → {chosen}"
        )
    }
    image_root = root / image_dir if image_dir else root
    n_paired = len(paired) + without_file(root, files, image_root, under, paired, few, labels, notes, tool)
    if note := outside_note(root, sidecars, pictures, image_dir, ext, tool):
        notes["path"] = note
    source = {"kind": "images", "path": str(image_root), "labels": labels}
    named = {k: name for name, k in classes.items()}
    return Detection(source, chosen, len(names) + 1, kind, kind, len(under), n_paired, notes, class_names=named)


def _names_or_none(regions: Callable[[Path], list[str]], path: Path) -> list[str]:
    try:
        return regions(path)
    except LabelError:
        return []


def sidecar_pairs(sidecars: set[str], pictures: list[str], ext: str) -> tuple[list[str], list[str], str, str] | None:
    """(the pictures under the image folder, those with an ``ext`` file of their name among ``sidecars``,
    the image folder and the annotation folder as prefixes) for the folder pair where the most pictures
    have one: beside them ("", "") or in a mask-named sibling folder; None where no pair is possible."""
    best: tuple[list[str], list[str], str, str] | None = None
    for image_dir, label_dir in _folder_pairs(sidecars, pictures):
        under = [p[len(image_dir) :] for p in pictures if p.startswith(image_dir)]
        paired = [p for p in under if label_dir + str(PurePosixPath(p).with_suffix(ext)) in sidecars]
        if best is None or len(paired) > len(best[1]):
            best = (under, paired, image_dir, label_dir)
    return best


def outside_note(
    root: Path, sidecars: set[str], pictures: list[str], image_dir: str, ext: str, tool: str
) -> str | None:
    """A note on the pictures outside ``image_dir`` (a prefix) that have an ``ext`` file of their own
    among ``sidecars`` beside them (MoNuSeg's ``MoNuSegTestData/`` beside the training folder pair):
    left out, with the command that plans them; None where there are none."""
    outside = [
        p for p in pictures if not p.startswith(image_dir) and str(PurePosixPath(p).with_suffix(ext)) in sidecars
    ]
    if not image_dir or not outside:
        return None
    folders = sorted({str(PurePosixPath(p).parent) for p in outside})
    return (
        f"{len(outside)} image(s) outside it have {tool} files of their own ({', '.join(folders[:3])}): left out "
        f"(another split?); plan them with: segops plan {root / folders[0]}"
    )


def without_file(
    root: Path,
    files: list[str],
    image_root: Path,
    under: list[str],
    paired: list[str],
    few: bool,
    labels: dict[str, Any],
    notes: dict[str, str],
    tool: str = "LabelMe",
) -> int:
    """How many images without a ``tool`` file are planned as empty (``empty_when_missing``, set in
    ``labels``): all of them when ``few`` images have a file (fewer than half; each outlining
    something, as :func:`find_labelme` checked: parts labelled only where there is a defect, as in
    DAGM) and they look like the labelled ones, are not named as test data and are not annotated
    elsewhere; else none (unlabelled, said in ``notes``: with most images labelled, the rest are
    more likely not labelled yet)."""
    done = set(paired)
    missing = [p for p in under if p not in done]
    if not missing:
        return 0
    if few and clean_parts(root, files, image_root, paired, missing)[0]:
        labels["empty_when_missing"] = ["**"]
        notes["labels.empty_when_missing"] = (
            f"every sampled {tool} file outlines something, so the {len(missing)} image(s) without one are "
            "the defect-free parts: trained on and scored as empty masks; delete this line if they are "
            "merely not annotated yet"
        )
        return len(missing)
    notes["labels"] += f"; {len(missing)} image(s) have no {tool} file: unlabelled (segmented, never trained on)"
    return 0


def _folder_pairs(sidecars: set[str], pictures: list[str]) -> list[tuple[str, str]]:
    """("", "") and ("<parent>/<image dir>/", "<parent>/<mask-named dir>/") for sibling folders that
    hold the pictures and the annotation files (prefixes, "" for the root)."""
    pairs = {("", "")}
    json_dirs = {PurePosixPath(f).parts[:d] for f in sidecars for d in range(1, len(PurePosixPath(f).parts))}
    for picture in pictures:
        parts = PurePosixPath(picture).parts
        for d in range(len(parts) - 1):
            for dirs in json_dirs:
                if len(dirs) == d + 1 and dirs[:d] == parts[:d] and dirs[d] != parts[d] and is_mask_dir(dirs[d]):
                    pairs.add(("/".join(parts[: d + 1]) + "/", "/".join(dirs) + "/"))
    return sorted(pairs)
