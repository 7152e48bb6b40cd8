"""Classes told apart only by the side of the body they lie on (``Lung_L`` / ``Lung_R``,
``kidney_left`` / ``kidney_right``, ``Left Parotid`` / ``Right Parotid``): a mirrored training patch
shows a left organ where the right one lies and still calls it left, so mirroring (flips, and the
180° turn that ``rotate90`` includes) teaches the model to confuse them. TotalSegmentator trains
nnU-Net without mirroring for this reason; ``segops plan`` does the same when the labels' class
names hold such a pair. Pure: names only."""

from __future__ import annotations

import re
from collections.abc import Mapping

from segops.data.planning import Choice

#: A side word: ``left``/``right`` anywhere (``kidneyleft``), or ``l``/``r``/``lt``/``rt`` standing alone
#: between separators or at either end (``Lung_L``, ``L Kidney``), never beside letters or digits
#: (``vertebrae_L1`` is a vertebra, not a side).
_SIDE = re.compile(r"left|right|(?<![a-z0-9])(?:lt|rt|l|r)(?![a-z0-9])")
_LEFT = ("left", "lt", "l")


def side_pairs(names: Mapping[int, str]) -> list[tuple[str, str]]:
    """Pairs of class names (left, right) that are the same but for a side word, in class order."""
    by_key: dict[str, dict[str, str]] = {}
    for _, name in sorted(names.items()):
        lower = name.lower()
        sides = _SIDE.findall(lower)
        if len(sides) != 1:
            continue
        key = _SIDE.sub("#", lower)
        by_key.setdefault(key, {}).setdefault("left" if sides[0] in _LEFT else "right", name)
    return [(pair["left"], pair["right"]) for pair in by_key.values() if len(pair) == 2]


def mirroring_choices(names: Mapping[int, str]) -> dict[str, Choice]:
    """``augment.flip`` and ``augment.rotate90`` off where :func:`side_pairs` finds a pair; else nothing."""
    pairs = side_pairs(names)
    if not pairs:
        return {}
    shown = ", ".join(f"{a} / {b}" for a, b in pairs[:3]) + (f" and {len(pairs) - 3} more" if len(pairs) > 3 else "")
    why = f"{shown}: told apart by side, which mirroring swaps (as TotalSegmentator, no mirroring)"
    return {"augment.flip": Choice(0.0, why), "augment.rotate90": Choice(0.0, "a 180° turn mirrors both axes")}
