"""The nnU-Net / Medical Segmentation Decathlon layout, as ``segops plan`` detects it.

``<dataset>/imagesTr/<case>_0000.nii.gz`` (+ ``_0001`` … channels), ``<dataset>/labelsTr/<case>.nii.gz``
and, usually, ``<dataset>/dataset.json`` (nnU-Net v2: ``channel_names``, ``labels`` name → value,
``file_ending``; MSD: ``modality``, ``labels`` value → name). Pure: names, ``dataset.json`` and
at most a few label files read.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from segops.data.detection import Detection
from segops.data.volumes import channel_case_of, read_dataset_json, read_volume_file, volume_extension
from segops.errors import PlanError

IMAGES, LABELS = "imagesTr", "labelsTr"
VOLUME_EXTS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def nnunet_folder(files: list[str]) -> str | None:
    """The folder (relative, "" for the root; at most two levels down) that holds ``imagesTr`` with
    volume files beside a ``labelsTr`` folder of volume files, or None.

    Args:
        files: relative POSIX paths of the files under the planned folder.
    """
    found = set()
    for f in files:
        parts = PurePosixPath(f).parts
        if 2 <= len(parts) <= 4 and parts[-2] == LABELS and f.lower().endswith(VOLUME_EXTS):
            found.add("/".join(parts[:-2]))
    for folder in sorted(found, key=lambda d: (d.count("/"), d)):
        prefix = f"{folder}/{IMAGES}/" if folder else f"{IMAGES}/"
        if any(f.startswith(prefix) and f.lower().endswith(VOLUME_EXTS) for f in files):
            return folder
    return None


def nnunet_layout(root: Path, files: list[str], folder: str, sample: int = 5) -> Detection:
    """The volumes source of the dataset in ``root / folder``: images ``imagesTr``, labels
    ``labelsTr/{case}<file ending>``; classes from ``dataset.json`` labels where present, else the
    largest value in at most ``sample`` (and 5) label files.

    Raises:
        PlanError: no case has a label.
    """
    base = root / folder if folder else root
    prefix = f"{folder}/{IMAGES}/" if folder else f"{IMAGES}/"
    cases: dict[str, set[int]] = {}
    endings: Counter[str] = Counter()
    listed = set(files)
    images = [f[len(prefix) :] for f in files if f.startswith(prefix) and f.lower().endswith(VOLUME_EXTS)]
    named = named_channels(images)  # HECKTOR's imagesTr/CHUM-001__CT.nii.gz + __PT, not _0000 / _0001
    for rel in images:
        case, channel, ext = channel_case_of(rel, VOLUME_EXTS, lambda r: prefix + r in listed, named)
        cases.setdefault(case, set()).add(channel or 0)
        endings[ext] += 1
    doc = read_dataset_json(base / "dataset.json")
    ending = str(doc.get("file_ending") or endings.most_common(1)[0][0])
    pattern = f"{{case}}{ending}"
    labelled = [c for c in cases if (base / LABELS / f"{c}{ending}").is_file()]
    if not labelled:
        raise PlanError(
            f"{base / IMAGES} holds {len(cases)} case(s) but {base / LABELS} has no {pattern} for any; "
            "give --labels FOLDER"
        )
    classes, why = volume_classes(doc, [base / LABELS / f"{c}{ending}" for c in labelled[: min(sample, 5)]])
    names = doc.get("channel_names") or doc.get("modality") or {}
    channels = max(len(v) for v in cases.values())
    listing = names if isinstance(names, dict) and names else dict(enumerate(named))
    said = f": {', '.join(str(v) for v in listing.values())}" if listing else ""
    source: dict[str, Any] = {"kind": "volumes", "path": str(base / IMAGES)}
    if named:
        source["channels"] = list(named)
    source["labels"] = {"kind": "volume", "path": str(base / LABELS), "pattern": pattern}
    note = (
        f"nnU-Net layout in {folder or '.'}: {len(labelled)} of {len(cases)} cases ({channels} channel(s){said}) "
        f"have a label in {LABELS} ({pattern}); {why}"
    )
    notes = {"labels": note}
    return Detection(
        source, "semantic", classes, "nnunet", "volume", len(cases), len(labelled), notes, class_names=label_names(doc)
    )


def label_names(doc: dict[str, Any]) -> dict[int, str]:
    """Foreground class → name from ``dataset.json`` labels (nnU-Net v2 ``{name: value}``, MSD
    ``{"1": name}``); nnU-Net v2 regions (a name → several values) name no single class."""
    declared = doc.get("labels")
    names: dict[int, str] = {}
    if not isinstance(declared, dict):
        return names
    for key, value in declared.items():
        if isinstance(value, int) and not isinstance(value, bool):
            names[value] = str(key)
        elif isinstance(key, str) and key.isdigit() and isinstance(value, str):
            names[int(key)] = value
    return {c: n for c, n in names.items() if c > 0}


def volume_classes(doc: dict[str, Any], labels: list[Path]) -> tuple[int, str]:
    """(classes, why): 1 + the largest label value ``dataset.json`` declares, else that the label files hold."""
    declared = doc.get("labels")
    values: list[int] = []
    if isinstance(declared, dict):
        for key, value in declared.items():
            for v in value if isinstance(value, list) else [value, key]:  # v2: name → value(s); MSD: "1" → name
                if (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, str) and v.isdigit()):
                    values.append(int(v))
    if values:
        return max(values) + 1, f"classes from dataset.json labels {declared}"
    seen: set[int] = set()
    for path in labels:
        try:
            seen.update(int(v) for v in np.unique(read_volume_file(path, "label")[0]))
        except Exception:  # noqa: BLE001 - an unreadable label is for ingest to report
            continue
    found = max(seen, default=0)
    why = f"largest value in {len(labels)} label file(s): {found}"
    absent = sorted(set(range(1, found)) - seen)
    if absent:  # BraTS' 0, 1, 2, 4
        why += (
            f"; value(s) {absent} in none of them (values {sorted(seen)}): trained as classes no case holds, "
            "reported as such"
        )
    return max(found, 1) + 1, why


def named_channels(images: list[str]) -> tuple[str, ...]:
    """The channel names of cases kept as one file per channel, ``<case>_<name><ext>`` (BraTS'
    ``_flair``, ``_t1``, ``_t1ce``, ``_t2``), in name order: the last words of the images' names
    where at least two cases, and half of all, hold one file of each of the same two or more words;
    else (). Numbers are not names (nnU-Net's ``_0000`` channels, AMOS' ``amos_0001`` cases)."""
    by_case: dict[tuple[str, str], set[str]] = {}
    for f in images:
        path = PurePosixPath(f)
        stem = path.name[: len(path.name) - len(volume_extension(path.name, VOLUME_EXTS) or "")]
        case, sep, word = stem.rpartition("_")
        case = case.rstrip("_")  # HECKTOR's CHUM-001__CT
        if sep and case and word and not word.isdigit():
            by_case.setdefault((str(path.parent), case), set()).add(word)
    sets = Counter(frozenset(words) for words in by_case.values() if len(words) >= 2)
    if not sets:
        return ()
    words, n = sets.most_common(1)[0]
    return tuple(sorted(words)) if n >= 2 and n >= 0.5 * len(by_case) else ()
