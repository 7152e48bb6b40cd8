"""``segops plan`` for archives that store one binary mask file per object, in a folder per image
(:class:`~segops.config.sources.MaskFolderLabels`):

- per case: ``<case>/images/<name>.png`` beside ``<case>/masks/*.png`` (the Data Science Bowl
  2018 nuclei layout): pattern ``{parent_dir}/masks``;
- parallel trees: ``images/<name>.png`` and ``masks/<name>/*.png``: pattern ``{rel_stem}``.

Pure (no Ray), names only, except for counting each sampled folder's mask files.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path, PurePosixPath
from typing import Any

from segops.data.detection import Detection
from segops.data.mask_files import MASK_FOLDER_EXTS
from segops.data.mask_names import is_mask_dir, normal_folders

#: A layout counts when at least this share of the images (outside mask folders) has a mask folder of its own.
MIN_SHARE = 0.5


def find_mask_folders(root: Path, files: list[str], pictures: list[str], task: str | None = None) -> Detection | None:
    """The mask-folder layout of the archive under ``root``, or None when it is not one.

    ``pictures``: the image files (relative paths); ``task``: the user's ``--task``, else instance
    when an image has two or more mask files (objects that touch must be kept apart), as for COCO.
    """
    in_folders = _mask_folder_files(files)
    images = [p for p in pictures if str(PurePosixPath(p).parent) not in in_folders]
    if len(images) < 2:
        return None
    for finder in (_per_case, _parallel):
        found = finder(images, in_folders)
        if found is None:
            continue
        distinct = len(set(found[3].values()))  # a folder per image, not one for all
        rel = _under(images, found[0])
        normal = set(normal_folders(rel, set(_under(list(found[3]), found[0]))))
        eligible = [i for i in rel if str(PurePosixPath(i).parent) not in normal]  # not MVTec's good/
        own = distinct >= 0.9 * len(found[3])  # each image its own folder, not train/masks for all of train/
        if own and distinct >= MIN_SHARE * len(eligible) and distinct >= 2:
            return _detection(root, images, in_folders, *found, task)
    return None


def _under(paths: list[str], folder: str) -> list[str]:
    """The paths under ``folder``, relative to it."""
    return [p[len(folder) + 1 :] for p in paths if p.startswith(folder + "/")] if folder else list(paths)


def _mask_folder_files(files: list[str]) -> dict[str, int]:
    """Folders under a mask-named folder (or mask-named themselves) → how many mask files they hold."""
    counts: Counter[str] = Counter()
    for f in files:
        path = PurePosixPath(f)
        if path.suffix.lower() in MASK_FOLDER_EXTS and any(is_mask_dir(part) for part in path.parts[:-1]):
            counts[str(path.parent)] += 1
    return dict(counts)


Found = tuple[str, str, str, dict[str, str]]  # (image root, label root, pattern, image → its mask folder)


def _per_case(images: list[str], folders: dict[str, int]) -> Found | None:
    """``<base>/<case>/<image dir>/<name>`` with ``<base>/<case>/<mask dir>/`` holding mask files."""
    by_base: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for image in images:
        parts = PurePosixPath(image).parts
        if len(parts) < 3:
            continue
        case = PurePosixPath(*parts[:-2])
        for mask_dir in (d for d in _children(folders, str(case)) if is_mask_dir(d)):
            base = str(case.parent) if str(case.parent) != "." else ""
            by_base[(base, mask_dir)][image] = str(case / mask_dir)
    if not by_base:
        return None
    (base, mask_dir), found = max(by_base.items(), key=lambda kv: (len(kv[1]), kv[0]))
    return base, base, "{parent_dir}/" + mask_dir, found


def _parallel(images: list[str], folders: dict[str, int]) -> Found | None:
    """``<base>/<image dir>/<rel>.<ext>`` with ``<base>/<mask dir>/<rel>/`` holding mask files."""
    by_pair: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for image in images:
        parts = PurePosixPath(image).parts
        for depth in range(len(parts) - 1):
            base = "/".join(parts[:depth])
            rel_stem = str(PurePosixPath(*parts[depth + 1 :]).with_suffix(""))
            for mask_dir in (d for d in _children(folders, base) if is_mask_dir(d) and d != parts[depth]):
                folder = "/".join(p for p in (base, mask_dir, rel_stem) if p)
                if folder in folders:
                    by_pair[("/".join(parts[: depth + 1]), "/".join(p for p in (base, mask_dir) if p))][image] = folder
    if not by_pair:
        return None
    (image_root, label_root), found = max(by_pair.items(), key=lambda kv: (len(kv[1]), kv[0]))
    return image_root, label_root, "{rel_stem}", found


def _children(folders: dict[str, int], parent: str) -> set[str]:
    """Names of the folders directly below ``parent`` on the way to a mask folder."""
    depth = len(PurePosixPath(parent).parts) if parent else 0
    prefix = parent + "/" if parent else ""
    return {
        PurePosixPath(f).parts[depth] for f in folders if f.startswith(prefix) and len(PurePosixPath(f).parts) > depth
    }


def _detection(
    root: Path,
    images: list[str],
    folders: dict[str, int],
    image_root: str,
    label_root: str,
    pattern: str,
    found: dict[str, str],
    task: str | None,
) -> Detection:
    rel, paired = _under(images, image_root), set(_under(list(found), image_root))
    most = max(folders[f] for f in found.values())
    chosen = task or ("instance" if most >= 2 else "semantic")
    labels: dict[str, Any] = {"kind": "mask-folder", "path": str(root / label_root), "pattern": pattern}
    if chosen == "instance":
        labels["instances"] = True
    notes = {
        "labels": f"one mask file per object, a folder per image ({pattern} under {label_root or '.'}): "
        f"{len(found)} of {len(rel)} images have one, up to {most} mask files each → {chosen}"
    }
    normal = normal_folders(rel, paired)  # MVTec LOCO's test/good: no mask folder, nothing to segment
    n_normal = sum(1 for i in rel if i not in paired and str(PurePosixPath(i).parent) in normal)
    if normal:
        labels["empty_when_missing"] = [f"{d}/**" for d in normal]
        notes["labels.empty_when_missing"] = (
            f"{n_normal} images in {', '.join(normal)} have no mask folder: defect-free by the folder's name, "
            "trained on as empty masks"
        )
    source = {"kind": "images", "path": str(root / image_root), "labels": labels}
    return Detection(source, chosen, 2, "mask-folder", "mask-folder", len(rel), len(found) + n_normal, notes)
