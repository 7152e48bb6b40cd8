"""All outputs of one segmented case: mask PNG and/or DICOM SEG (and, for a series' RTSTRUCT, the
kept class map of a DICOM slice or a volume's RTSTRUCT), the softmax as ``.npz`` (semantic
models), and for instance models an instance-id PNG and COCO RLE results; at paths that never
escape the root."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from segops.data.instances import class_map, instance_id_map
from segops.data.records import DICOM_ID_COLUMNS
from segops.data.slice_planes import to_file_order
from segops.engine.cases import CaseResult
from segops.engine.checkpoint import weight_files
from segops.errors import SegopsError
from segops.outputs.atomic import atomic_write_bytes, safe_join
from segops.outputs.dicom_seg import build_seg, write_seg
from segops.outputs.layout import dicom_tag_stem, mirror_stem, sanitize_component
from segops.outputs.masks import encode_instance_png, write_mask_png
from segops.outputs.output_config import OutputConfig
from segops.outputs.probabilities import write_probabilities
from segops.outputs.series_rtstruct import keep_slice_map, write_volume_rtstruct
from segops.outputs.storage import join


def is_dicom_record(meta: dict[str, Any]) -> bool:
    """DICOM records carry a transfer syntax UID (digits); image files carry their format name."""
    return str(meta.get("transfer_syntax", ""))[:1].isdigit()


def checkpoint_digest(checkpoint: Path) -> str:
    """Content hash of a checkpoint's weights (16 hex): :attr:`OutputConfig.model_digest`, which
    identifies the model in outputs and the manifest (an ensemble's: of its folds' weights in order)."""
    digest = hashlib.sha256()
    for weights in weight_files(checkpoint):
        digest.update(weights.read_bytes())
    return digest.hexdigest()[:16]


def write_case_outputs(
    cfg: OutputConfig, meta: dict[str, Any], mask: np.ndarray, probabilities: np.ndarray | None = None
) -> dict[str, str]:
    """Write the requested outputs for one case.

    Returns:
        ``mask_path``, ``seg_path``, ``probabilities_path`` ("" when not written), ``mask_sha256``
        (of the mask's class map, so reruns and audits can compare outputs without reading PNGs)
        and ``model``.

    Args:
        meta: the record's columns (``rel_path``, ``frame``, ``source_uri``, ``transfer_syntax``,
            the DICOM identifiers of :data:`segops.data.records.DICOM_ID_COLUMNS`...).
        mask: (H, W) class map.
        probabilities: (classes, H, W) softmax; needed when ``cfg.formats`` has ``probabilities``.
    """
    written, _ = _class_outputs(cfg, meta, mask, probabilities)
    return written


def _class_outputs(
    cfg: OutputConfig, meta: dict[str, Any], mask: np.ndarray, probabilities: np.ndarray | None = None
) -> tuple[dict[str, str], str]:
    """(:func:`write_case_outputs`' fields, the case's output stem)."""
    header = None
    if "dicom-seg" in cfg.formats and is_dicom_record(meta):  # a SEG copies much of its source's header
        header = pydicom.dcmread(meta["source_uri"], stop_before_pixels=True)
    stem = case_stem(cfg, meta, header)
    written = _provenance(cfg, mask) | _probabilities(cfg, meta, stem, probabilities)
    if "png" in cfg.formats:
        written["mask_path"] = str(write_mask_png(join(cfg.root, "masks"), f"{stem}.png", mask, cfg.classes))
    if header is not None and int(getattr(header, "NumberOfFrames", 1) or 1) == 1:
        seg = _seg(cfg, [header], mask[None], str(header.SeriesInstanceUID), ["segops-seg", str(header.SOPInstanceUID)])
        written["seg_path"] = str(write_seg(safe_join(join(cfg.root, "segs"), f"{stem}.seg.dcm"), seg))
    if "rtstruct" in cfg.formats and is_dicom_record(meta):  # the step writes the series' RTSTRUCT from it
        keep_slice_map(cfg, meta, mask)
    return written, stem


def write_instance_outputs(
    cfg: OutputConfig, meta: dict[str, Any], label_map: np.ndarray, results: list[dict[str, Any]]
) -> dict[str, str]:
    """Outputs of one instance-segmented case: the class-map PNG/SEG of :func:`write_case_outputs`,
    a 16-bit instance-id PNG (``png``) and the case's COCO results with RLE masks (``coco-rle``).

    Args:
        label_map: (H, W) instance label map (class * 65536 + k, see :mod:`segops.data.instances`).
        results: COCO result dicts of the case's detections (without ``image_id``).

    Returns:
        :func:`write_case_outputs`' fields with ``mask_sha256`` taken over the instance label
        map, plus ``instance_path`` and ``coco_path`` ("" when not written).
    """
    written, stem = _class_outputs(cfg, meta, class_map(label_map))
    written |= {
        "mask_sha256": hashlib.sha256(np.ascontiguousarray(label_map, np.int32).tobytes()).hexdigest(),
        "instance_path": "",
        "coco_path": "",
    }
    if "png" in cfg.formats:
        data = encode_instance_png(instance_id_map(label_map))
        written["instance_path"] = str(atomic_write_bytes(safe_join(join(cfg.root, "instances"), f"{stem}.png"), data))
    if "coco-rle" in cfg.formats:
        h, w = label_map.shape
        doc = {
            "case_id": str(meta["case_id"]),
            "rel_path": str(meta["rel_path"]),
            "frame": int(meta["frame"]),
            "height": int(h),
            "width": int(w),
            "results": results,
        }
        data = json.dumps(doc, separators=(",", ":")).encode()
        written["coco_path"] = str(atomic_write_bytes(safe_join(join(cfg.root, "coco"), f"{stem}.json"), data))
    return written


def case_stem(cfg: OutputConfig, meta: dict[str, Any], header: pydicom.Dataset | None = None) -> str:
    """The output stem of a case: its mirrored input path, or (``dicom-tags`` layout, DICOM
    records) ``PatientID/StudyInstanceUID/SeriesInstanceUID/SOPInstanceUID``, sanitised.

    The identifiers come from the record. A record of a dataset written by an older segops
    lacks them: they come from ``header`` then, read from ``source_uri`` when not given.
    """
    frame = int(meta["frame"])
    if cfg.layout != "dicom-tags" or not is_dicom_record(meta):
        return mirror_stem(str(meta["rel_path"]), frame)
    if all(name in meta for name in DICOM_ID_COLUMNS):
        ids = [meta[name] for name in DICOM_ID_COLUMNS]
    else:
        header = header if header is not None else pydicom.dcmread(meta["source_uri"], stop_before_pixels=True)
        ids = [header.get(k) for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
    return dicom_tag_stem(*ids, frame)


def write_volume_outputs(
    cfg: OutputConfig, meta: dict[str, Any], mask: np.ndarray, probabilities: np.ndarray | None = None
) -> dict[str, str]:
    """Outputs of one segmented series: a NIfTI label volume (a volume file's case: in the file's
    voxel order and affine) and/or a multi-frame DICOM SEG, and its softmax.

    Args:
        meta: the volume record's columns (``case_id`` = SeriesInstanceUID, ``affine``,
            ``source_uris`` in slice order...).
        mask: (Z, H, W) class map, slices in ``source_uris`` order.
        probabilities: (classes, Z, H, W) softmax, same order; needed for the ``probabilities`` output.
    """
    import nibabel as nib

    stem = f"volumes/{sanitize_component(meta['case_id'])}"
    written = _provenance(cfg, mask) | _probabilities(cfg, meta, stem, probabilities)
    if "png" in cfg.formats:  # a volume's mask is a NIfTI file
        # a volume file's case cut along another plane than its third axis goes back to the file's voxel order
        axes = meta.get("file_axes")  # absent from datasets of an older segops
        volume, affine = to_file_order(
            np.transpose(mask, (2, 1, 0)),
            np.asarray(meta["affine"], float).reshape(4, 4),
            () if axes is None else tuple(int(a) for a in axes),
        )
        image = nib.Nifti1Image(np.ascontiguousarray(volume).astype(np.uint8), affine)
        data = gzip.compress(image.to_bytes(), mtime=0)  # mtime=0: same mask, same bytes
        written["mask_path"] = str(atomic_write_bytes(safe_join(join(cfg.root, "masks"), f"{stem}.nii.gz"), data))
    if "dicom-seg" in cfg.formats and is_dicom_record(meta):
        sources = [pydicom.dcmread(uri, stop_before_pixels=True) for uri in meta["source_uris"]]
        series = str(meta["case_id"])
        seg = _seg(cfg, sources, mask, series, ["segops-seg-volume", series])
        written["seg_path"] = str(write_seg(safe_join(join(cfg.root, "segs"), f"{stem}.seg.dcm"), seg))
    if "rtstruct" in cfg.formats and is_dicom_record(meta):
        write_volume_rtstruct(cfg, meta, mask)
    return written


def _provenance(cfg: OutputConfig, mask: np.ndarray) -> dict[str, str]:
    """The fields every case's result carries before anything is written."""
    return {
        "mask_path": "",
        "seg_path": "",
        "mask_sha256": hashlib.sha256(np.ascontiguousarray(mask, dtype=np.uint8).tobytes()).hexdigest(),
        "model": cfg.model_digest,
    }


def _probabilities(
    cfg: OutputConfig, meta: dict[str, Any], stem: str, probabilities: np.ndarray | None
) -> dict[str, str]:
    """``probabilities_path``: the case's softmax written under ``stem`` when asked for, else ""."""
    if "probabilities" not in cfg.formats:
        return {"probabilities_path": ""}
    if probabilities is None:
        raise SegopsError(
            "outputs: probabilities, but this case was segmented without them: InferenceSettings.probabilities "
            "must be set with it (InferenceSettings.from_step does so)"
        )
    return {"probabilities_path": str(write_probabilities(cfg.root, stem, probabilities, str(meta["case_id"])))}


def _seg(cfg: OutputConfig, sources: list, masks: np.ndarray, series_uid: str, sop_key: list[str]) -> Any:
    """A SEG with UIDs derived from (source, model), so a rerun reproduces them."""
    return build_seg(
        sources,
        masks,
        {c: cfg.segments.get(c, f"class {c}") for c in range(1, cfg.classes)},
        series_uid=generate_uid(entropy_srcs=["segops-seg-series", series_uid, cfg.model_digest]),
        sop_uid=generate_uid(entropy_srcs=[*sop_key, cfg.model_digest]),
    )


def write_case_result(cfg: OutputConfig, meta: dict[str, Any], result: CaseResult) -> dict[str, str]:
    """Write a case's outputs with the writer for its kind (instances, volume, image); their row fields."""
    if result.label_map is not None:
        return write_instance_outputs(cfg, meta, result.label_map, list(result.detections))
    if result.class_map.ndim == 3:
        return write_volume_outputs(cfg, meta, result.class_map, result.probabilities)
    return write_case_outputs(cfg, meta, result.class_map, result.probabilities)
