"""The quickstart workflow against a production-shaped tracking stack, all real and on loopback:

    segops run ──http──▶ mlflow server ──SQL──▶ PostgreSQL      (runs, params, metrics, registry)
                              └──────────S3──▶ moto S3 server  (artifacts, proxied by the server)

``segops run`` is a child process that is told where the server is only by
``MLFLOW_TRACKING_URI``: the workflow file keeps quickstart's default ``tracking.uri`` (a sqlite
file), so a run that ignored the variable would leave ``mlruns.db`` behind. The client holds no
S3 credentials; only the server does (``--serve-artifacts``). The test then reads the run back
three ways: through the MLflow API, straight from the ``runs``/``metrics``/registry tables in
PostgreSQL, and by listing the bucket with boto3.

Needs ``pip install -e .[integration]`` (psycopg2-binary, boto3, moto[server]) and PostgreSQL's
server binaries (see ``services.py``); ~1-2 min on 2 CPUs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ..processes import kill_session, start_mlflow_server, stop_group
from .services import postgres_server, s3_server

pytest.importorskip("psycopg2", reason="pip install -e '.[integration]'")
pytest.importorskip("boto3", reason="pip install -e '.[integration]'")
pytest.importorskip("moto.server", reason="pip install -e '.[integration]'")

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[2]
BUCKET, PREFIX = "segops-artifacts", "mlflow"
CHECKPOINTS = "segops-checkpoints"  # Ray Train checkpoints (cluster.storage)
EXPERIMENT, MODEL = "integration", "integration-ct-unet"


@pytest.fixture(scope="module")
def postgres():
    with postgres_server(databases=("mlflow",)) as server:
        yield server


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    with s3_server(tmp_path_factory.mktemp("s3") / "moto.log", buckets=(BUCKET, CHECKPOINTS)) as server:
        yield server


@pytest.fixture(scope="module")
def tracking_server(postgres, s3, tmp_path_factory: pytest.TempPathFactory):
    """``mlflow server`` with its backend in PostgreSQL and its artifacts in the S3 bucket."""
    log = tmp_path_factory.mktemp("mlflow-server") / "server.log"
    env = _without_storage_credentials(os.environ) | s3.env  # the server alone talks to S3
    proc, uri = start_mlflow_server(postgres.uri("mlflow"), f"s3://{BUCKET}/{PREFIX}", log, env)
    yield uri
    stop_group(proc)


def _without_storage_credentials(env) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith("AWS_") and k != "MLFLOW_S3_ENDPOINT_URL"}


def _workflow(s3) -> dict:
    """workflows/quickstart.yaml, made small: same steps and shape, fewer epochs and channels;
    Ray Train checkpoints go to the S3 store (``cluster.storage``)."""
    wf = yaml.safe_load((REPO / "workflows" / "quickstart.yaml").read_text())
    assert wf["tracking"]["uri"] == "sqlite:///mlruns.db"  # left in: the environment must win over it
    wf["name"] = "integration-ct"
    wf["tracking"] |= {"experiment": EXPERIMENT, "registered_model": MODEL}
    endpoint = s3.endpoint.removeprefix("http://")
    wf["cluster"] = {"num_cpus": 2, "storage": f"s3://{CHECKPOINTS}/ray?endpoint_override={endpoint}&scheme=http"}
    ingest, train, segment = wf["steps"]
    train |= {
        "model": {
            "arch": "unet",
            "in_channels": 1,
            "classes": 2,
            "channels": [8, 16, 32],
            "strides": [2, 2],
            "num_res_units": 1,
        },
        "epochs": 2,
        "batch_size": 4,
    }
    train["preprocess"]["patch_size"] = [64, 64]
    segment["overlays"] = 2
    return wf


@pytest.fixture(scope="module")
def run(tracking_server: str, s3, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``segops run`` of the small quickstart, from a folder laid out like the repo's (data/, runs/)."""
    from segops.synth import make_ct_archive

    cwd = tmp_path_factory.mktemp("quickstart")
    make_ct_archive(cwd / "data" / "quickstart-ct", series=3, slices=4, seed=0)
    (cwd / "quickstart.yaml").write_text(yaml.safe_dump(_workflow(s3), sort_keys=False))
    # AWS credentials for the checkpoint store only: MLflow artifacts still go through the server
    credentials = {k: v for k, v in s3.env.items() if k.startswith("AWS_")}
    env = (
        _without_storage_credentials(os.environ)
        | credentials
        | {"MLFLOW_TRACKING_URI": tracking_server, "RAY_AUTH_MODE": "disabled"}
    )
    log = cwd / "segops-run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "segops.cli", "run", "quickstart.yaml"],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=400)
        except subprocess.TimeoutExpired:
            kill_session(proc)
            pytest.fail(f"segops run did not finish in 400 s:\n{log.read_text()[-4000:]}")
    output = log.read_text()
    assert proc.returncode == 0, output[-4000:]
    (manifest,) = [json.loads(p.read_text()) for p in (cwd / "runs").glob("*/manifest.json")]
    return {"cwd": cwd, "output": output, "manifest": manifest, "mlflow_run_id": manifest["mlflow_run_id"]}


def test_the_environment_uri_wins_over_the_workflow_file(run: dict, tracking_server: str) -> None:
    assert f"{tracking_server} from the environment (MLFLOW_TRACKING_URI)" in " ".join(run["output"].split())
    assert not (run["cwd"] / "mlruns.db").exists() and not (run["cwd"] / "mlartifacts").exists()
    assert run["manifest"]["state"] == "done"


def test_run_is_finished_with_params_metrics_and_a_registered_model(run: dict, tracking_server: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_server, registry_uri=tracking_server)
    mlflow_run = client.get_run(run["mlflow_run_id"])
    assert mlflow_run.info.status == "FINISHED"
    assert client.get_experiment(mlflow_run.info.experiment_id).name == EXPERIMENT
    params, metrics = mlflow_run.data.params, mlflow_run.data.metrics
    assert params["workflow.name"] == "integration-ct" and params["epochs"] == "2" and params["model.arch"] == "unet"
    assert {"train_loss", "val_dice", "best_val_dice", "segment_heldout_dice_mean"} <= set(metrics)
    assert [m.step for m in client.get_metric_history(run["mlflow_run_id"], "train_loss")] == [0, 1]
    (version,) = client.search_model_versions(f"name = '{MODEL}'")
    assert version.run_id == run["mlflow_run_id"] and version.status == "READY"


def test_artifacts_are_in_the_bucket(run: dict, s3) -> None:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{PREFIX}/")
    keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
    run_artifacts = [k for k in keys if f"/{run['mlflow_run_id']}/artifacts/" in k]
    names = {k.split("/artifacts/", 1)[1] for k in run_artifacts}
    assert {
        "workflow/workflow.yaml",
        "workflow/manifest.json",
        "train/split.json",
        "segment/report.parquet",
        "segment/report.csv",
        "segment/outputs.csv",
    } <= names, sorted(names)
    assert any(n.startswith("segment/overlays/") and n.endswith(".png") for n in names), sorted(names)
    # the logged model (MLflow 3 keeps it under the experiment's models/, not the run's folder)
    model_files = {k.rsplit("/", 1)[-1] for k in keys if "/models/" in k}
    assert {"MLmodel", "model.pt", "segops.json"} <= model_files, sorted(model_files)


def test_training_checkpoints_are_in_the_checkpoint_store(run: dict, s3) -> None:
    """``cluster.storage`` on S3: Ray Train's checkpoints (weights + optimizer state) are objects
    under ``<storage>/<run-id>/train/``, none on the local disk, and the best was brought back
    into the run folder for registration and inference."""
    pages = (
        s3.client()
        .get_paginator("list_objects_v2")
        .paginate(Bucket=CHECKPOINTS, Prefix=f"ray/{run['manifest']['run_id']}/train/")
    )
    keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
    files: dict[str, set[str]] = {}  # checkpoint → its files (pyarrow also leaves "dir/" marker objects)
    for key in keys:
        parts = key.split("/")
        if len(parts) == 5 and parts[3].startswith("checkpoint_") and parts[4]:
            files.setdefault(parts[3], set()).add(parts[4])
    assert files, keys
    for checkpoint, names in files.items():
        assert {"model.pt", "train_state.pt", "segops.json"} <= names, (checkpoint, names)
    run_dir = run["cwd"] / "runs" / run["manifest"]["run_id"]
    assert not list(run_dir.glob("ray-train/train/checkpoint_*"))
    assert (run_dir / "model" / "model.pt").is_file()


def test_segment_outputs_and_parts_are_in_the_store(run: dict, s3, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``cluster.storage`` set, inference actors write the masks and their result parts
    under ``<storage>/<run-id>/``; the run folder keeps the tables, whose paths are URIs."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    from segops.outputs.storage import read_bytes, with_options

    run_id = run["manifest"]["run_id"]
    storage = _workflow(s3)["cluster"]["storage"]
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=CHECKPOINTS, Prefix=f"ray/{run_id}/")
    keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
    masks = sorted(k.split("/masks/", 1)[1] for k in keys if "/masks/" in k and k.endswith(".png"))
    inputs = sorted(
        p.relative_to(run["cwd"] / "data" / "quickstart-ct" / "images").with_suffix(".png").as_posix()
        for p in (run["cwd"] / "data" / "quickstart-ct" / "images").rglob("*.dcm")
    )
    assert masks == inputs and len(masks) == 12
    assert any(k.startswith(f"ray/{run_id}/segment-parts/part-") for k in keys)
    assert not any(k.endswith(".tmp") for k in keys)
    run_dir = run["cwd"] / "runs" / run_id
    assert not (run_dir / "masks").exists()
    outputs = pd.read_parquet(run_dir / "outputs.parquet")
    assert (
        len(outputs) == 12 and outputs["mask_path"].str.match(rf"s3://{CHECKPOINTS}/ray/{run_id}/masks/.+\.png$").all()
    )
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # the test reads as a node would
        monkeypatch.setenv(key, s3.env[key])
    for row in outputs.head(3).itertuples():
        stored = np.asarray(Image.open(io.BytesIO(read_bytes(with_options(row.mask_path, storage)))))  # 0/255
        assert hashlib.sha256((stored // 255).astype(np.uint8).tobytes()).hexdigest() == row.mask_sha256


def test_rows_are_in_postgres(run: dict, postgres) -> None:
    run_id = run["mlflow_run_id"]
    with postgres.connect("mlflow") as conn, conn.cursor() as cur:
        cur.execute("SELECT status, artifact_uri FROM runs WHERE run_uuid = %s", (run_id,))
        ((status, artifact_uri),) = cur.fetchall()
        cur.execute("SELECT count(*) FROM metrics WHERE run_uuid = %s AND key = 'train_loss'", (run_id,))
        (n_train_loss,) = cur.fetchone()
        cur.execute("SELECT value FROM params WHERE run_uuid = %s AND key = 'workflow.name'", (run_id,))
        (workflow_name,) = cur.fetchone()
        cur.execute("SELECT name, version FROM model_versions WHERE run_id = %s", (run_id,))
        versions = cur.fetchall()
    conn.close()  # psycopg2's `with conn` ends the transaction, not the connection
    assert status == "FINISHED" and n_train_loss == 2 and workflow_name == "integration-ct"
    assert artifact_uri.startswith("mlflow-artifacts:")  # proxied: the client never sees the bucket
    assert versions == [(MODEL, 1)]
