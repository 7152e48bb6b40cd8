"""Source and label specs: which files a step reads and where their labels are.

Each is a discriminated union on ``kind``, so an unknown kind is reported as ``'<kind>' is not
one of <known kinds>``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from segops.config.annotation_files import CvatLabels, LabelStudioLabels, SuperviselyLabels, ViaLabels
from segops.config.contour_labels import IGNORE_CLASS, LidcLabels, RtstructLabels
from segops.config.selection import DicomSelection, FileSelection, check_globs
from segops.config.source_help import (
    CLASS_FILES_HELP,
    CLASS_STRIDE_HELP,
    COLOURS_HELP,
    EMPTY_HELP,
    GROUP_HELP,
    REPLACE_HELP,
    VOID_HELP,
)
from segops.config.spec import Spec

#: The class-map value of pixels left out of the loss and the scores (nnU-Net's ignore label,
#: torchvision's and mmsegmentation's ``ignore_index=255``): mask-png's ``void`` with ``ignore_void``.
#: Never a class: a model whose labels hold it has at most 255 classes (0..254).
IGNORE_LABEL = IGNORE_CLASS


class _EmptyWhenMissing(Spec):
    """Labels where an input without one may mean "nothing to segment": ``empty_when_missing``."""

    empty_when_missing: tuple[str, ...] = Field(default=(), description=EMPTY_HELP)

    @model_validator(mode="after")
    def _empty_globs_relative(self) -> _EmptyWhenMissing:
        check_globs(self.empty_when_missing, (), "empty_when_missing")
        return self


class _MaskFiles(_EmptyWhenMissing):
    """What mask-per-image labels share: ``empty_when_missing``, ``void`` and ``replace``."""

    void: int | None = Field(default=None, ge=0, le=65535, description=VOID_HELP)
    replace: dict[Annotated[str, Field(min_length=1)], str] = Field(default_factory=dict, description=REPLACE_HELP)


class MaskPngLabels(_MaskFiles):
    """One mask image per input, found by the input's relative path.

    ``pattern`` is formatted with ``rel_dir``, ``parent_dir``, ``stem``, ``rel_stem`` (relative path
    without suffix) and ``id`` (the name's first word) of the input, e.g. ``{rel_stem}.png``,
    ``{rel_dir}/{stem}_mask.png`` or DRIVE's ``{parent_dir}/1st_manual/{id}_manual1.gif``.
    Pixel values are class indices; a binary mask stored as 0/255 is read as 0/1. ``values``
    maps stored values to classes instead, e.g. ``{0: 1, 255: 0}`` where black marks the
    structure (ISBI 2012 membranes); then every stored value must be listed. ``threshold: T``
    binarises instead: stored value >= T is foreground (1), else 0, for anti-aliased, resized
    or JPEG-compressed masks whose edges hold values between 0 and 255. ``colors`` reads
    colour-coded masks (``'#ff0000': 1``). ``empty_when_missing``:
    inputs (globs) whose absent mask means "nothing to segment", e.g. ``["good/**"]``. ``parts``:
    a mask may be split over numbered files beside it (BUSI's ``x_mask.png``, ``x_mask_1.png``,
    ``x_mask_2.png`` …, one per lesion), read as one mask: each pixel the largest class of the parts.
    ``class_files``: a binary mask per class in a folder per class (``pattern``'s mask is class 1).
    """

    kind: Literal["mask-png"]
    path: Path
    pattern: str = "{rel_stem}.png"
    values: dict[Annotated[int, Field(ge=0, le=65535)], Annotated[int, Field(ge=0, le=255)]] | None = None
    threshold: int | None = Field(
        default=None, ge=1, le=65535, description="Stored value >= threshold is class 1, else 0 (e.g. 128)."
    )
    colors: dict[Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$")], Annotated[int, Field(ge=0, le=255)]] | None = (
        Field(default=None, description=COLOURS_HELP)
    )
    parts: bool = Field(default=False, description="Also read x_mask_1.png, x_mask_2.png … beside x_mask.png.")
    resize: bool = Field(
        default=False,
        description="A mask of another size than its image but the same aspect ratio (SCR's 1024² lung masks for "
        "JSRT's 2048² radiographs) is resized to the image, nearest neighbour; else a size mismatch is a label error.",
    )
    class_files: dict[Annotated[str, Field(min_length=1)], Annotated[int, Field(ge=2, le=254)]] | None = Field(
        default=None, description=CLASS_FILES_HELP
    )
    ignore_void: bool = Field(
        default=False,
        description="void pixels are left out of the loss and of every score (an ignore label, as nnU-Net's and "
        "torchvision's VOC reference treat VOC's borders) instead of read as background.",
    )

    @model_validator(mode="after")
    def _one_reading(self) -> MaskPngLabels:
        given = [name for name in ("values", "threshold", "colors") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(
                f"{' and '.join(given)} are given together; values maps each stored value, threshold binarises "
                "(stored >= threshold → 1), colors maps each colour of a colour-coded mask: keep one of them"
            )
        if self.ignore_void and self.void is None:
            raise ValueError("ignore_void leaves the void pixels out: give void, the stored value of those pixels")
        if self.ignore_void and IGNORE_LABEL in (self.values or {}).values():
            raise ValueError(f"with ignore_void, {IGNORE_LABEL} marks ignored pixels: map no value to class 255")
        if self.class_files and self.pattern in self.class_files:
            raise ValueError(f"class_files repeats pattern {self.pattern!r}: its mask is class 1 already")
        return self

    @field_validator("colors")
    @classmethod
    def _lower_case(cls, colors: dict[str, int] | None) -> dict[str, int] | None:
        return None if colors is None else {key.lower(): value for key, value in colors.items()}


class DicomSegLabels(Spec):
    """A folder of DICOM SEG objects; frames are matched to images by referenced SOP Instance UID.

    The label value of a pixel is its segment number (1..S), or ``segments[number]`` if given.
    """

    kind: Literal["dicom-seg"]
    path: Path
    segments: dict[int, int] | None = None


class CocoLabels(Spec):
    """A COCO JSON file of instance annotations (polygons or RLE), and ``more_files`` of the same
    categories read with it (other splits: Roboflow's ``valid/_annotations.coco.json``, COCO's
    ``instances_val2017.json``).

    Images are matched by the ``file_name`` beside their COCO file, else by ``file_name``
    relative to the source folder, else by base name (a name two files share: only beside its
    file). The class of an annotation is ``categories[category_id]``, by default the category's
    rank among the files' categories (1..K). Rasterised to a class map, or with
    ``instances: true`` to an instance label map (see :mod:`segops.data.instances`) for instance models.
    """

    kind: Literal["coco"]
    path: Path
    more_files: tuple[Path, ...] = Field(default=(), description="Further COCO files of the same categories.")
    categories: dict[int, Annotated[int, Field(ge=0, le=255)]] | None = None
    instances: bool = Field(default=False, description="Keep instances apart (for arch: maskrcnn).")


class InstancePngLabels(_MaskFiles):
    """Instance-id mask images (0 = background, k = instance k), found by ``pattern`` as in mask-png
    (``empty_when_missing`` too: an input it names without a mask has no instances).

    Every instance has class ``class_id``; with ``classes_pattern``, a class-index mask found
    by that pattern gives each instance the most frequent class under its pixels (Pascal VOC:
    ``SegmentationObject/{rel_stem}.png`` with ``SegmentationClass/{rel_stem}.png``), its stored
    values mapped to classes by ``class_values`` where given (``void`` pixels, in either file, are
    no object). With ``class_stride``, each id holds its class (Cityscapes' ``instanceIds``).
    """

    kind: Literal["instance-png"]
    path: Path
    pattern: str = "{rel_stem}.png"
    classes_pattern: str | None = None
    class_values: dict[Annotated[int, Field(ge=0, le=65535)], Annotated[int, Field(ge=0, le=255)]] | None = Field(
        default=None,
        description="The class masks' stored value → class (every stored value listed), as mask-png's values.",
    )
    class_id: int = Field(default=1, ge=1, le=255)
    class_stride: int | None = Field(default=None, ge=2, le=65535, description=CLASS_STRIDE_HELP)

    @model_validator(mode="after")
    def _class_values_with_classes(self) -> InstancePngLabels:
        if self.class_stride is not None and self.classes_pattern is not None:
            raise ValueError("class_stride reads each id's class from the id itself: drop classes_pattern or it")
        if self.class_values is not None and self.classes_pattern is None and self.class_stride is None:
            raise ValueError(
                "class_values maps the values of class masks (classes_pattern) or the classes ids encode "
                "(class_stride): give one of them too, or drop class_values"
            )
        return self


class MaskFolderLabels(_EmptyWhenMissing):
    """One binary mask file per object, every mask file of an input in one folder that ``pattern``
    names: the Data Science Bowl 2018 nuclei layout (``<case>/images/<case>.png`` with
    ``<case>/masks/*.png``: pattern ``{parent_dir}/masks``) or ``masks/<image stem>/*.png``
    beside ``images/`` (pattern ``{rel_stem}``, the default).

    ``pattern`` takes the fields of mask-png's, and ``parent_dir``: the folder above the input's
    folder (``<case>`` for ``<case>/images/x.png``). A file's pixels above half its largest value
    are the object (0/1, 0/255 and anti-aliased masks alike); an all-zero file is no object. The
    objects are class ``class_id``: their union is the class map, or with ``instances: true``
    each file is one instance (for ``arch: maskrcnn``), files taken in name order, where two
    overlap the later one keeps the shared pixels. A folder without mask files lists an input
    with nothing to segment; an input without a folder is unlabelled (``empty_when_missing``:
    empty instead).
    """

    kind: Literal["mask-folder"]
    path: Path
    pattern: str = "{rel_stem}"
    class_id: int = Field(default=1, ge=1, le=255)
    instances: bool = Field(default=False, description="Each file one instance (for arch: maskrcnn).")
    replace: dict[Annotated[str, Field(min_length=1)], str] = Field(default_factory=dict, description=REPLACE_HELP)


class LabelmeLabels(_EmptyWhenMissing):
    """LabelMe JSON files, one per input, found by ``pattern`` (``{rel_stem}.json``: beside the image,
    as the LabelMe tool saves them). Each area shape (polygon, rectangle, circle, LabelMe 5's mask)
    is a region of class ``classes[label]`` (a name mapped to 0 is left out; a name not listed is a
    label error of that image); by default every label name in the files, numbered 1..K in sorted
    order (then the files are all read once when ingest starts). Lines and points are no area and
    are left out. Later shapes on top; with ``instances: true`` each shape is one instance (shapes
    sharing a ``group_id``, one) for ``arch: maskrcnn``.
    """

    kind: Literal["labelme"]
    path: Path
    pattern: str = "{rel_stem}.json"
    classes: dict[str, Annotated[int, Field(ge=0, le=255)]] | None = None
    instances: bool = Field(default=False, description="Each shape one instance (for arch: maskrcnn).")


class ImageScopeLabels(LabelmeLabels):
    """Aperio ImageScope XML files, one per input, found by ``pattern`` (``{rel_stem}.xml``; MoNuSeg's
    ``Annotations/TCGA-….xml`` beside ``Tissue Images/``). Each region of a layer (polygon, freehand,
    rectangle, ellipse) is one region of class ``classes[name]``, the layer's ``Name`` or its first
    attribute (MoNuSAC's cell types; ``object`` where it names none); arrows and rulers are no area;
    a ``NegativeROA`` region is a hole in its layer. By default every name in the files, 1..K in
    sorted order. With ``instances: true`` each region is one instance (for ``arch: maskrcnn``).
    """

    kind: Literal["imagescope"]  # type: ignore[assignment]
    pattern: str = "{rel_stem}.xml"
    instances: bool = Field(default=False, description="Each region one instance (for arch: maskrcnn).")


class YoloLabels(_EmptyWhenMissing):
    """YOLO segmentation label files (Ultralytics; Roboflow's YOLOv8 export), one ``.txt`` per input
    found by ``pattern`` (``{rel_stem}.txt`` under ``labels/`` for ``images/train/x.jpg``;
    ``{parent_dir}/labels/{stem}.txt`` for Roboflow's ``train/images/x.jpg``). Each line is one
    object, ``class x1 y1 … xn yn``: a polygon in fractions of the image's width and height, YOLO
    class k → class k + 1. An empty file is an image without objects; an input without a file is
    unlabelled unless ``empty_when_missing`` names it (Ultralytics reads it as background). Box
    lines (``class cx cy w h``, YOLO detection) have no outline: a label problem of their image.
    With ``instances: true`` each line is one instance (for ``arch: maskrcnn``); later lines on top.
    """

    kind: Literal["yolo"]
    path: Path
    pattern: str = "{rel_stem}.txt"
    instances: bool = Field(default=False, description="Each line one instance (for arch: maskrcnn).")


class VolumeLabels(Spec):
    """Label volumes (NIfTI ``.nii``/``.nii.gz``, NRRD, MHA/MHD), one per case, on the image's grid.

    ``pattern`` is formatted with ``case`` (the image file's name without its extension and
    without an nnU-Net channel suffix ``_0000``), ``rel_dir`` and ``case_number`` (the case name's
    trailing digits: ``segmentation-{case_number}.nii`` for LiTS' ``volume-12.nii``): nnU-Net's
    ``labelsTr/<case>.nii.gz`` is the default. Labels in the source folder itself (KiTS'
    ``<case>/imaging.nii.gz`` beside ``<case>/segmentation.nii.gz``: pattern
    ``{rel_dir}/segmentation.nii.gz``) are never read as images. Per-structure files (``structures``) give
    one binary file per class, ``{structure}`` in the pattern. A label must have the image's shape and affine
    (within ``tolerance_mm``); otherwise it is a label error naming both geometries, or with
    ``resample: true`` it is resampled onto the image grid (nearest neighbour, logged).
    """

    kind: Literal["volume"]
    path: Path
    pattern: str = "{case}.nii.gz"
    structures: dict[str, Annotated[int, Field(ge=1, le=255)]] | None = Field(
        default=None,
        description="One binary file per structure (TotalSegmentator's and AbdomenAtlas' "
        "<case>/segmentations/liver.nii.gz): structure name → class, the pattern naming the file with "
        "{structure}; any non-zero voxel is the structure, the first listed wins where they overlap, a "
        "missing file is an empty structure and a case with none of them is unlabelled.",
    )
    resample: bool = False
    tolerance_mm: float = Field(default=1e-3, gt=0)

    @model_validator(mode="after")
    def _structure_field(self) -> VolumeLabels:
        if (self.structures is not None) != ("{structure}" in self.pattern):
            raise ValueError(
                "structures and a pattern with {structure} go together: per-structure files need both "
                "(e.g. pattern: '{rel_dir}/segmentations/{structure}.nii.gz', structures: {liver: 1, spleen: 2})"
            )
        if self.structures is not None and "/" in self.pattern.split("{structure}", 1)[1]:
            raise ValueError("pattern: {structure} must be in the file name (the files of one case share a folder)")
        return self


class RleCsvLabels(_EmptyWhenMissing):
    """Run-length encoded masks in a CSV file, Kaggle's layout (Severstal, Airbus ships, SIIM):
    a row per (image, class) or per object, ``start length`` pairs with 1-based starts.

    Images are matched by ``image_column`` (relative path, file name, or either without its
    extension). ``class_column`` (e.g. ``ClassId``) gives each row's class, through ``classes``
    (value → class; by default integers as they are, names numbered 1..K in sorted order);
    without it every row is class 1. ``order``: Kaggle numbers pixels top to bottom, then left
    to right (``column-major``); ``row-major`` along rows. An empty encoding (NaN, -1) lists an
    image with no foreground; ``empty_when_missing: ["**"]`` makes images the CSV does not list
    empty too (Severstal lists only defects). With ``instances: true`` each row is one object
    (for ``arch: maskrcnn``).
    """

    kind: Literal["rle-csv"]
    path: Path
    image_column: str = "ImageId"
    rle_column: str = "EncodedPixels"
    class_column: str | None = None
    classes: dict[str, Annotated[int, Field(ge=0, le=255)]] | None = None
    order: Literal["column-major", "row-major"] = "column-major"
    instances: bool = Field(default=False, description="Each row one object (for arch: maskrcnn).")


_IMAGE_LABELS = (
    MaskPngLabels,
    DicomSegLabels,
    CocoLabels,
    ViaLabels,
    CvatLabels,
    LabelStudioLabels,
    SuperviselyLabels,
    InstancePngLabels,
    MaskFolderLabels,
    LabelmeLabels,
    ImageScopeLabels,
    YoloLabels,
    RtstructLabels,
    RleCsvLabels,
)
LabelsSpec = Annotated[Union[_IMAGE_LABELS], Field(discriminator="kind")]  # noqa: UP007 - a union of a tuple


#: A DICOM source's labels: those of images, label volumes cut along its slices (ITK-SNAP's and
#: 3D Slicer's NIfTI / NRRD segmentations of a series; see segops.data.volume_labels.DicomSliceLabels),
#: or LIDC-IDRI's XML nodule outlines.
DicomLabelsSpec = Annotated[Union[(*_IMAGE_LABELS, VolumeLabels, LidcLabels)], Field(discriminator="kind")]  # noqa: UP007


def ignores_void(labels: object) -> bool:
    """Whether a label spec's class maps hold :data:`IGNORE_LABEL` pixels (mask-png with ``ignore_void``,
    rtstruct with ``missing_rois: ignore``)."""
    return bool(getattr(labels, "ignore_void", False)) or getattr(labels, "missing_rois", None) == "ignore"


def is_instance_labels(labels: object) -> bool:
    """True for label specs that yield instance label maps (instance-png; coco, rle-csv and mask-folder
    with instances)."""
    kind = getattr(labels, "kind", None)
    with_flag = kind in (
        "coco",
        "via",
        "cvat",
        "label-studio",
        "supervisely",
        "rle-csv",
        "mask-folder",
        "labelme",
        "imagescope",
        "yolo",
    )
    return kind == "instance-png" or (with_flag and bool(getattr(labels, "instances", False)))


#: ``group_by`` values that are not a regular expression.
GROUP_WORDS = ("file", "folder")


class DicomSource(FileSelection, DicomSelection):
    """A folder of DICOM files (any depth). Files need not end in ``.dcm``.

    A file is read when its suffix is in ``extensions``, it matches an ``include`` pattern (when
    any are given) and no ``exclude`` pattern; hidden files and folders are never read. Of its
    image objects, ``skip`` and ``modalities`` choose the archive's own (:mod:`segops.config.selection`).
    """

    kind: Literal["dicom"]
    path: Path
    labels: DicomLabelsSpec | None = None
    extensions: tuple[str, ...] = (".dcm", "")

    @model_validator(mode="after")
    def _one_label_volume_per_case(self) -> DicomSource:
        if isinstance(self.labels, VolumeLabels) and self.labels.structures is not None:
            raise ValueError(
                "labels of kind volume on a dicom source are one class map per case: structures (one file per "
                "structure) are read for volume sources only"
            )
        return self


class ImageSource(FileSelection):
    """A folder of inspection images (PNG, TIFF, JPEG, BMP), any depth.

    Files are selected as for :class:`DicomSource`. Mask images stored beside their images
    (``labels`` of kind mask-png / instance-png whose folder is the source folder or inside it)
    are never read as images: a file that ``labels.pattern`` names for another listed image is
    left out of the listing.
    """

    kind: Literal["images"]
    path: Path
    labels: LabelsSpec | None = None
    extensions: tuple[str, ...] = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm")
    group_by: str = Field(default="file", min_length=1, description=GROUP_HELP)

    @field_validator("group_by")
    @classmethod
    def _group_rule(cls, value: str) -> str:
        if value in GROUP_WORDS:
            return value
        try:
            groups = re.compile(value).groups
        except re.error as exc:
            raise ValueError(f"{value!r} is neither 'file', 'folder' nor a regular expression ({exc})") from exc
        if groups != 1:
            raise ValueError(f"the regular expression {value!r} has {groups} capture groups; give exactly one")
        return value


#: Volume file suffixes read by default (``.nii.gz`` is one suffix here).
VOLUME_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")


#: ``VolumeSource.slice_plane``: each file's third axis, or a plane in patient coordinates.
SlicePlane = Literal["file", "axial", "coronal", "sagittal"]


class VolumeSource(FileSelection):
    """A folder of volume files (NIfTI, NRRD, MHA/MHD), any depth, e.g. nnU-Net's ``imagesTr``.

    Each case becomes the same records a DICOM series does: one 2D record per slice (group: the
    case) and, with the ingest step's ``volumes: true``, one volume record. Positions and
    orientations are in DICOM patient coordinates (LPS); by default (``slice_plane: file``) slice
    ``k`` is ``A[:, :, k]`` with rows along the array's second axis and columns along its first (see
    :mod:`segops.data.volumes`); a named plane cuts each case along its axis closest to that plane's
    normal (:mod:`segops.data.slice_planes`), its masks written back in the file's order. Files
    whose names end in an nnU-Net channel suffix (``_0000``, ``_0001`` …, four digits) are the
    channels of one case, so a folder of single-channel files named ``case_0000.nii.gz``,
    ``case_0001.nii.gz`` … reads as one multi-channel case: rename such files (e.g.
    ``case_0000_0000.nii.gz``). ``channels`` names the channels by word instead (BraTS'
    ``<case>_flair.nii.gz``, ``<case>_t1.nii.gz`` …).
    """

    kind: Literal["volumes"]
    path: Path
    labels: VolumeLabels | None = None
    extensions: tuple[str, ...] = VOLUME_EXTENSIONS
    channels: tuple[Annotated[str, Field(min_length=1, pattern=r"^[^/\\]+$")], ...] = Field(
        default=(),
        description="A case's channel files by name, in channel order: <case>_<name><ext> for each, e.g. BraTS' "
        "['flair', 't1', 't1ce', 't2']; empty: nnU-Net's _0000, _0001 … suffixes.",
    )
    slice_plane: SlicePlane = Field(
        default="file",
        description="The plane 2D slices are cut in: file (each file's third voxel axis) or axial, coronal, "
        "sagittal (each case's voxel axis closest to that plane's normal, whatever order the file keeps, as "
        "KiTS' (slices, rows, columns) files need); masks are written back in the file's order.",
    )

    @model_validator(mode="after")
    def _distinct_channels(self) -> VolumeSource:
        if len(set(self.channels)) != len(self.channels):
            raise ValueError(f"channels {list(self.channels)} name a channel twice")
        return self


class DatasetSource(Spec):
    """The Parquet dataset an ingest step wrote (``runs/<run>/dataset``): decoded once, read many times."""

    kind: Literal["dataset"]
    path: Path


SourceSpec = Annotated[DicomSource | ImageSource | VolumeSource, Field(discriminator="kind")]
SegmentSourceSpec = Annotated[DicomSource | ImageSource | VolumeSource | DatasetSource, Field(discriminator="kind")]
