"""Deterministic synthetic archives for tests and demos, one module per kind of archive.

- :func:`make_ct_archive` (:mod:`.ct`): CT-like DICOM series (16-bit signed, rescale
  slope/intercept, real geometry and UIDs) with bright ellipsoid "lesions", plus one label PNG per slice.
- :func:`make_inspection_archive` (:mod:`.inspection`): textured gray/RGB surface photos with thin
  scratches and blob defects, plus binary mask PNGs.
- :func:`make_defect_archive` (:mod:`.defects`): grayscale JPEG surface photos, 70 % defect-free, with
  rare defects from 0.2 % to 24 % of the area; anti-aliased mask PNG beside each image (``x.jpg`` + ``x.png``).
- :func:`make_instance_archive` (:mod:`.instances`): gray microscopy-like scenes of touching and
  overlapping objects of several classes, with instance-id PNGs, class PNGs and COCO JSON.
- :func:`make_membrane_archive` (:mod:`.membranes`): EM-like cell tilings with dark membranes, labelled
  the way the ISBI 2012 data is (0 = membrane, 255 = cell interior): a small stand-in for that set.

Same arguments and seed → byte-identical files. The generators sit above the core, beside the CLI
(``segops synth``): they write files the data layer then reads, so nothing in ``segops.data`` needs them.
"""

from segops.synth.ct import make_ct_archive
from segops.synth.defects import make_defect_archive
from segops.synth.inspection import make_inspection_archive
from segops.synth.instances import INSTANCE_CLASS_NAMES, InstanceArchiveSummary, make_instance_archive
from segops.synth.membranes import make_membrane_archive
from segops.synth.summary import ArchiveSummary

__all__ = [
    "INSTANCE_CLASS_NAMES",
    "ArchiveSummary",
    "InstanceArchiveSummary",
    "make_ct_archive",
    "make_defect_archive",
    "make_inspection_archive",
    "make_instance_archive",
    "make_membrane_archive",
]
