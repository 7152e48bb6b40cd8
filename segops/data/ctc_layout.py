"""``segops plan`` for the Cell Tracking Challenge's 2D layout: frames ``<seq>/t<NNN>.tif`` (often
16-bit) with the gold segmentation of some frames in ``<seq>_GT/SEG/man_seg<NNN>.tif`` (instance
ids, one per cell) and, where the dataset has it, a silver segmentation of every frame in
``<seq>_ST/SEG/``. The ``TRA`` folders hold tracking markers, not outlines, and are not labels.

Pure (no Ray), names only, except for reading the sampled masks' values.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from segops.data.detection import Detection
from segops.data.mask_kinds import classify_masks, mask_census
from segops.data.mask_names import match_pattern
from segops.data.unannotated import spread

#: A frame of a sequence: ``01/t000.tif`` (relative to the dataset's root).
FRAME = re.compile(r"(?P<seq>[^/]+)/t(?P<t>[0-9]+)\.tiff?", re.IGNORECASE)
#: The segmentation folders, gold truth first.
TRUTHS = (("GT", "gold"), ("ST", "silver"))


def find_ctc(root: Path, files: list[str], task: str | None = None, sample: int = 300) -> Detection | None:
    """The Cell Tracking Challenge layout of the archive under ``root``, or None when it is not one.

    Gold truth (``_GT/SEG``) is used where any sequence has it, else silver (``_ST/SEG``); frames
    without a mask are unlabelled (segmented, never trained on). ``task``: the user's ``--task``,
    else what the masks' values say (instance ids → instance).
    """
    frames: dict[str, list[str]] = {}
    for f in files:
        match = FRAME.fullmatch(f)
        if match:
            frames.setdefault(match["seq"], []).append(f)
    found = next(((truth, word, masks) for truth, word in TRUTHS if (masks := _masks(files, frames, truth))), None)
    if found is None:
        return None
    truth, word, masks = found
    seqs = sorted(seq for seq in frames if any(m.startswith(f"{seq}_{truth}/") for m in masks))
    replace = {"/t": f"_{truth}/SEG/man_seg"}
    pattern = "{rel_stem}" + PurePosixPath(masks[0]).suffix
    images = sorted(f for seq in seqs for f in frames[seq])
    mask_of = {i: root / match_pattern(pattern, i, replace) for i in images}
    paired = [i for i in images if mask_of[i].is_file()]
    if not paired:
        return None
    census = mask_census([mask_of[i] for i in spread(paired, sample)])
    spec, chosen, classes, mask_kind, why = classify_masks(census, task, None)
    labels = {"kind": spec.pop("kind"), "path": str(root), "pattern": pattern, "replace": replace, **spec}
    exts = sorted({PurePosixPath(i).suffix for i in images})
    source = {
        "kind": "images",
        "path": str(root),
        "include": [f"{seq}/t*{ext}" for seq in seqs for ext in exts],
        "labels": labels,
    }
    notes = {
        "labels": (
            f"Cell Tracking Challenge layout: {len(paired)} of {len(images)} frames of {', '.join(seqs)} have a "
            f"{word} segmentation (<seq>_{truth}/SEG/man_seg<t>{PurePosixPath(masks[0]).suffix}); {why}; the other "
            "frames are unlabelled (segmented, never trained on)"
        ),
        "include": (
            "the sequences' frames only (not the TRA tracking markers); each frame is its own group, so "
            "held-out frames come from the sequences trained on: their scores are closer to a new frame "
            "of a known sequence than to a new sequence"
        ),
    }
    return Detection(source, chosen, classes, "ctc", mask_kind, len(images), len(paired), notes, census)


def _masks(files: list[str], frames: dict[str, list[str]], truth: str) -> list[str]:
    """The segmentation files of the sequences in ``frames`` in their ``<seq>_<truth>/SEG`` folders."""
    return [f for f in files if any(f.startswith(f"{seq}_{truth}/SEG/man_seg") for seq in frames)]
