"""``segops plan`` for COCO JSON files: which file (of several, as Roboflow exports one per split),
which folder its image names resolve in, and the task (see :mod:`segops.data.pairing`)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

from segops.data.detection import Detection, PlanOverrides
from segops.data.mask_names import MASK_DIRS
from segops.errors import PlanError


def find_coco(root: Path, files: list[str]) -> tuple[Path, list[Path]] | None:
    """The COCO file with the most annotations, and the other COCO files (Roboflow's and CVAT's
    exports put one per split: ``train/_annotations.coco.json``, ``valid/…``, ``test/…``)."""
    found: list[tuple[int, Path]] = []
    for f in files:
        if f.lower().endswith(".json") and (root / f).stat().st_size < 500 * 2**20:
            try:
                doc = json.loads((root / f).read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(doc, dict) and "images" in doc and "annotations" in doc:
                found.append((len(doc["annotations"]), root / f))
    if not found:
        return None
    found.sort(key=lambda t: (-t[0], str(t[1])))
    return found[0][1], [p for _, p in found[1:]]


def coco_layout(
    root: Path, files: list[str], path: Path, overrides: PlanOverrides, others: list[Path] | None = None
) -> Detection:
    """A COCO file: the image folder is where its ``file_name``s resolve; instance task when an
    image holds two or more objects of one category (touching objects must be kept apart).

    Categories no annotation uses (Roboflow's supercategory ``id: 0``) get no class: the used
    ones are mapped to 1..K in id order (``categories``). ``others``: further COCO files found
    (other splits), named in the note.
    """
    doc = json.loads(path.read_text(encoding="utf-8"))
    names = [str(im["file_name"]) for im in doc["images"]]
    image_dir = _coco_image_dir(root, files, names)
    per_image = Counter((a["image_id"], a["category_id"]) for a in doc["annotations"])
    crowded = max(per_image.values(), default=0) >= 2
    task = overrides.task or ("instance" if crowded else "semantic")
    labels: dict[str, Any] = {"kind": "coco", "path": str(path)}
    if task == "instance":
        labels["instances"] = True
    declared = sorted({int(c["id"]) for c in doc.get("categories", [])})
    used = sorted({int(a["category_id"]) for a in doc["annotations"]})
    unused = [c for c in declared if c not in used]
    if unused and used:
        labels["categories"] = {cid: rank + 1 for rank, cid in enumerate(used)}
    classes = (len(used) if unused and used else len(declared)) + 1
    note = (
        f"COCO file {path.relative_to(root) if path.is_relative_to(root) else path}: {len(names)} images, "
        f"{len(doc['annotations'])} annotations, {classes - 1} categories"
        + (f" (ids {unused[:5]} unused: no class)" if unused and used else "")
        + f"; up to {max(per_image.values(), default=0)} objects of one category per image → {task}"
        + (f"; other COCO files, not read: {', '.join(str(p.relative_to(root)) for p in others[:3])}" if others else "")
    )
    source = {"kind": "images", "path": str(image_dir), "labels": labels}
    mapping = labels.get("categories") or {cid: rank + 1 for rank, cid in enumerate(declared)}  # ranks by default
    named = {int(c["id"]): str(c.get("name", "")) for c in doc.get("categories", [])}
    class_names = {k: named[cid] for cid, k in mapping.items() if named.get(cid)}
    return Detection(
        source, task, classes, "coco", "coco", len(names), len(names), {"labels": note}, class_names=class_names
    )


def _coco_image_dir(root: Path, files: list[str], names: list[str]) -> Path:
    """The folder where the COCO file names resolve (full relative name, else base name); among
    several, one named like an image folder and not like a mask folder."""
    found: set[str] = set()
    for name in names[:20]:
        found |= {f[: len(f) - len(name)].rstrip("/") for f in files if f == name or f.endswith("/" + name)}
    if not found:
        bases = {PurePosixPath(n).name for n in names[:20]}
        found = {str(PurePosixPath(f).parent) for f in files if PurePosixPath(f).name in bases}
    if not found:
        raise PlanError(f"none of the COCO file's first image names ({names[:3]}) is a file under {root}")
    best = max(
        sorted(found),
        key=lambda d: (
            PurePosixPath(d).name.lower().startswith(("image", "img")),
            PurePosixPath(d).name.lower() not in (*MASK_DIRS, "classes"),
        ),
    )
    return root / best if best not in ("", ".") else root
