"""Sizes and embedding distances in the per-case path: computed with the mask in one engine call."""

from __future__ import annotations

import json

import numpy as np
import torch

from segops.config.schema import PreprocessSpec, UNetSpec, ZScoreIntensity
from segops.data.instances import INSTANCE_STRIDE
from segops.engine.case_extras import case_measurements
from segops.engine.cases import InferenceSettings, segment_cases
from segops.engine.checkpoint import LoadedModel
from segops.engine.embeddings import EmbeddingReference, embed
from segops.metrics.measurements import measure_case
from segops.models import build_model
from segops.outputs.reports import build_outputs, component_chunks, component_rows, result_defaults


def _unet() -> LoadedModel:
    torch.manual_seed(0)
    spec = UNetSpec(arch="unet", classes=3, channels=(4, 8), strides=(2,), num_res_units=0)
    pre = PreprocessSpec(intensity=ZScoreIntensity(kind="zscore"), patch_size=(16, 16))
    return LoadedModel(build_model(spec).eval(), spec, pre, {})


def _images(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(100, 20, (1, 24, 32)).astype(np.float32) for _ in range(n)]


def test_each_case_is_measured_in_mm_where_its_spacing_is_known_and_in_px_where_not() -> None:
    loaded = _unet()
    images = _images(2, seed=0)
    label = np.zeros((24, 32), np.uint8)
    label[4:12, 6:20] = 1
    settings = InferenceSettings(amp=False, risk=False)
    known, unknown = segment_cases(loaded, images, [label, None], settings, spacings=[(0.5, 0.25), None])
    expected = measure_case(known.class_map, (0.5, 0.25), [1, 2], truth=label)
    assert known.measurements == expected and known.measurements.units == "mm"
    assert unknown.measurements.units == "px" and np.isnan(unknown.measurements.totals["meas_area_mm2_1"])
    # the truth's totals: 8 x 14 px at 0.5 x 0.25 mm
    assert known.measurements.totals["meas_area_mm2_true_1"] == 8 * 14 * 0.5 * 0.25
    rows = [
        result_defaults("m") | r.row_fields() | {"case_id": c, "source_uri": c, "rel_path": c, "frame": 0}
        for r, c in ((known, "a"), (unknown, "b"))
    ]
    rows = [row | {"has_label": c == "a", "mask_path": ""} for row, c in zip(rows, "ab")]
    import pandas as pd

    outputs = build_outputs(pd.DataFrame(rows))
    assert outputs.loc[0, "meas_area_mm2_true_1"] == 8 * 14 * 0.5 * 0.25
    assert (
        np.isnan(outputs.loc[1, "meas_area_mm2_1"])
        and outputs.loc[1, "meas_area_px_1"] == unknown.measurements.totals["meas_area_px_1"]
    )
    objects = component_rows(pd.DataFrame(rows))
    frames = [pd.DataFrame(rows[:1]), pd.DataFrame(rows[1:])]
    assert [o for chunk in component_chunks(frames, rows=1) for o in chunk] == objects
    assert len(objects) == len(known.measurements.components) + len(unknown.measurements.components)
    assert {o["case_id"] for o in objects} <= {"a", "b"} and all("area_px" in o for o in objects)
    assert json.loads(rows[0]["measurements"]) == json.loads(json.dumps(expected.totals))


def test_instances_are_measured_as_instances_not_components() -> None:
    label_map = np.zeros((20, 20), np.int32)
    label_map[2:6, 2:6] = 1 * INSTANCE_STRIDE + 1
    label_map[6:10, 2:6] = 1 * INSTANCE_STRIDE + 2  # touches instance 1: one component, two instances
    mask = (label_map // INSTANCE_STRIDE).astype(np.uint8)
    measured = case_measurements(mask, label_map, None, (1.0, 1.0), classes=2)
    assert [(r["kind"], r["area_px"]) for r in measured.components] == [("instance", 16), ("instance", 16)]
    semantic = case_measurements(mask, None, None, (1.0, 1.0), classes=2)
    assert [r["area_px"] for r in semantic.components] == [32]


def test_embedding_distance_is_the_references_distance_of_the_case() -> None:
    loaded = _unet()
    reference = EmbeddingReference.from_embeddings(embed(loaded, _images(8, seed=1)))
    images = _images(2, seed=2)
    settings = InferenceSettings(amp=False, risk=False, measure=False, embeddings=reference)
    results = segment_cases(loaded, images, [None, None], settings)
    expected = reference.distance(embed(loaded, images))
    np.testing.assert_allclose([r.embedding_distance for r in results], expected, rtol=1e-6)
    assert results[0].row_fields()["embedding_distance"] == results[0].embedding_distance
    plain = segment_cases(loaded, images, [None, None], InferenceSettings(amp=False, risk=False, measure=False))
    assert np.isnan(plain[0].embedding_distance) and "embedding_distance" not in plain[0].row_fields()
