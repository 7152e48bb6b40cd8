"""Outputs written to an S3-compatible object store (moto's server on loopback) through
:mod:`segops.outputs.storage`: atomic uploads, result parts read back for resume, paths that
cannot escape the prefix. The whole segment step on S3 is in ``test_tracking_stack.py``."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from segops.cluster.infer import iter_parts, read_parts, write_part
from segops.errors import SegopsError
from segops.outputs.atomic import atomic_write, remove_stale_temps, safe_join
from segops.outputs.masks import write_mask_png
from segops.outputs.storage import join, list_files, read_bytes, with_options

from .services import s3_server

pytest.importorskip("boto3", reason="pip install -e '.[integration]'")
pytest.importorskip("moto.server", reason="pip install -e '.[integration]'")

pytestmark = [pytest.mark.integration]

BUCKET = "segops-outputs"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    with s3_server(tmp_path_factory.mktemp("s3") / "moto.log", buckets=(BUCKET,)) as server:
        yield server


@pytest.fixture
def root(store, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, store.env[key])
    endpoint = store.endpoint.removeprefix("http://")
    return f"s3://{BUCKET}/{request.node.name}?endpoint_override={endpoint}&scheme=http"


def _keys(store, prefix: str) -> list[str]:
    pages = store.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def test_a_uri_keeps_its_query_when_joined_and_refuses_escapes(root: str) -> None:
    path = safe_join(join(root, "masks"), "series-1/slice-0.png")
    base, _, query = root.partition("?")
    assert path == f"{base}/masks/series-1/slice-0.png?{query}"
    with pytest.raises(SegopsError, match="stay inside"):
        safe_join(root, "../../other-bucket/x.png")


def test_masks_are_uploaded_whole_and_read_back(store, root: str, request: pytest.FixtureRequest) -> None:
    mask = np.zeros((40, 30), np.uint8)
    mask[5:20, 10:25] = 1
    location = write_mask_png(join(root, "masks"), "a/b.png", mask, 2)
    assert _keys(store, f"{request.node.name}/") == [f"{request.node.name}/masks/a/b.png"]
    assert location == f"s3://{BUCKET}/{request.node.name}/masks/a/b.png"  # its address: no endpoint query
    np.testing.assert_array_equal(
        np.asarray(Image.open(BytesIO(read_bytes(with_options(location, root))))) // 255, mask
    )

    def dies_mid_write(tmp) -> None:
        tmp.write_bytes(b"half a PNG")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):  # a writer that fails mid-write leaves no object
        atomic_write(join(root, "masks", "c.png"), dies_mid_write)
    assert _keys(store, f"{request.node.name}/") == [f"{request.node.name}/masks/a/b.png"]
    assert remove_stale_temps(join(root, "masks")) == 0


def test_result_parts_are_listed_and_read_back_once_per_case(root: str) -> None:
    parts = join(root, "segment-parts")
    assert read_parts(parts).empty and list_files(parts) == []
    first = pd.DataFrame({"case_id": ["c1", "c2"], "dice": [0.5, 0.7]})
    again = pd.DataFrame({"case_id": ["c2", "c3"], "dice": [0.7, 0.9]})  # c2 redone after a crash
    write_part(parts, first)
    write_part(parts, again)
    assert len(list_files(parts, prefix="part-", suffix=".parquet")) == 2
    done = read_parts(parts).sort_values("case_id")
    assert done["case_id"].tolist() == ["c1", "c2", "c3"] and done["dice"].tolist() == [0.5, 0.7, 0.9]
    streamed = pd.concat(iter_parts(parts, ["case_id", "dice"], ["c1", "c2", "c3"])).sort_values("case_id")
    assert streamed["case_id"].tolist() == ["c1", "c2", "c3"] and streamed["dice"].tolist() == [0.5, 0.7, 0.9]
