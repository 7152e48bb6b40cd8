"""Checkpoint storage locations: a local/NFS path or a pyarrow.fs URI (S3)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs
import pytest

from segops.outputs.storage import open_storage
from segops.steps.train import checkpoint_storage


def test_each_run_gets_its_own_prefix_and_the_query_is_kept() -> None:
    assert checkpoint_storage(None, "run-1") is None
    assert checkpoint_storage("/mnt/nfs/segops/", "run-1") == "/mnt/nfs/segops/run-1"
    assert (
        checkpoint_storage("s3://bucket/ray?endpoint_override=127.0.0.1:9000&scheme=http", "run-1")
        == "s3://bucket/ray/run-1?endpoint_override=127.0.0.1:9000&scheme=http"
    )


def test_a_local_path_is_made_absolute_and_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    fs, path = open_storage("shared/ckpt")
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path / "shared" / "ckpt")
    assert (tmp_path / "shared" / "ckpt").is_dir()


def test_s3_uri_carries_endpoint_and_environment_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    fs, path = open_storage("s3://bucket/ray/run-1?endpoint_override=127.0.0.1:9000&scheme=http&region=eu-west-1")
    assert isinstance(fs, pafs.S3FileSystem) and path == "bucket/ray/run-1"
    assert fs.region == "eu-west-1"
    # the filesystem Ray ships to the workers holds the credentials and endpoint, not the driver's env
    restored = type(fs).__reduce__(fs)
    assert "key" in repr(restored) and "127.0.0.1:9000" in repr(restored)
