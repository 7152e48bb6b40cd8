"""Whether images without a mask are merely not annotated for segmentation, not empty.

Industrial sets (DAGM, KolektorSDD) draw masks only where there is a defect, so an image without
one is a clean part; photo sets (Pascal VOC: 17,125 photos, 2,913 with masks) segment a subset,
and the rest hold objects nobody outlined. Trained as empty masks, those photos would teach a
model that people and cats are background. Two signs tell the second kind apart, read from the
folder alone:

1. **Annotations of another task** beside the images: most images without a mask have a file of
   the same stem naming objects (Pascal VOC's ``Annotations/<stem>.xml`` with ``<object>``, YOLO
   ``labels/<stem>.txt`` box lines, JSON with ``shapes``/``objects``/``annotations``).
2. **A split list of the masked images**: a ``train.txt``/``val.txt``/``trainval.txt`` (VOC's
   ``ImageSets/Segmentation``) whose names are the masked images only.

Pure (no Ray): opens at most ``sample`` small text files.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

#: Sidecar annotation files that can name the objects of the image of the same stem.
SIDECAR_EXTS = (".xml", ".txt", ".json")
#: Stems of list files that name a dataset's split.
SPLIT_LIST_NAMES = frozenset({"train", "val", "trainval", "test", "training", "validation", "valid"})
#: Larger files are not sidecars or lists worth reading.
MAX_TEXT_BYTES = 5 * 2**20
#: Fewest listed images for a split list to count.
MIN_LISTED = 5
_NUMBER = re.compile(r"^-?\d+(\.\d+)?(e-?\d+)?$", re.IGNORECASE)
_JSON_OBJECT_KEYS = ("shapes", "objects", "annotations", "regions")
#: Words in the path of an image without a mask that name it test data, not a defect-free sample.
TEST_WORDS = re.compile(r"(?<![a-z])(test|testing|unlabell?ed|unannotated|inference)(?![a-z])")
#: A validation split's folder in a path (DeepGlobe's ``valid/`` beside ``train/``).
VALIDATION_DIR = re.compile(r"(^|/)(val|valid|validation|dev)(/|$)")


def named_test_data(image: str, masked_dirs: set[str]) -> bool:
    """Whether ``image`` (a relative path) is named as data to segment rather than a defect-free
    part or a figure: :data:`TEST_WORDS` in its path, or a validation split's folder in which no image
    has a mask (``masked_dirs``: the folders of the masked images). DeepGlobe ships ``valid/`` and
    ``test/`` without their masks beside ``train/``; neither holds empty roads."""
    lower = image.lower()
    folder = str(PurePosixPath(lower).parent)
    if TEST_WORDS.search(lower):
        return True
    return str(PurePosixPath(image).parent) not in masked_dirs and VALIDATION_DIR.search(folder) is not None


def not_annotated(root: Path, files: list[str], masked: list[str], unmasked: list[str]) -> str | None:
    """Why the ``unmasked`` images (paths relative to ``root``, a sample is enough) are not
    annotated for segmentation rather than empty, or None where nothing says so.

    Args:
        root: the folder ``files`` are relative to.
        files: every file under ``root`` (relative POSIX paths).
        masked: images with a mask, relative to any folder under ``root`` (only stems are used).
        unmasked: images without one (a sample: each costs one small file read).
    """
    sidecars = _sidecars(files)
    with_objects = [
        name
        for name in unmasked
        if any(_names_objects(root / f) for f in sidecars.get(PurePosixPath(name).stem.lower(), ()))
    ]
    if unmasked and 2 * len(with_objects) >= len(unmasked):
        example = sidecars[PurePosixPath(with_objects[0]).stem.lower()][0]
        return (
            f"{len(with_objects)} of {len(unmasked)} sampled image(s) without a mask have annotations naming "
            f"objects ({example}): annotated for another task, not empty"
        )
    masked_stems = {PurePosixPath(m).stem.lower() for m in masked}
    unmasked_stems = {PurePosixPath(u).stem.lower() for u in unmasked}
    for listing in sorted(f for f in files if _is_split_list(f)):
        named = _listed_stems(root / listing)
        in_masked, in_unmasked = len(named & masked_stems), len(named & unmasked_stems)
        if in_masked >= MIN_LISTED and in_unmasked == 0:
            return (
                f"the split list {listing} names {in_masked} image(s), all with a mask and none of the others: "
                "the dataset's segmentation set, the rest not annotated for it"
            )
    return None


def clean_parts(
    root: Path, files: list[str], image_root: Path, masked: list[str], unmasked: list[str], sample: int = 50
) -> tuple[bool, str | None]:
    """Whether the ``unmasked`` images (relative to ``image_root``) are the defect-free parts of a
    set whose labels were drawn only where there is a defect (DAGM's masks, LabelMe files for the
    defective parts): not named as test data (:func:`named_test_data`), not annotated elsewhere
    (:func:`not_annotated`, whose reason is returned second where it speaks) and alike the
    labelled ``masked`` ones (:func:`alike`)."""
    masked_dirs = {str(PurePosixPath(m).parent) for m in masked}
    if any(named_test_data(u, masked_dirs) for u in unmasked):
        return False, None
    elsewhere = not_annotated(root, files, masked, spread(unmasked, 50))
    if elsewhere:
        return False, elsewhere
    return alike(image_root, unmasked, masked, sample), None


def _sidecars(files: list[str]) -> dict[str, list[str]]:
    """Stem (lower case) → annotation-like files of that stem."""
    out: dict[str, list[str]] = {}
    for f in files:
        path = PurePosixPath(f)
        if path.suffix.lower() in SIDECAR_EXTS:
            out.setdefault(path.stem.lower(), []).append(f)
    return out


def _text(path: Path) -> str | None:
    try:
        if path.stat().st_size > MAX_TEXT_BYTES:
            return None
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _names_objects(path: Path) -> bool:
    """Whether an annotation file names at least one object (an empty YOLO file names none)."""
    text = _text(path)
    if not text:
        return False
    suffix = path.suffix.lower()
    if suffix == ".xml":
        return "<object" in text or "<bndbox" in text or "<polygon" in text
    if suffix == ".txt":  # YOLO: class cx cy w h (or a polygon), one object per line
        return any(
            len(tokens := line.split()) >= 5 and all(_NUMBER.match(t) for t in tokens) for line in text.splitlines()
        )
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and any(isinstance(data.get(k), list) and data[k] for k in _JSON_OBJECT_KEYS)


def _is_split_list(f: str) -> bool:
    path = PurePosixPath(f)
    return path.suffix.lower() == ".txt" and path.stem.lower() in SPLIT_LIST_NAMES


def _listed_stems(path: Path) -> set[str]:
    """The first word of each line of a list file, as a file stem (folders and suffix dropped)."""
    text = _text(path) or ""
    return {PurePosixPath(line.split()[0]).stem.lower() for line in text.splitlines() if line.split()}


def alike(root: Path, unmasked: list[str], masked: list[str], sample: int) -> bool:
    """Whether the images without a mask look like those with one (the same colour mode and
    median size within 1.5x, from file headers), so they are the same parts, not another series
    (a study folder's photos beside its labelled slices)."""

    def headers(names: list[str]) -> tuple[bool | None, float]:
        modes, sides = Counter(), []
        for name in spread(names, min(sample, 50)):
            try:
                with Image.open(root / name) as img:
                    modes[img.mode == "RGB" or img.mode == "RGBA"] += 1
                    sides.append(img.width * img.height)
            except (OSError, UnidentifiedImageError):
                continue
        return (modes.most_common(1)[0][0] if modes else None), float(np.median(sides)) if sides else 0.0

    (mode_a, size_a), (mode_b, size_b) = headers(unmasked), headers(masked)
    return mode_a == mode_b and size_a > 0 and size_b > 0 and max(size_a, size_b) <= 1.5**2 * min(size_a, size_b)


def spread(items: list[str], n: int) -> list[str]:
    """At most ``n`` items, evenly spread over the list (deterministic)."""
    if len(items) <= n:
        return items
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, n).round()]
