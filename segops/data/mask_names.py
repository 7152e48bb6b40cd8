"""Which file is whose mask, from names alone: mask folders, mask file patterns, defect-free
folders, stray figures, and the image/mask folder pair of a tree (the name rules behind
:mod:`segops.data.pairing`). No file is opened: names, and whether a folder exists."""

from __future__ import annotations

import functools
import os
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from segops.data.globs import path_selected
from segops.data.mask_kinds import LOSSY_MASK_EXTS
from segops.data.unannotated import named_test_data

IMAGE_EXTS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm")  # .ppm: STARE
#: .mat: CrackForest's and BSDS500's groundTruth; .npz / .npy: NumPy arrays (WGISD's object masks)
MASK_EXTS = (".png", ".tif", ".tiff", ".bmp", ".gif", ".mat", ".ppm", ".pgm", ".npz", ".npy")
MASK_DIRS = (
    "masks",
    "mask",
    "labels",
    "label",
    "gt",
    "groundtruth",
    "ground_truth",
    "annotations",
    "annotation",
    "segmentations",
    "segmentation",
    "seg",
    "segs",
    "targets",
    "target",
    "instances",
)
#: Words that make a folder name a mask folder beyond :data:`MASK_DIRS` (``PedMasks``, ``SegmentationClass``).
MASK_WORDS = re.compile(
    r"mask|label|annot|ground[ _-]?truth|segmentation|(?<![a-z])(gts?|gt(fine|coarse)|lab|labs|fg)(?![a-z])"
)
MASK_SUFFIXES = ("", "_mask", "_masks", "_label", "_labels", "_gt", "_seg", "_segmentation", "-mask", "-label", "_anno")
#: A name's last word after ``_`` or ``-`` that is no number (``_L``, ``-mask2``), for :func:`shared_suffix`.
_NAME_END = re.compile(r"[-_][A-Za-z][A-Za-z0-9]{0,11}$")
#: Letters (and a separator) before a number at a name's start (``p`` of ``p12``), for :func:`shared_prefix`.
_NAME_START = re.compile(r"([A-Za-z]{1,8}[-_ ]?)[0-9]")
#: A name's ending made of words of letters only (``_superpixels``, ``-depth map``), for :func:`_suffixed`.
_WORDS = re.compile(r"([-_. ][A-Za-z]+)+")
#: A numbered part of a mask file (BUSI's ``x_mask_1.png`` beside ``x_mask.png``).
MASK_PART = re.compile(r"_[0-9]+(?P<ext>\.[^./]+)$")
#: Unpaired image files with these words in their name are overview figures, not data.
STRAY_WORDS = re.compile(r"readme|overview|dataset|example|sample|preview|figure|montage|thumb|license", re.IGNORECASE)
#: Folder names of defect-free samples (MVTec AD's ``good``): their images' missing masks are empty masks.
NORMAL_DIR = re.compile(
    r"(.*[-_ ])?(good|ok|okay|normal|negatives?|clean|nominal|free"
    r"|defect[-_ ]?free|no[-_ ]?defects?|non[-_ ]?defective)"
)
#: Image and mask folders a parallel-tree level pairs against each other (the most image-like first).
MAX_CANDIDATE_DIRS = 6
GLOB_CHARS = re.compile(r"[*?\[\]]")


def match_pattern(pattern: str, image: str, replace: Mapping[str, str] | None = None, frame: int = 0) -> str:
    """The mask path ``pattern`` names for image ``image`` (both relative, POSIX), after ``replace``
    (word → word, on the image's path without suffix; see ``MaskPngLabels.replace``). Fields:
    ``rel_dir``, ``parent_dir`` (the folder above the image's), ``stem``, ``rel_stem``, ``id`` (the
    name's first word, :func:`name_id`), ``frame``."""
    rel = PurePosixPath(replaced(image, replace))
    rel_dir = str(rel.parent) if str(rel.parent) != "." else ""
    parent_dir = str(rel.parent.parent) if str(rel.parent.parent) != "." else ""
    fields = {"rel_dir": rel_dir, "parent_dir": parent_dir, "stem": rel.stem, "rel_stem": str(rel.with_suffix(""))}
    return pattern.format(**fields, id=name_id(rel.stem), frame=frame).lstrip("/")


def name_id(stem: str) -> str:
    """A file name's first word, up to the first ``_``, ``-``, ``.`` or space: the id a dataset may
    share between an image and its mask when nothing else of their names is shared (DRIVE's ``21`` of
    ``21_training.tif`` and ``21_manual1.gif``)."""
    return re.split(r"[-_. ]", stem, maxsplit=1)[0]


def replaced(rel_path: str, replace: Mapping[str, str] | None, reverse: bool = False) -> str:
    """``rel_path`` with each key of ``replace`` in its path without suffix replaced by its value
    (``reverse``: each value by its key), the suffix kept. A key that starts (ends) with a letter is
    not taken from inside a longer word: ``{"sat": "mask"}`` turns ``train/1_sat`` into ``train/1_mask``
    and leaves a ``satellite/`` folder alone; ``{"/t": "_GT/SEG/man_seg"}`` still finds ``01/t001``."""
    if not replace:
        return rel_path
    rel = PurePosixPath(rel_path)
    body = str(rel.with_suffix("")) if rel.suffix else rel_path
    for old, new in replace.items():
        if reverse and not new:  # a word dropped ({"test/": ""}): nowhere to put it back
            continue
        find, put = (new, old) if reverse else (old, new)
        body = _word_pattern(find).sub(lambda _, put=put: put, body)
    return body + rel.suffix


@functools.lru_cache(maxsize=256)
def _word_pattern(word: str) -> re.Pattern[str]:
    """``word`` as a regex that no letter runs into at an edge where ``word`` itself has a letter."""
    before = r"(?<![^\W\d_])" if word[:1].isalpha() else ""
    after = r"(?![^\W\d_])" if word[-1:].isalpha() else ""
    return re.compile(before + re.escape(word) + after)


def mask_patterns(masks: set[str]) -> list[str]:
    """Candidate mask patterns for the mask files ``masks``, most usual first: ``{rel_stem}<suffix><ext>``
    for :data:`MASK_SUFFIXES` x :data:`MASK_EXTS`; the same in the case the files use (KolektorSDD2's
    ``_GT``, DAGM's ``.PNG``); and ``{rel_dir}/<folder>/{stem}<suffix><ext>`` for a mask folder inside
    the images' folder (DAGM's ``Train/Label/0576_label.PNG`` for ``Train/0576.PNG``)."""
    exts = {PurePosixPath(m).suffix for m in masks}
    stems = {PurePosixPath(m).stem for m in masks}
    tails = [
        (suffix, ext)
        for suffix in MASK_SUFFIXES
        for ext in MASK_EXTS
        if ext in exts  # the lower-case candidates, in the usual order
    ]
    tails += [(suffix, ext) for ext in LOSSY_MASK_EXTS for suffix in MASK_SUFFIXES if ext in exts]  # Kvasir-SEG
    for suffix in MASK_SUFFIXES:
        for variant in dict.fromkeys((suffix.upper(), suffix.title())):
            if variant != suffix and any(stem.endswith(variant) for stem in stems):
                tails += [(variant, ext) for ext in MASK_EXTS if ext in exts]
    for ext in MASK_EXTS:
        if ext.upper() in exts:
            tails += [(v, ext.upper()) for suffix in MASK_SUFFIXES for v in dict.fromkeys((suffix, suffix.upper()))]
    if shared := shared_suffix(stems):  # CamVid's train_labels/0001TP_006690_L.png
        tails += [(shared, ext) for ext in sorted(exts) if ext.lower() in MASK_EXTS]
    patterns = [f"{{rel_stem}}{suffix}{ext}" for suffix, ext in dict.fromkeys(tails)]
    if lead := shared_prefix(stems):  # ETIS-LaribPolypDB's GroundTruth/p1.tif for 1.tif
        patterns += [f"{{rel_dir}}/{lead}{{stem}}{ext}" for ext in sorted(exts) if ext.lower() in MASK_EXTS]
    subfolders = sorted({PurePosixPath(m).parent.name for m in masks} - {""})
    for sub in [d for d in subfolders if is_mask_dir(d) and "{" not in d and "}" not in d][:3]:
        patterns += [f"{{rel_dir}}/{sub}/{{stem}}{suffix}{ext}" for suffix, ext in dict.fromkeys(tails)]
    # the masks one folder down in the mask folder (Oxford-IIIT Pet's annotations/trimaps/x.png)
    tops = Counter(PurePosixPath(m).parts[0] for m in masks if len(PurePosixPath(m).parts) > 1)
    for top, _ in sorted(tops.items(), key=lambda kv: (-kv[1], kv[0]))[:3]:  # 1st_manual before 2nd_manual
        if "{" not in top and "}" not in top:
            patterns += [f"{top}/{{rel_stem}}{suffix}{ext}" for suffix, ext in dict.fromkeys(tails)]
    return patterns


def shared_suffix(stems: set[str]) -> str | None:
    """The name ending (from the last ``_`` or ``-``, a word, not a number) that nine in ten of the
    mask names ``stems`` share where :data:`MASK_SUFFIXES` lacks it: CamVid's ``_L``."""
    ends = Counter(m.group(0) for s in stems if (m := _NAME_END.search(s)))
    if not ends:
        return None
    end, n = ends.most_common(1)[0]
    return end if n >= 0.9 * len(stems) and end.lower() not in MASK_SUFFIXES else None


def shared_prefix(stems: set[str]) -> str | None:
    """The letters (and a separator) before a number that nine in ten of the mask names ``stems``
    start with: ETIS-LaribPolypDB's ``p`` of ``p12``, ``gt_`` of ``gt_0012``."""
    leads = Counter(m.group(1) for s in stems if (m := _NAME_START.match(s)))
    if not leads:
        return None
    lead, n = leads.most_common(1)[0]
    return lead if n >= 0.9 * len(stems) else None


def renamed_patterns(images: list[str], masks: set[str], sample: int = 50) -> list[tuple[str, dict[str, str]]]:
    """(pattern, replace) candidates for masks named with another word than their images: the part
    of an image's name that differs from a mask's in the same folder, where the mask's part holds a
    mask word (ISBI 2012's ``train-volume.tif`` / ``train-labels.tif`` → ``{'volume': 'labels'}``;
    Cityscapes' ``x_leftImg8bit.png`` / ``x_gtFine_labelIds.png``), or a suffix with a mask word
    that :data:`MASK_SUFFIXES` lacks (``training_groundtruth.tif`` → ``{rel_stem}_groundtruth.tif``)."""
    by_dir: dict[str, list[PurePosixPath]] = {}
    for m in masks:
        by_dir.setdefault(str(PurePosixPath(m).parent), []).append(PurePosixPath(m))
    found: dict[tuple[str, tuple[tuple[str, str], ...]], None] = {}
    for image in images[:sample]:
        rel = PurePosixPath(image)
        stem = rel.stem
        for mask in by_dir.get(str(rel.parent), []):
            if mask.stem == stem:
                continue
            head = _word_start(stem, len(os.path.commonprefix([stem, mask.stem])))
            back = len(os.path.commonprefix([stem[head:][::-1], mask.stem[head:][::-1]]))
            tail = len(stem) - _word_end(stem, len(stem) - back)  # whole words differ, not "est" for "test"
            old, new = stem[head : len(stem) - tail], mask.stem[head : len(mask.stem) - tail]
            if not MASK_WORDS.search(new.lower()):
                continue
            if not old and not tail:  # the image's name plus a suffix
                found[(f"{{rel_stem}}{new}{mask.suffix}", ())] = None
            elif old:
                found[(f"{{rel_stem}}{mask.suffix}", ((old, new),))] = None
    return [(pattern, dict(replace)) for pattern, replace in found]


def best_renamed(
    images: list[str], masks: set[str], same_folder: bool = False, instances: bool = False
) -> tuple[str | None, dict[str, str], int]:
    """The (pattern, replace) of :func:`renamed_patterns` that finds a mask for the most images, and how
    many; with ``instances`` (``--task instance``), of as many hits a name with an instance word first
    (Cityscapes' ``gtFine_instanceIds``, not its ``gtFine_labelIds``)."""
    best: tuple[str | None, dict[str, str], int] = (None, {}, 0)
    # of as many hits, a name with label/mask/seg in it (Cityscapes' labelIds, not its color masks), from a
    # name without a mask word (CVPPP's plant_rgb → plant_label, not its binary plant_fg → plant_label), then
    # the smallest change ({'volume': 'labels'}, not {'test-volume': 'train-labels'})
    candidates = sorted(
        renamed_patterns(images, masks),
        key=lambda c: (
            instances and not any(INSTANCE_WORD.search(v.lower()) for v in c[1].values()),
            not any(_NAMED_MASK.search(v.lower()) for v in c[1].values()),
            any(MASK_WORDS.search(k.lower()) for k in c[1]),
            sum(len(k) + len(v) for k, v in c[1].items()),
        ),
    )
    for pattern, replace in candidates:
        hits = sum(
            1 for i in images if (m := match_pattern(pattern, i, replace)) in masks and not (same_folder and m == i)
        )
        if hits > best[2]:
            best = (pattern, replace, hits)
    return best


_SEPARATORS = "-_. "
_NAMED_MASK = re.compile(r"label|mask|seg|annot|truth")
INSTANCE_WORD = re.compile(r"inst|object")


def _word_start(name: str, at: int) -> int:
    """``at`` moved back to the start of the word it is in (after a separator, or 0)."""
    while 0 < at < len(name) and name[at - 1] not in _SEPARATORS:
        at -= 1
    return at


def _word_end(name: str, at: int) -> int:
    """``at`` moved forward to the end of the word it is in (before a separator, or the end)."""
    while 0 < at < len(name) and name[at] not in _SEPARATORS:
        at += 1
    return at


def best_pattern(images: list[str], masks: set[str], same_folder: bool = False) -> tuple[str | None, int]:
    """The mask pattern (of :func:`mask_patterns`) that finds a mask for the most images, and how many.

    With ``same_folder`` (masks and images in one tree) an image is never its own mask; on a
    tie the earlier candidate (no suffix, ``.png``) wins.
    """
    best: tuple[str | None, int] = (None, 0)
    for pattern in mask_patterns(masks):
        hits = sum(1 for i in images if (m := match_pattern(pattern, i)) in masks and not (same_folder and m == i))
        if hits > best[1]:
            best = (pattern, hits)
    return best


def is_mask_dir(name: str) -> bool:
    """A folder named like masks: :data:`MASK_DIRS`, or a name with a mask word in it
    (``PedMasks``, ``SegmentationClass``, ``GroundTruth``, ``train_labels``)."""
    lower = name.lower()
    return lower in MASK_DIRS or MASK_WORDS.search(lower) is not None


def normal_folders(images: list[str], paired: set[str]) -> list[str]:
    """Folders (relative) whose images all lack a mask and whose name, or their parent's, says they
    hold defect-free samples (:data:`NORMAL_DIR`: MVTec AD's ``good``, ``ok``, ``normal``,
    ``defect_free`` …; MVTec 3D-AD's ``train/good/rgb``), while other images have masks: their
    missing masks mean "nothing to segment"."""
    if not paired:
        return []
    by_dir: dict[str, list[str]] = {}
    for i in images:
        by_dir.setdefault(str(PurePosixPath(i).parent), []).append(i)
    return sorted(
        d
        for d, members in by_dir.items()
        if d != "."
        and any(NORMAL_DIR.fullmatch(part.lower()) for part in PurePosixPath(d).parts[-2:])
        and not GLOB_CHARS.search(d)
        and not any(i in paired for i in members)
    )


def collapsed(folders: list[str], paired: set[str]) -> list[str]:
    """:func:`normal_folders` with the sample folders inside one defect-free folder given as that folder
    (Real-IAD's ``OK/S0001`` … ``OK/S0500``, a folder per part: ``OK``), where two or more share it and
    no paired image lies under it; the others as they are."""
    parents: dict[str, list[str]] = {}
    for d in folders:
        path = PurePosixPath(d)
        named = not NORMAL_DIR.fullmatch(path.name.lower()) and len(path.parts) > 1
        parents.setdefault(str(path.parent) if named else d, []).append(d)
    out = []
    for parent, members in parents.items():
        whole = len(members) >= 2 and not any(i.startswith(parent + "/") for i in paired)
        out += [parent] if whole else members
    return sorted(out)


def sibling_files(images: list[str], paired: set[str], replace: Mapping[str, str] | None) -> list[str]:
    """Unpaired files named as a paired image with another word where ``replace`` swaps the image's
    word for its mask's: other files of a paired sample, not images to segment (CVPPP's binary
    ``plant001_fg.png`` and object-centre ``plant001_centers.png`` beside ``plant001_rgb.png`` /
    ``plant001_label.png``; a depth map ``x_depth.png`` beside ``x_rgb.png``). Words are whole words
    (between ``-``, ``_``, ``.``, space): ``test-volume.tif`` is not a sibling of ``train-volume.tif``.
    So are files named as a paired image plus words (:func:`_suffixed`)."""
    suffixed = _suffixed(images, paired)
    if not replace:
        return suffixed
    keys = set()  # (folder, the name before the swapped word, after it) of every paired image
    for p in paired:
        rel = PurePosixPath(p)
        for old in replace:
            if found := _word_pattern(old).search(rel.stem):
                keys.add((str(rel.parent), rel.stem[: found.start()], rel.stem[found.end() :]))
    siblings = []
    for i in images:
        rel = PurePosixPath(i)
        stem, folder = rel.stem, str(rel.parent)
        starts = [0] + [m.end() for m in re.finditer(r"[-_. ]", stem)]
        ends = [m.start() for m in re.finditer(r"[-_. ]", stem)] + [len(stem)]
        if i not in paired and any((folder, stem[:a], stem[b:]) in keys for a in starts for b in ends if b > a):
            siblings.append(i)
    return siblings + [i for i in suffixed if i not in siblings]


def _suffixed(images: list[str], paired: set[str], least: int = 3) -> list[str]:
    """Unpaired files named as a paired image of their folder plus words of letters, an ending at
    least ``least`` of them share: ISIC 2017's ``ISIC_0000000_superpixels.png`` beside each
    ``ISIC_0000000.jpg`` (a superpixel index map, not a photo). A number is no such word:
    ``scan_2.png`` beside ``scan.png`` is another image."""
    stems = {(str(PurePosixPath(p).parent), PurePosixPath(p).stem) for p in paired}
    ending_of = {}
    for i in images:
        rel = PurePosixPath(i)
        if i in paired:
            continue
        for cut in re.finditer(r"[-_. ]", rel.stem):
            if (str(rel.parent), rel.stem[: cut.start()]) in stems and _WORDS.fullmatch(rel.stem[cut.start() :]):
                ending_of[i] = rel.stem[cut.start() :].lower()
                break
    counts = Counter(ending_of.values())
    return [i for i, ending in ending_of.items() if counts[ending] >= least]


def other_annotations(images: list[str], files: list[str]) -> str:
    """Where no mask pairs with the images: a clause naming the files that share an image's name but
    are of a kind segops does not read as masks (Pascal VOC's or MoNuSeg's ``.xml``, YOLO detection
    ``.txt``), by extension with an example, so the error says what the user has; "" where none."""
    stems = {PurePosixPath(i).stem for i in images}
    known = {*IMAGE_EXTS, *MASK_EXTS, *LOSSY_MASK_EXTS}
    other = [f for f in files if PurePosixPath(f).suffix.lower() not in known and PurePosixPath(f).stem in stems]
    if not other:
        return ""
    kinds = Counter(PurePosixPath(f).suffix.lower() or "(no extension)" for f in other)
    listed = ", ".join(f"{n} {ext}" for ext, n in kinds.most_common())
    return (
        f"; files named as the images are of other kinds ({listed}, e.g. {other[0]}): not masks segops reads "
        "(boxes, or outlines in another tool's format); convert them to mask images or COCO JSON"
    )


def stray_files(
    images: list[str], paired: set[str], masks_beside: bool = False, replace: Mapping[str, str] | None = None
) -> list[str]:
    """Unpaired image files that are not data: other files of a paired sample (:func:`sibling_files`),
    and, when at least half of the other images are paired, overview figures (README, dataset,
    example...), files in a folder where no image has a mask and, where masks lie beside their images
    (``masks_beside``), files whose name ends in a mask word (a binary ``plant_fg.png`` beside the
    ``plant_rgb.png`` / ``plant_label.png`` pairs).

    A folder without masks whose path names it as test or unlabelled data (:func:`named_test_data`:
    Kaggle's and Roboflow's ``test/images`` beside ``train/images`` + ``train/masks``, DeepGlobe's
    ``valid/``), holding
    files of the paired images' type, is data: the images a user wants segmented, not figures."""
    siblings = sibling_files(images, paired, replace)
    left_out = set(siblings)
    images = [i for i in images if i not in left_out]
    if len(paired) < len(images) / 2:
        return siblings
    paired_dirs = {str(PurePosixPath(p).parent) for p in paired}
    paired_types = {PurePosixPath(p).suffix.lower() for p in paired}

    def test_data(i: str) -> bool:
        return named_test_data(i, paired_dirs) and PurePosixPath(i).suffix.lower() in paired_types

    return siblings + [
        i
        for i in images
        if i not in paired
        and (
            STRAY_WORDS.search(PurePosixPath(i).stem)
            or (str(PurePosixPath(i).parent) not in paired_dirs and not test_data(i))
            or (masks_beside and MASK_WORDS.fullmatch(re.split(r"[-_. ]", PurePosixPath(i).stem.lower())[-1]))
        )
    ]


def file_globs(files: list[str], keep: set[str], least: int = 3) -> list[str]:
    """``files`` as globs where at least ``least`` of them end in the same last name word and
    extension (``**/*_fg.png``) and the glob selects none of ``keep``; the other files as they are."""
    ending_of = {}
    for f in files:
        name = PurePosixPath(f).name
        cut = max(name.rfind(sep, 0, len(name) - len(PurePosixPath(f).suffix)) for sep in "-_. ")
        ending_of[f] = name[cut:] if cut > 0 else None
    counts = Counter(e for e in ending_of.values() if e)
    usable = {
        e: not any(path_selected(k, include=(f"**/*{e}",)) for k in keep) for e, n in counts.items() if n >= least
    }
    globs = [f"**/*{ending_of[f]}" if usable.get(ending_of[f]) else f for f in files]
    return list(dict.fromkeys(globs))


def _under(files: list[str], parent: str, folder: str, exts: tuple[str, ...]) -> list[str]:
    """Files of ``parent/folder`` with one of ``exts``, relative to that folder."""
    prefix = "/".join(p for p in (parent, folder) if p) + "/"
    return [f[len(prefix) :] for f in files if f.startswith(prefix) and PurePosixPath(f).suffix.lower() in exts]


def _image_like(name: str, count: int) -> tuple[bool, int]:
    """Sort key of an image folder: an image-like name (``images``, ``PNGImages``, ``input``), then size."""
    lower = name.lower()
    return lower.startswith(("image", "img", "input")) or "image" in lower, count


def parallel_tree(root: Path, files: list[str]) -> tuple[str, str, list[str]] | None:
    """(image folder, mask folder, other datasets) relative to ``root``: sibling folders, one named
    like a mask folder.

    At the shallowest level that has such siblings, the pair whose images find the most masks
    (:func:`best_pattern`) wins, so a folder of text annotations beside the mask folder
    (PennFudan's ``Annotation`` beside ``PedMasks``) or an image folder without masks (MVTec's
    ``train`` beside ``test`` and ``ground_truth``) is not chosen; with no pair that finds a
    mask there, deeper levels are tried, and with none anywhere the first level's first mask-named
    folder and most image-like sibling are returned (for the error message). At most
    :data:`MAX_CANDIDATE_DIRS` folders of each kind are paired per level. Where several folders
    of one level each hold such a pair (MVTec AD's root: ``bottle/``, ``screw/``, … each with
    ``test/`` and ``ground_truth/``), they are separate datasets: the one that pairs the most
    files is chosen, and the others are returned as the third item.
    """
    tops: dict[str, Counter] = {}
    for f in files:
        parts = PurePosixPath(f).parts
        for depth in range(min(4, len(parts) - 1)):
            parent, child = "/".join(parts[:depth]), parts[depth]
            tops.setdefault(parent, Counter())[child] += 1
    fallback: tuple[str, str, list[str]] | None = None
    found: list[tuple[int, str, str, str]] = []  # (hits, parent, image folder, mask folder) at one level
    for parent in sorted(tops, key=lambda p: (len(PurePosixPath(p).parts), p)):  # shallowest first
        if found and len(PurePosixPath(parent).parts) > len(PurePosixPath(found[0][1]).parts):
            break
        children = tops[parent]
        masks = [c for c in children if is_mask_dir(c) and (root / parent / c).is_dir()]
        others = [c for c in children if c not in masks and (root / parent / c).is_dir()]
        if not (masks and others):
            continue
        others.sort(key=lambda c: _image_like(c, children[c]), reverse=True)
        fallback = fallback or (_join(parent, others[0]), _join(parent, masks[0]), [])
        scored = [
            (
                best_pattern(
                    _under(files, parent, i, IMAGE_EXTS), set(_under(files, parent, m, MASK_EXTS + LOSSY_MASK_EXTS))
                )[1],
                _image_like(i, children[i]),
                i,
                m,
            )
            for m in masks[:MAX_CANDIDATE_DIRS]
            for i in others[:MAX_CANDIDATE_DIRS]
        ]
        hits, _, image_dir, mask_dir = max(scored, key=lambda t: (t[0], t[1]))
        if hits:
            found.append((hits, parent, image_dir, mask_dir))
    if not found:
        return fallback
    _, parent, image_dir, mask_dir = min(found, key=lambda t: (-t[0], t[1]))  # most masks, then by name
    return _join(parent, image_dir), _join(parent, mask_dir), sorted(p for _, p, _, _ in found if p != parent)


def _join(parent: str, folder: str) -> str:
    return "/".join(p for p in (parent, folder) if p)
