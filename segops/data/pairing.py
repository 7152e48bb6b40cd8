"""Which files are images, which are their masks, and what they hold: the guesses behind ``segops plan``.

Pure (no Ray): the driver walks the folder (names only, at most :data:`MAX_LISTED` files) and
opens at most ``sample`` masks or DICOM headers. Every guess can be overridden
(:class:`PlanOverrides`); :class:`Detection` carries the source spec as plain data plus the
sentences that explain each guess (they become comments in the planned YAML).

Pairing styles, tried in this order:

1. ``--labels`` given: masks under that folder (or a COCO ``.json`` file).
1a. The nnU-Net / Medical Segmentation Decathlon layout: ``imagesTr`` (volumes, channel
   suffixes ``_0000`` …) beside ``labelsTr``, classes from ``dataset.json`` where present.
2. A COCO JSON (top-level ``images`` and ``annotations``) anywhere in the folder.
3. DICOM SEG objects (Modality ``SEG``) among the DICOM files; else RTSTRUCT objects (Modality
   ``RTSTRUCT``), whose ROI names become the ``rois`` rules, classes 1..K in name order; else
   LIDC-IDRI's XML reading files (:mod:`segops.data.lidc`).
3a. One mask file per object in a folder per image (:mod:`segops.data.mask_folder_layout`:
   Data Science Bowl 2018's ``<case>/images`` + ``<case>/masks``, or ``masks/<stem>/``).
3b. LabelMe JSON files beside their images (:mod:`segops.data.labelme`), or YOLO segmentation
   ``.txt`` files in ``labels/`` beside ``images/`` (:mod:`segops.data.yolo`), or VIA JSON files
   beside their images (:mod:`segops.data.via`), or a Supervisely project (:mod:`segops.data.supervisely`).
3c. Volume files outside the nnU-Net layout (:mod:`segops.data.volume_layout`: KiTS, LiTS,
   BTCV, suffixes, mask-named sibling folders).
4. A parallel tree: a folder with an image folder and a mask folder named like
   :data:`MASK_DIRS` or holding a mask word (``images/a/x.png`` ↔ ``masks/a/x.png``,
   ``PNGImages/x.png`` ↔ ``PedMasks/x_mask.png``); of several, the pair that pairs most.
5. The same folder: ``x.jpg`` + ``x.png``, or a suffix such as ``x_mask.png``.

Mask contents are guessed by :mod:`segops.data.mask_kinds`; defect-free folders beside a parallel
tree's image folder are added by :mod:`segops.data.normal_outside`."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from segops.data.archive_objects import dicom_files, select_images, structure_set_series
from segops.data.class_folders import class_folders
from segops.data.class_lists import with_listed_names
from segops.data.coco_layout import coco_layout, find_coco
from segops.data.ctc_layout import find_ctc
from segops.data.cvat import find_cvat
from segops.data.detection import Detection, PlanOverrides
from segops.data.globs import list_files, path_selected
from segops.data.imagescope import find_imagescope
from segops.data.instance_trees import CLASS_MASK_KEYS, instance_labels, instance_tree
from segops.data.label_studio import find_label_studio
from segops.data.labelme import find_labelme
from segops.data.lidc import find_lidc, lidc_layout
from segops.data.mask_colours import classify_colours, colour_census, is_colour_mask
from segops.data.mask_content import (
    as_glob,
    mask_folder_by_content,
    mask_pattern_by_example,
    mask_pattern_by_id,
    same_region,
)
from segops.data.mask_folder_layout import find_mask_folders
from segops.data.mask_kinds import classify_masks, mask_census
from segops.data.mask_names import (
    IMAGE_EXTS,
    INSTANCE_WORD,
    MASK_DIRS,
    MASK_PART,
    MASK_SUFFIXES,
    best_pattern,
    best_renamed,
    collapsed,
    file_globs,
    match_pattern,
    normal_folders,
    other_annotations,
    parallel_tree,
    stray_files,
)
from segops.data.mask_sizes import rescaled_masks
from segops.data.nnunet_layout import nnunet_folder, nnunet_layout
from segops.data.normal_outside import with_normals_beside
from segops.data.rle_layout import find_rle_csv
from segops.data.rtstruct_labels import find_structure_sets
from segops.data.seg_layout import dicom_rtstruct, dicom_seg, seg_files
from segops.data.split_folders import split_folders, split_pairs
from segops.data.supervisely import find_supervisely
from segops.data.unannotated import clean_parts, named_test_data, spread
from segops.data.via import find_via
from segops.data.volume_layout import find_dicom_volume_labels, find_volume_pairs
from segops.data.yolo import find_yolo
from segops.errors import PlanError

log = logging.getLogger(__name__)


def detect(root: Path, overrides: PlanOverrides = PlanOverrides(), sample: int = 300) -> Detection:
    """Guess the source spec of the archive under ``root``.

    Raises:
        PlanError: no images, or no labels found (the message says which option to give).
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise PlanError(f"{root} is not a folder; give the folder that holds the images (and masks)")
    files = list_files(root)
    return with_listed_names(root, files, _detect(root, files, overrides, sample))


def _detect(root: Path, files: list[str], overrides: PlanOverrides, sample: int) -> Detection:
    boxes: PlanError | None = None
    labels = overrides.labels.resolve() if overrides.labels else None
    if labels is not None and labels.suffix.lower() == ".json":
        return coco_layout(root, files, labels, overrides)
    pictures = [f for f in files if PurePosixPath(f).suffix.lower() in IMAGE_EXTS]
    if labels is None:
        nnunet = nnunet_folder(files)
        if nnunet is not None:
            return nnunet_layout(root, files, nnunet, sample)
        coco = find_coco(root, files)
        if coco is not None:
            return coco_layout(root, files, coco[0], overrides, coco[1])
        rle = find_rle_csv(root, files, pictures, overrides.task)
        if rle is not None:
            return rle
        folders = find_mask_folders(root, files, pictures, overrides.task) or find_ctc(
            root, files, overrides.task, sample
        )
        if folders is not None:
            return with_normals_beside(root, pictures, folders)
        sidecars = find_labelme(root, files, pictures, overrides.task) or find_imagescope(
            root, files, pictures, overrides.task
        )
        if sidecars is not None:
            return sidecars
        try:
            yolo = (
                find_yolo(root, files, pictures, overrides.task)
                or find_via(root, files, overrides.task)
                or find_cvat(root, files, overrides.task)
                or find_label_studio(root, files, overrides.task)
                or find_supervisely(root, files, overrides.task)
            )
        except PlanError as exc:  # YOLO boxes: the reason to give if no mask is found either
            boxes = exc
        else:
            if yolo is not None:
                return yolo
    dicom = dicom_files(root, files)
    is_dicom = bool(dicom) and len(dicom) >= len(pictures)  # DICOM images + mask pictures: as many of each
    if is_dicom and labels is None:
        segs = seg_files(root, dicom, sample)
        structs = [] if segs else find_structure_sets(root, dicom, sample)
        if segs or structs:  # the images are the other DICOM files; the labels name the series they were drawn on
            found = dicom_seg(root, dicom, segs, sample) if segs else dicom_rtstruct(root, dicom, structs)
            images = sorted(set(dicom) - set(segs or structs))
            series = structure_set_series(root, segs or structs)
            return select_images(root, found, images, lambda o: o.series_uid in series)
        lidc = find_lidc(root, files, sample)
        if lidc:
            xml_folders = {str(PurePosixPath(f).parent) for f in lidc}  # a reading file lies in its series' folder
            return select_images(
                root,
                lidc_layout(root, dicom, lidc),
                dicom,
                lambda o: str(PurePosixPath(o.rel_path).parent) in xml_folders,
            )
        label_volumes = find_dicom_volume_labels(root, dicom, files, sample)
        if label_volumes is not None:
            return label_volumes
    if not is_dicom and labels is None:
        volumes = find_volume_pairs(root, files, pictures, sample)
        if volumes is not None:
            return volumes
    images = dicom if is_dicom else pictures
    if not images:
        raise PlanError(f"no image or DICOM files under {root}; expected {', '.join(IMAGE_EXTS)} or DICOM files")
    try:
        found = _paired(root, files, images, "dicom" if is_dicom else "images", labels, overrides, sample)
        if found.region_only and labels is None and not is_dicom and overrides.pattern is None:
            better = _paired_by_content(root, files, pictures, overrides, sample)  # DRIVE: vessels, not mask/
            if better is not None and not better.region_only:
                fov = Path(found.source["labels"]["path"]) / found.source["labels"].get("pattern", "")
                why = f"{fov} holds one region for every image (a field of view), no label"
                return dataclasses.replace(better, notes=better.notes | {"labels": f"{better.notes['labels']}; {why}"})
        return _region_said(with_normals_beside(root, images, found))
    except PlanError:
        if labels is None and not is_dicom and overrides.pattern is None:
            found = _paired_by_content(root, files, pictures, overrides, sample)
            if found is not None:
                return _region_said(found)
        if boxes is not None:
            raise boxes from None
        raise


# --------------------------------------------------------------------------- mask pairing


def _region_said(found: Detection) -> Detection:
    """``found``, its masks' being one region on every image (a field of view) logged as a warning."""
    if found.region_only:
        log.warning("%s", found.notes["path"].split("; ")[0])
    return found


def _paired_by_content(
    root: Path, files: list[str], pictures: list[str], overrides: PlanOverrides, sample: int
) -> Detection | None:
    """Where no name pairs images and masks: the masks told by their files (:mod:`segops.data.mask_content`),
    a sibling folder (``rgb/`` + ``BW/``, as ``--labels`` would name it) or a pattern found by example
    (CHASE_DB1's ``{rel_stem}_1stHO.png``, PH2's ``{parent_dir}/{stem}_lesion/{stem}_lesion.bmp``, as
    ``--pattern`` would give it; the other mask-like files, a second reader's ``_2ndHO.png``, excluded)."""
    folder = mask_folder_by_content(root, pictures)
    if folder is not None:
        found = _paired(root, files, pictures, "images", root / folder[0], overrides, sample)
        note = found.notes["labels"].replace("labels-option pairing", f"content pairing ({folder[1]})", 1)
        return dataclasses.replace(found, pairing="content", notes=found.notes | {"labels": note})
    by_example = mask_pattern_by_example(root, pictures)
    if by_example is None:  # DRIVE's {parent_dir}/1st_manual/{id}_manual1.gif: the images' folders read alone
        by_id = mask_pattern_by_id(root, [f for f in files if PurePosixPath(f).suffix.lower() in (*IMAGE_EXTS, ".gif")])
        found = None if by_id is None else _paired_at_root(root, files, pictures, overrides, sample, *by_id)
        if found is None:
            return None
        notes = found.notes | {"include": "the images' folders; the other folders hold masks"}
        return dataclasses.replace(found, source=found.source | {"include": by_id[1]}, notes=notes)
    pattern, globs, why = by_example
    found = _paired_at_root(root, files, pictures, overrides, sample, pattern, (), why, globs)
    if found is None:
        return None
    if "{rel_stem}" not in pattern and "{rel_dir}" not in pattern:  # listing cannot tell its files from inputs
        globs = [*globs, as_glob(pattern)]
    if not globs:
        return found
    said = "the masks and the other mask-like files" if as_glob(pattern) in globs else "the other mask-like files"
    notes = found.notes | {"exclude": "; ".join([*filter(None, [found.notes.get("exclude")]), said])}
    source = found.source | {"exclude": [*found.source.get("exclude", []), *globs]}
    return dataclasses.replace(found, source=source, notes=notes)


def _paired_at_root(
    root: Path,
    files: list[str],
    pictures: list[str],
    overrides: PlanOverrides,
    sample: int,
    pattern: str,
    include: Sequence[str],
    why: str,
    exclude: Sequence[str] = (),
) -> Detection | None:
    """The ``pictures`` ``include`` / ``exclude`` select, paired by a ``pattern`` found from the files'
    contents (naming masks from ``root``): a ``content`` pairing whose note says ``why``, or None."""
    kept = [p for p in pictures if path_selected(p, tuple(include), tuple(exclude))]
    try:
        found = _paired(
            root, files, kept, "images", None, dataclasses.replace(overrides, pattern=pattern), sample, True
        )
    except PlanError:
        return None
    note = f"content pairing ({why}): " + found.notes["labels"].split(" pairing: ", 1)[-1]
    return dataclasses.replace(found, pairing="content", notes=found.notes | {"labels": note})


def _roots(
    root: Path, files: list[str], images: list[str], labels: Path | None, pattern: str | None, at_root: bool
) -> tuple[Path, Path, str, list[str]]:
    """(image folder, mask folder, pairing style, other datasets of the same layout beside it);
    ``at_root``: both the root (a pattern found by example names masks from the root)."""
    if at_root:
        return root, root, "same-folder", []
    if labels is not None:
        return _image_root_for(root, images, labels, pattern), labels, "labels-option", []
    tree = parallel_tree(root, files)
    if tree is not None:
        return root / tree[0], root / tree[1], "parallel-tree", tree[2]
    return root, root, "same-folder", []


def _paired(
    root: Path,
    files: list[str],
    images: list[str],
    kind: str,
    labels: Path | None,
    overrides: PlanOverrides,
    sample: int,
    at_root: bool = False,
) -> Detection:
    """Images and mask files (parallel tree, same folder or ``--labels``; ``at_root``: both the root)
    → Detection."""
    image_root, label_root, pairing, siblings = _roots(root, files, images, labels, overrides.pattern, at_root)
    prefix = image_root.relative_to(root).as_posix() if image_root != root else ""
    label_prefix = (
        label_root.relative_to(root).as_posix() if label_root.is_relative_to(root) and label_root != root else None
    )

    def wanted(f: str) -> bool:
        return (not prefix or f.startswith(prefix + "/")) and not (label_prefix and f.startswith(label_prefix + "/"))

    rel_images = [f[len(prefix) + 1 :] if prefix else f for f in images if wanted(f)]
    mask_files = set(files) if label_root == root else set(list_files(label_root))
    replace: dict[str, str] = {}
    if overrides.pattern:
        pattern, hits = (
            overrides.pattern,
            sum(1 for i in rel_images if (label_root / match_pattern(overrides.pattern, i)).is_file()),
        )
    else:
        pattern, hits = best_pattern(rel_images, mask_files, label_root == image_root)
        if hits < len(rel_images):  # masks named with another word (train-volume.tif / train-labels.tif)
            instances = overrides.task == "instance"  # Cityscapes' instanceIds, not its labelIds
            renamed, words, more = best_renamed(rel_images, mask_files, label_root == image_root, instances)
            if more > hits:
                pattern, replace, hits = renamed, words, more
    ids_beside = None  # Cityscapes: the x_gtFine_instanceIds.png beside the x_gtFine_labelIds.png planned
    if replace and overrides.task is None:
        _, other, found = best_renamed(rel_images, mask_files, label_root == image_root, instances=True)
        ids_beside = (
            next((v for v in other.values() if INSTANCE_WORD.search(v.lower())), None) if found >= hits else None
        )
    include: list[str] = []
    split = None
    if pattern and not labels and not replace:
        split = split_folders(root, images, image_root, label_root, pattern) or split_pairs(
            root, images, image_root, label_root, pattern, siblings
        )
    if split is not None and split.hits > hits:  # train/ + train_labels/, or train/{images,masks} + val/…: one dataset
        image_root = label_root = split.parent
        prefix, label_prefix = (image_root.relative_to(root).as_posix() if image_root != root else ""), None
        pattern, hits, pairing, include = split.pattern, split.hits, "split-folders", split.include
        siblings = list(split.others)
        replace = split.replace
        rel_images = [
            i for i in (f[len(prefix) + 1 :] if prefix else f for f in images if wanted(f)) if path_selected(i, include)
        ]
        mask_files = set(list_files(label_root))
    if not pattern or not hits:
        raise PlanError(
            f"found {len(rel_images)} images under {image_root} but no mask for any of them (looked for "
            f"{{rel_stem}}{{suffix}}.png/.tif/.bmp with suffixes {', '.join(repr(s) for s in MASK_SUFFIXES)} in "
            f"{label_root}); give --labels FOLDER and --pattern, e.g. --pattern '{{rel_stem}}_mask.png'"
            + other_annotations(rel_images, files)
        )
    if pairing == "same-folder" and "{rel_stem}." not in pattern:
        pairing = "suffix"
    mask_of = {i: match_pattern(pattern, i, replace) for i in rel_images}
    named = set(mask_of.values())
    parts = {f for f in mask_files if (base := MASK_PART.sub(r"\g<ext>", f)) != f and base in named}  # BUSI
    masks_set = {m for i, m in mask_of.items() if m != i and m in mask_files} if label_root == image_root else set()
    data = [i for i in rel_images if i not in masks_set and not (label_root == image_root and i in parts)]
    same = label_root == image_root
    paired = [i for i in data if not (same and mask_of[i] == i) and (label_root / mask_of[i]).is_file()]
    sampled = [label_root / mask_of[i] for i in spread(paired, sample)]
    census = None
    if overrides.foreground_value is None and 2 * sum(map(is_colour_mask, sampled)) > len(sampled):
        labels_spec, task, classes, mask_kind, why = classify_colours(colour_census(sampled))
    else:
        census = mask_census(sampled)
        labels_spec, task, classes, mask_kind, why = classify_masks(census, overrides.task, overrides.foreground_value)
    labels_spec = {"kind": labels_spec.pop("kind"), "path": str(label_root), "pattern": pattern, **labels_spec}
    if replace:
        labels_spec["replace"] = replace
    if parts and labels_spec["kind"] == "mask-png":
        labels_spec["parts"] = True
    if labels_spec["kind"] == "mask-png" and (fits := rescaled_masks(image_root, label_root, mask_of, paired)):
        labels_spec["resize"], why = True, f"{why}; {fits}"  # SCR's 1024² masks for JSRT's 2048² radiographs
    source: dict[str, Any] = {"kind": kind, "path": str(image_root), "labels": labels_spec}
    if include:
        source["include"] = include
    notes = {"labels": f"{pairing} pairing: {len(paired)} of {len(data)} images have a mask ({pattern}); {why}"}
    if ids_beside and task == "semantic":
        notes["labels"] += (
            f"; instance ids in the *{ids_beside}* files beside them: --task instance plans Mask R-CNN on those"
        )
    tree = None
    if task == "semantic" and not parts and labels_spec.keys() <= CLASS_MASK_KEYS:
        tree = instance_tree(label_root, pattern, sampled, labels_spec.get("void"))
    if tree is not None and overrides.task is None:  # VOC: SegmentationObject ids + SegmentationClass classes
        labels_spec = source["labels"] = instance_labels(labels_spec, tree, pattern)
        task, mask_kind = "instance", "instance-id"
        notes["labels"] += (
            f"; instance ids in {tree.instances}/ beside the class masks in {tree.classes}/ (same names, up to "
            f"{tree.most_objects} objects per mask): each object takes the class under most of its pixels, "
            "trained as instances (--task semantic for class masks alone)"
        )
    elif labels_spec["kind"] == "mask-png" and "void" in labels_spec:  # VOC's borders: an ignore label
        labels_spec["ignore_void"] = True
        notes["labels"] += ", left out of the loss and the scores (ignore_void)"
    per_class = None  # Montgomery's leftMask/ + rightMask/: binary masks in a folder per class
    if task == "semantic" and tree is None and labels_spec["kind"] == "mask-png" and classes == 2 and paired:
        per_class = class_folders(label_root, pattern, paired, replace)
    if per_class is not None:  # a note, and the classes where the folders are not another reader's
        labels_spec.update({"class_files": per_class.class_files} if per_class.class_files else {})
        classes, notes["labels"] = classes + len(per_class.class_files), notes["labels"] + per_class.note
        mask_kind += ", a folder per class" if per_class.class_files else ""
    if parts:
        notes["labels.parts"] = f"{len(parts)} numbered part(s) beside masks ({sorted(parts)[0]}): one mask with them"
    paired_set = set(paired)
    normal = normal_folders(data, paired_set)
    if normal:
        normal_images = [i for i in data if i not in paired_set and str(PurePosixPath(i).parent) in normal]
        normal = collapsed(normal, paired_set)
        labels_spec["empty_when_missing"] = [f"{d}/**" for d in normal]
        notes["labels.empty_when_missing"] = (
            f"{len(normal_images)} images in {', '.join(normal)} have no mask: defect-free by the folder's name, "
            "trained on as empty masks"
        )
        paired += normal_images
    if exclude := stray_files(data, set(paired), masks_beside=same, replace=replace):
        source["exclude"] = file_globs(exclude, set(paired))
        notes["exclude"] = f"{len(exclude)} unpaired non-data, mask-named or sibling file(s), e.g. {exclude[0]}"
    unlabelled = len(data) - len(paired) - len(exclude)
    per_file = labels_spec["kind"] in ("mask-png", "instance-png")  # kinds with empty_when_missing
    excluded = set(exclude)
    unmasked = [i for i in data if i not in paired_set and i not in excluded] if unlabelled and per_file else []
    only_defects = kind == "images" and census is not None and 0 < census.with_foreground == census.masks
    masked_dirs = {str(PurePosixPath(p).parent) for p in paired_set}
    test_data = [i for i in unmasked if named_test_data(i, masked_dirs)]
    clean, elsewhere = (
        clean_parts(root, files, image_root, paired, unmasked, sample)
        if unmasked and only_defects and not normal
        else (False, None)
    )
    if elsewhere:  # Pascal VOC: 14k photos with boxes but no mask are not background
        notes["labels"] += (
            f"; {unlabelled} image(s) have no mask and are not taken as empty: {elsewhere}; unlabelled "
            "(segmented, never trained on)"
        )
    elif clean:
        # every mask shows something (DAGM's Label/ holds masks of defective samples only): the images
        # without one are the defect-free ones; left out, a model would never see a clean part
        labels_spec["empty_when_missing"] = ["**"]
        notes["labels.empty_when_missing"] = (
            f"every sampled mask has foreground, so masks were drawn only where there is a defect: the "
            f"{unlabelled} image(s) without one are trained on and scored as defect-free (empty masks); "
            "delete this line if they are merely not annotated yet"
        )
        paired += unmasked
    elif test_data:  # ISBI 2012's test-volume.tif beside train-volume.tif: test data, not defect-free parts
        notes["labels"] += (
            f"; {unlabelled} image(s) have no mask, named as test data ({test_data[0]}): unlabelled (segmented, "
            "never trained on)"
        )
    elif unlabelled and per_file:
        notes["labels"] += (
            f"; {unlabelled} image(s) have no mask: unlabelled (segmented, never trained on); if they are "
            "defect-free, add empty_when_missing: ['**'] to train on them as empty masks"
        )
    outside = [f for f in images if not wanted(f) and not (label_prefix and f.startswith(label_prefix + "/"))]
    if tree is not None:
        outside = [f for f in outside if not (root / f).is_relative_to(tree.parent / tree.instances)]
    if siblings:
        outside = [f for f in outside if not any(f.startswith(sib + "/") for sib in siblings)]
    if prefix and outside:
        folders = sorted({str(PurePosixPath(f).parent) for f in outside})  # BTAD's 01/train/ok, not 01
        named = ", ".join(folders[:5]) + (", …" if len(folders) > 5 else "")
        notes["path"] = f"{len(outside)} image(s) outside it ({named}) pair with no mask and are left out"
    if siblings:
        chosen = image_root.relative_to(root).parts[0]
        tops = [PurePosixPath(s).parts[0] for s in siblings]  # VisA's pcb1 for pcb1/Data, as candle for candle/Data
        shown = tops if len(set(tops)) == len(tops) and chosen not in tops else siblings
        others = ", ".join(shown[:5]) + (", …" if len(shown) > 5 else "")
        separate = (
            f"{len(siblings) + 1} folders hold images and masks in this layout ({chosen}, {others}): separate "
            f"datasets, one model each as MVTec AD's categories are trained; planned {chosen} (the most masks); "
            f"plan another with: segops plan {root / shown[0]}"
        )
        log.warning("%s", separate)
        notes["path"] = separate + (f"; {notes['path']}" if "path" in notes else "")
    region = task == "semantic" and same_region(sampled)  # DRIVE's, HRF's mask/ folders: the retina, not the vessels
    if region:
        region_note = (
            f"every sampled mask in {label_root} is the same region (a field of view or region of interest, "
            "not a label?): if the labels are elsewhere, give --labels FOLDER"
        )
        notes["path"] = region_note + (f"; {notes['path']}" if "path" in notes else "")
    names = per_class.names if per_class is not None and per_class.class_files else {}
    n_images = len(data) - len(exclude)
    return Detection(source, task, classes, pairing, mask_kind, n_images, len(paired), notes, census, names, region)


def _image_root_for(root: Path, images: list[str], labels: Path, pattern: str | None) -> Path:
    """With ``--labels``: the folder (the root or one below it, 3 levels at most) whose images find
    the most masks; ties go to an image-like name, then to the deeper folder."""
    masks = set(list_files(labels))
    subs = {"/".join(PurePosixPath(f).parts[:d]) for f in images for d in range(1, min(4, len(PurePosixPath(f).parts)))}
    best, best_score = root, (-1, False, False, 0)
    for sub in ["", *sorted(subs)]:
        rel = [f[len(sub) + 1 :] if sub else f for f in images if not sub or f.startswith(sub + "/")]
        hits = sum(match_pattern(pattern, i) in masks for i in rel) if pattern else best_pattern(rel, masks)[1]
        name = PurePosixPath(sub).name.lower()
        score = (
            hits,
            name.startswith(("image", "img")),
            name not in (*MASK_DIRS, "classes"),
            sub.count("/") + bool(sub),
        )
        if score > best_score and (root / sub).resolve() != labels:
            best, best_score = root / sub if sub else root, score
    return best
