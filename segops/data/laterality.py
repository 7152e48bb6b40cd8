"""Classes told apart only by the side of the body they lie on (``Lung_L`` / ``Lung_R``,
``kidney_left`` / ``kidney_right``, ``Left Parotid`` / ``Right Parotid``): a mirrored training patch
shows a left organ where the right one lies and still calls it left, so mirroring (flips, and the
180° turn that ``rotate90`` includes) teaches the model to confuse them. TotalSegmentator trains
nnU-Net without mirroring for this reason; ``segops plan`` does the same when the labels' class
names hold such a pair (:func:`segops.steps.plan.mirroring_choices`). Pure: names only, no imports
beyond ``re``, so label readers can use its words."""

from __future__ import annotations

import re
from collections.abc import Mapping

#: Side words (TG-263's ``_L``/``_R``, clinical ``Lt``/``Rt``, ``Left``/``Right``) → the side they name.
SIDE_WORDS = {"l": "left", "lt": "left", "left": "left", "r": "right", "rt": "right", "right": "right"}
#: A side word in a name: ``left``/``right`` anywhere (``kidneyleft``), or a short one (``l``, ``r``, ``lt``,
#: ``rt``) standing alone between separators or at either end (``Lung_L``, ``L Kidney``), never beside
#: letters or digits (``vertebrae_L1`` is a vertebra, not a side).
_SHORT = "|".join(sorted((w for w in SIDE_WORDS if w not in ("left", "right")), key=len, reverse=True))
_SIDE = re.compile(rf"left|right|(?<![a-z0-9])(?:{_SHORT})(?![a-z0-9])")


def side_pairs(names: Mapping[int, str]) -> list[tuple[str, str]]:
    """Pairs of class names (left, right) that are the same but for a side word, in class order."""
    by_key: dict[str, dict[str, str]] = {}
    for _, name in sorted(names.items()):
        lower = name.lower()
        sides = _SIDE.findall(lower)
        if len(sides) != 1:
            continue
        key = _SIDE.sub("#", lower)
        by_key.setdefault(key, {}).setdefault(SIDE_WORDS[sides[0]], name)
    return [(pair["left"], pair["right"]) for pair in by_key.values() if len(pair) == 2]
