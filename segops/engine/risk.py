"""Per-case risk: how much to doubt a mask, from what the prediction pass already has.

In the prediction pass (no second pass, no probability map kept), :func:`risk_head` turns the
softmax into a per-pixel entropy and :class:`MemberVotes` counts the members' (fold × mirror)
votes; :func:`semantic_risk` / :func:`instance_risk` reduce a case to these signals and one ``risk``.

Signals (columns of the result row, :data:`RISK_COLUMNS`):

- ``entropy_fg``: mean normalised softmax entropy (``H / log(classes)``, 0..1) over the predicted
  foreground; ``entropy_boundary``: the same over the one-pixel band either side of every class
  edge. NaN without foreground (without an edge).
- ``doubt``: pixels the model called background though it gave another class real weight
  (normalised entropy >= 0.5, off the boundary band), as a share of those pixels plus the
  foreground, the foreground counted as at least one typical training object (the fingerprint's
  median object size): 0 for a confident mask, near 1 when the model half-saw objects it did not
  draw. So an empty prediction with a few doubtful pixels is not a full doubt, and one with a
  half-seen object of training size is.
- ``member_dice``: agreement of the members' class maps (mirrors and/or folds): pairwise Dice
  pooled over member pairs, ``Σ_pairs 2|a∩b| / Σ_pairs (|a|+|b|)`` per foreground class, averaged
  over the classes any member predicted (1.0 when none did); NaN with one member.
- ``area_z``: the predicted foreground share of the image, per class, as a z-score against the
  training fingerprint's per-image distribution (``class_image_fractions``); the column holds the
  largest in magnitude, ``area_z_per_class`` all of them as JSON. NaN without a fingerprint.
- ``small_fragments``: pieces (instances) under the training objects' 5th-percentile size (or 16 px).
- ``intensity_outside``: share of the input's pixels (channel mean) outside the training
  intensity range (fingerprint ``intensity_all`` p0.5..p99.5, where ~1 % of training pixels lie).
- Flags: ``flag_empty`` (no foreground predicted, while at least 90 % of the training images had
  some), ``flag_fragments`` (more small fragments than max(5, the most objects any training image
  had)), ``flag_intensity`` (``intensity_outside`` > 10 %).

The rule that turns the signals into one ``risk`` (calibrated against the model's validation
cases, or absolute), and the references it reads, are in :mod:`segops.engine.risk_rule`.

Instance models (Mask R-CNN) have no softmax map: a foreground pixel's entropy is the binary
entropy of its detection's score (the instance painted there), the same over the boundary band;
``doubt`` is 0 (detections under the score threshold are gone) and there are no members.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from segops.data.instances import INSTANCE_STRIDE
from segops.engine.checkpoint import LoadedModel
from segops.engine.ensemble import SoftmaxEnsemble, mirror_sets
from segops.engine.predict import class_indices, network
from segops.engine.risk_rule import (
    DOUBT_ENTROPY,
    CaseRisk,
    RiskReference,
    combine,
)

__all__ = [
    "RISK_COLUMNS",
    "CaseRisk",
    "MemberVotes",
    "RiskReference",
    "boundary_band",
    "instance_risk",
    "intensity_outside",
    "member_network",
    "normalised_entropy",
    "pooled_member_dice",
    "risk_head",
    "semantic_risk",
    "split_head",
]

#: Float columns of the result row (see the module docstring), in order.
RISK_FLOAT_COLUMNS = (
    "risk",
    "entropy_fg",
    "entropy_boundary",
    "doubt",
    "member_dice",
    "area_z",
    "small_fragments",
    "intensity_outside",
)
#: Boolean flag columns.
RISK_FLAG_COLUMNS = ("flag_empty", "flag_fragments", "flag_intensity")
#: Text columns: the reasons in words ("; "-separated) and the per-class area z-scores (JSON).
RISK_TEXT_COLUMNS = ("risk_reasons", "area_z_per_class")
RISK_COLUMNS = (*RISK_FLOAT_COLUMNS, *RISK_FLAG_COLUMNS, *RISK_TEXT_COLUMNS)

# --------------------------------------------------------------------------- in the network pass


class MemberVotes(nn.Module):
    """The mean softmax of every member (fold × mirror), returned as its log (as
    :class:`~segops.engine.ensemble.MirroredModel` over a
    :class:`~segops.engine.ensemble.SoftmaxEnsemble` returns it), followed by ``classes - 1``
    channels counting the members whose argmax is each foreground class.

    Output: (N, 2·classes − 1, *spatial); the counts blend like logits in a sliding window
    (tile overlaps average them), which :func:`pooled_member_dice` tolerates.
    """

    def __init__(self, folds: Sequence[nn.Module], flip_axes: Sequence[int]):
        super().__init__()
        self.folds = nn.ModuleList(folds)
        self.flips = mirror_sets(flip_axes)

    @property
    def members(self) -> int:
        return len(self.folds) * len(self.flips)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total, votes = None, None
        for fold in self.folds:
            for combo in self.flips:
                dims = [2 + a for a in combo]
                out = fold(torch.flip(x, dims) if dims else x).float()
                p = torch.softmax(torch.flip(out, dims) if dims else out, dim=1)
                chosen = class_indices(p)
                vote = torch.stack([chosen == c for c in range(1, p.shape[1])], dim=1).float()
                total = p if total is None else total + p
                votes = vote if votes is None else votes + vote
        return torch.cat([torch.log(torch.clamp(total / self.members, min=1e-12)), votes], dim=1)


def member_network(loaded: LoadedModel, flip_axes: Sequence[int]) -> MemberVotes | None:
    """A :class:`MemberVotes` of ``loaded``'s folds and ``flip_axes``' mirrors; None with one member."""
    folds = list(loaded.model.members) if isinstance(loaded.model, SoftmaxEnsemble) else [loaded.model]
    if len(folds) * len(mirror_sets(flip_axes)) < 2:
        return None
    network(loaded, flip_axes)  # the same axis checks as a plain prediction
    return MemberVotes(folds, flip_axes)


def risk_head(classes: int, probabilities: bool, voted: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """The ``head`` of :func:`segops.engine.predict.predict` for a prediction with risk.

    (N, classes [+ classes − 1 votes], *spatial) logits → (N, K, *spatial) float32: channel 0 the
    class map, channel 1 the normalised entropy of the softmax, then the softmax (``probabilities``),
    then the vote counts (``voted``). See :func:`split_head`.
    """

    def head(logits: torch.Tensor) -> torch.Tensor:
        scores = logits[:, :classes].float()
        # with probabilities kept, the class map is their argmax (as without the risk), ties included
        softmax = torch.softmax(scores, dim=1) if probabilities else None
        chosen = class_indices(scores if softmax is None else softmax)
        parts = [chosen.float()[:, None], normalised_entropy(scores)[:, None]]
        if softmax is not None:
            parts.append(softmax)
        if voted:
            parts.append(logits[:, classes:].float())
        return torch.cat(parts, dim=1)

    return head


def normalised_entropy(logits: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) logits → (N, *spatial) softmax entropy / log(C), in 0..1.

    Two classes take the closed form over the logit difference ``d`` (``softplus(−|d|) +
    |d|·sigmoid(−|d|)``), a few in-place element-wise operations instead of a softmax and a log
    (half the time: 1 ms per 256×256 image on one CPU thread).
    """
    classes = logits.shape[1]
    if classes == 2:
        d = (logits[:, 1] - logits[:, 0]).abs_().neg_()  # −|d|
        return nn.functional.softplus(d).sub_(d.mul_(torch.sigmoid(d))).div_(math.log(2))
    log_p = torch.log_softmax(logits, dim=1)
    return (log_p.exp() * log_p).sum(dim=1).div_(-math.log(classes))


def split_head(
    output: np.ndarray, classes: int, probabilities: bool, members: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float]:
    """One case's :func:`risk_head` output → (class map uint8, entropy float32 (a view), softmax
    float32 or None, member Dice: NaN with ``members`` < 2)."""
    class_map = output[0].astype(np.uint8)
    entropy = output[1]
    probs = output[2 : 2 + classes] if probabilities else None
    agreement = float("nan")
    if members > 1:
        agreement = pooled_member_dice(output[2 + classes * probabilities :], members)
    return class_map, entropy, probs, agreement


def pooled_member_dice(votes: np.ndarray, members: int) -> float:
    """Pairwise Dice of ``members`` class maps from their per-pixel vote counts.

    Args:
        votes: (classes − 1, *spatial) members voting for each foreground class at each pixel.

    Returns:
        Per class ``Σ n(n−1) / ((members − 1) Σ n)``, which is ``Σ_pairs 2|a∩b| / Σ_pairs (|a|+|b|)``,
        averaged over the classes with any vote; 1.0 when no member predicted foreground.
    """
    n = votes.reshape(len(votes), -1).astype(np.float64)
    sums = n.sum(axis=1)
    present = sums > 0
    if not present.any():
        return 1.0
    agree = (n * (n - 1)).sum(axis=1)[present] / ((members - 1) * sums[present])
    return float(np.clip(agree, 0.0, 1.0).mean())


# --------------------------------------------------------------------------- per case


def boundary_band(class_map: np.ndarray) -> np.ndarray:
    """Pixels with a differently classed neighbour along some axis (both sides of every edge)."""
    band = np.zeros(class_map.shape, bool)
    for axis in range(class_map.ndim):
        edge = np.diff(class_map, axis=axis) != 0
        lead = [slice(None)] * class_map.ndim
        lead[axis] = slice(None, -1)
        band[tuple(lead)] |= edge
        lead[axis] = slice(1, None)
        band[tuple(lead)] |= edge
    return band


def semantic_risk(
    class_map: np.ndarray,
    entropy: np.ndarray | None,
    member_dice: float,
    outside: float,
    reference: RiskReference,
    classes: int,
    members: str = "members",
) -> CaseRisk:
    """A semantic case's risk.

    Args:
        class_map: (H, W) or (Z, H, W) final class map (after postprocessing).
        entropy: normalised entropy map of the same shape (:func:`normalised_entropy`); None: no
            entropy signals.
        member_dice: :func:`pooled_member_dice`, NaN with one member.
        outside: :func:`intensity_outside` of the input (NaN: not checked).
        members: what the members are, in reasons ("mirrors", "folds", "folds and mirrors").
    """
    fg = class_map > 0
    band = boundary_band(class_map)
    entropy_fg = entropy_bd = doubt = float("nan")
    if entropy is not None:
        n_fg, n_band = np.count_nonzero(fg), np.count_nonzero(band)
        # masked sums by multiplication: twice as fast as boolean indexing
        entropy_fg = float((entropy * fg).sum(dtype=np.float64)) / n_fg if n_fg else float("nan")
        entropy_bd = float((entropy * band).sum(dtype=np.float64)) / n_band if n_band else float("nan")
        doubtful = np.count_nonzero((entropy >= DOUBT_ENTROPY) > (fg | band))
        drawn = max(n_fg, reference.object_px or 0.0)  # at least one typical training object
        doubt = doubtful / (doubtful + drawn) if doubtful + drawn else 0.0
    labels, _ = ndimage.label(fg)
    return combine(
        entropy_fg=entropy_fg,
        entropy_boundary=entropy_bd,
        doubt=doubt,
        member_dice=member_dice,
        class_map=class_map,
        pieces=np.bincount(labels.ravel())[1:],
        outside=outside,
        reference=reference,
        classes=classes,
        members=members,
    )


def instance_risk(
    label_map: np.ndarray,
    class_map: np.ndarray,
    scores: np.ndarray,
    outside: float,
    reference: RiskReference,
    classes: int,
) -> CaseRisk:
    """An instance case's risk: each pixel's entropy is the binary entropy of the score of the
    instance painted there (see the module docstring).

    Args:
        label_map: (H, W) instance label map (``class * 65536 + k``); class_map: its classes.
        scores: (N,) detection scores of instances k = 1..N, in that order.
    """
    index = label_map % INSTANCE_STRIDE
    s = np.clip(np.asarray(scores, np.float64), 1e-6, 1 - 1e-6)
    lut = np.concatenate([[0.0], -(s * np.log(s) + (1 - s) * np.log(1 - s)) / math.log(2)])
    fg = index > 0
    band = boundary_band(label_map) & fg
    per_pixel = lut[index]
    sizes = np.bincount(index[fg].ravel(), minlength=len(lut))[1:]
    return combine(
        entropy_fg=float(per_pixel[fg].mean()) if fg.any() else float("nan"),
        entropy_boundary=float(per_pixel[band].mean()) if band.any() else float("nan"),
        doubt=0.0,
        member_dice=float("nan"),
        class_map=class_map,
        pieces=sizes[sizes > 0],
        outside=outside,
        reference=reference,
        classes=classes,
        members="members",
    )


def intensity_outside(image: np.ndarray, reference: RiskReference) -> float:
    """Share of ``image``'s pixels (channel mean; (C, *spatial) as decoded) outside the training
    intensity range; NaN when the reference has none.

    Taken before the prediction: normalising an image for the network may overwrite it.
    """
    bounds = reference.intensity_range
    if bounds is None or image.size == 0:
        return float("nan")
    gray = image[0] if image.shape[0] == 1 else image.mean(axis=0)
    return float(((gray < bounds[0]) | (gray > bounds[1])).mean())
