"""What ``segops plan`` guessed about an archive (:class:`Detection`) and what the user said
(:class:`PlanOverrides`): the types :mod:`segops.data.pairing` and its layout finders
(:mod:`segops.data.nnunet_layout`, :mod:`segops.data.rle_layout`) return and take."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from segops.data.mask_kinds import MaskCensus
from segops.errors import LabelError

#: Larger annotation files are not read while planning.
MAX_PLAN_BYTES = 200 * 2**20


@dataclass(frozen=True)
class PlanOverrides:
    """What the user said, winning over any guess (``segops plan`` options)."""

    labels: Path | None = None
    pattern: str | None = None
    task: Literal["semantic", "instance"] | None = None
    foreground_value: int | None = None


@dataclass(frozen=True)
class Detection:
    """The guessed source (as a plain dict, the YAML ``source`` block) and why."""

    source: dict[str, Any]
    task: Literal["semantic", "instance"]
    classes: int
    # "parallel-tree", "split-folders", "same-folder", "suffix", "dicom-seg", "coco", "rle-csv", "mask-folder",
    # "labelme", "yolo", "volume-files", "labels-option", "ctc"
    pairing: str
    mask_kind: str  # "binary", "anti-aliased", "multi-class", "colour-coded", "instance-id", "coco", "rle", …
    n_images: int
    n_paired: int
    notes: dict[str, str] = field(default_factory=dict)  # YAML key → why
    census: MaskCensus | None = None
    class_names: dict[int, str] = field(default_factory=dict)  # class → its name where the labels name it
    region_only: bool = False  # every sampled mask is one region (a field of view, DRIVE's mask/): not a label


def annotation_file_detection(
    image_dir: Path,
    labels: dict[str, Any],
    task: Literal["semantic", "instance"],
    names: list[str],
    n_images: int,
    note: str,
) -> Detection:
    """The detection of an annotation-file layout (VIA JSON, CVAT XML) whose images all have an
    entry: an image source at ``image_dir``, classes 1..K named ``names`` in order."""
    source = {"kind": "images", "path": str(image_dir), "labels": labels}
    kind = labels["kind"]
    named = {k + 1: name for k, name in enumerate(names)}
    return Detection(source, task, len(names) + 1, kind, kind, n_images, n_images, {"labels": note}, class_names=named)


def annotation_files_spec(kind: str, root: Path, files: list[str], task: str, **fields: Any) -> dict[str, Any]:
    """The labels spec of annotation files under ``root`` read as one dataset: the first file as
    ``path``, the others as ``more_files``, ``fields`` (VIA's ``attribute``), and ``instances`` for
    the instance task."""
    spec: dict[str, Any] = {"kind": kind, "path": str(root / files[0])}
    if len(files) > 1:
        spec["more_files"] = [str(root / f) for f in files[1:]]
    spec |= fields
    if task == "instance":
        spec["instances"] = True
    return spec


def read_annotation_files(
    root: Path, files: list[str], suffix: str, read: Callable[[Path], Any]
) -> list[tuple[str, Any]]:
    """(file, ``read(file)``) of the ``files`` under ``root`` that end in ``suffix`` (any case), are at
    most :data:`MAX_PLAN_BYTES` and that ``read`` takes: a file it refuses with a LabelError is
    another kind of file, passed over."""
    found = []
    for f in sorted(files):
        if not f.lower().endswith(suffix) or (root / f).stat().st_size > MAX_PLAN_BYTES:
            continue
        try:
            found.append((f, read(root / f)))
        except LabelError:
            continue
    return found
