"""The quickstart workflow on a real 2-node Ray cluster (two raylets on 127.0.0.1), and node loss.

Placement is read from the operating system, not from Ray's bookkeeping: every node is its own
process session (:mod:`segops.cluster.local_cluster`), so a ``ray::RayTrainWorker`` process in
the worker node's session *is* a training worker on that node. (Ray's state API needs the
dashboard, which ``ray[data,train]`` does not install.)

What 1-CPU nodes allow (Ray 2.60, observed on this 2-core machine):

- Two inference actors spread one per node leave part of a CPU on each (0.5 CPU actors leave
  0.5). Read tasks asking Ray's default 1 CPU could then never run and the segment step hung;
  with fractional actors, read tasks now ask 0.25 CPU (``PoolSize.read_cpus``). The first
  test gives each actor 0.75 CPU, so two cannot share a node: one runs on each, and the
  reads fit in the 0.25 CPU each leaves.
- Killing the worker node while the 0.5-CPU training workers sat on the 1-CPU head hung training
  (no error) for as long as we waited (140 s): the raylet logs "Object neither in memory nor
  external storage": probably dataset blocks that lived on the dead node must be rebuilt, and their
  1-CPU read tasks cannot run beside the workers on the 1-CPU survivor. The node-loss test
  therefore gives the head 2 CPUs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from segops.cluster.local_cluster import LocalCluster
from tests.processes import ActorWatch, subprocess_run
from tests.small_workflows import small_quickstart

pytestmark = [pytest.mark.slow, pytest.mark.ray]

TRAIN_WORKER = "ray::RayTrainWorker"
SEGMENTER = "ray::MapWorker(MapBatches(_Segmenter))"
N_IMAGES = 18  # 3 series x 6 slices


@pytest.fixture(scope="module")
def cluster():
    """Head and one worker node, 1 CPU each; only this cluster's processes are stopped."""
    with LocalCluster(cpus=(1, 1)) as c:
        yield c
    assert c.stray_pids() == []


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from segops.synth import make_ct_archive

    out = tmp_path_factory.mktemp("multinode-ct")
    make_ct_archive(out, series=3, slices=6, seed=0)
    return out


def _workflow(root: Path, archive: Path, name: str, train: dict, segment: dict | None) -> Path:
    """A small quickstart (same steps and preprocessing, smaller U-Net, few epochs), in experiment ``multinode``."""
    spec = small_quickstart(root, archive, name, train, None if segment is None else {"overlays": 1, **segment})
    spec["tracking"]["experiment"] = "multinode"
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _run_dir(root: Path) -> Path:
    (run_dir,) = (root / "runs").iterdir()
    return run_dir


def _epochs(run_dir: Path) -> list[int]:
    progress = run_dir / "ray-train" / "progress.jsonl"
    lines = progress.read_text().splitlines() if progress.exists() else []
    return [json.loads(line)["epoch"] for line in lines]


def _finish(proc, log: Path, timeout: float) -> None:
    try:
        proc.wait(timeout=timeout)
    except Exception:
        proc.kill()
        raise AssertionError(f"segops run did not finish in {timeout:.0f} s:\n{log.read_text()[-3000:]}") from None
    assert proc.returncode == 0, log.read_text()[-3000:]


def _mlflow_run(root: Path):
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("multinode").experiment_id])
    return client, run


def test_quickstart_trains_on_both_nodes_and_segments_every_input(cluster, archive, tmp_path) -> None:
    # 2 x 0.75 CPU cannot fit on one 1-CPU node: the training placement group and the two
    # inference actors must use both nodes.
    wf = _workflow(
        tmp_path,
        archive,
        "multinode",
        {"epochs": 3, "scaling": {"workers": 2, "cpus_per_worker": 0.75}},
        {"actors": {"min_actors": 2, "max_actors": 2, "cpus_per_actor": 0.75}},
    )
    log = tmp_path / "run.log"
    with ActorWatch(cluster.nodes) as watch:
        _finish(subprocess_run(wf, cluster.driver_env(), log), log, timeout=360)

    assert watch.pids("head", TRAIN_WORKER) and watch.pids("worker1", TRAIN_WORKER), watch.seen
    assert len(watch.pids("head", TRAIN_WORKER) | watch.pids("worker1", TRAIN_WORKER)) == 2
    assert watch.pids("head", SEGMENTER) and watch.pids("worker1", SEGMENTER), watch.seen  # an actor on each node

    run_dir = _run_dir(tmp_path)
    masks = sorted(p.relative_to(run_dir / "masks").as_posix() for p in (run_dir / "masks").rglob("*.png"))
    inputs = sorted(
        p.relative_to(archive / "images").with_suffix(".png").as_posix() for p in (archive / "images").rglob("*.dcm")
    )
    assert masks == inputs and len(masks) == N_IMAGES
    report = pd.read_parquet(run_dir / "report.parquet")
    assert len(report) == N_IMAGES
    for row in report.itertuples():  # each node's actor scored the mask it wrote against its label
        pred = np.asarray(Image.open(row.mask_path)) > 0
        truth = np.asarray(Image.open(archive / "labels" / Path(row.rel_path).with_suffix(".png"))) > 0
        denom = int(pred.sum() + truth.sum())
        assert row.dice == pytest.approx(1.0 if denom == 0 else 2 * int((pred & truth).sum()) / denom), row.rel_path

    client, run = _mlflow_run(tmp_path)
    assert run.info.status == "FINISHED"
    losses = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "train_loss"), key=lambda m: m.step)]
    assert len(losses) == 3 and losses[-1] < losses[0]  # it learnt, on two nodes
    assert run.data.metrics["segment_dice_mean"] == pytest.approx(report["dice"].mean())
    assert 0.0 < run.data.metrics["best_val_dice"] <= 1.0


def test_losing_the_worker_node_mid_training_resumes_from_the_last_checkpoint(archive, tmp_path) -> None:
    # Head 2 CPUs, worker 1. A 1.5-CPU hold on the head keeps ingest's reads (and so the dataset
    # blocks) and both 0.5-CPU training workers on the worker node; released at the kill, the head
    # fits the restarted workers (1 CPU) plus the 1-CPU read tasks that rebuild the lost blocks.
    epochs = 4
    wf = _workflow(
        tmp_path,
        archive,
        "node-loss",
        {
            "epochs": epochs,
            "max_failures": 2,
            "register_model": False,
            "scaling": {"workers": 2, "cpus_per_worker": 0.5},
        },
        None,
    )
    log = tmp_path / "run.log"
    with LocalCluster(cpus=(2, 1)) as cluster:
        hold = cluster.hold_cpus(cluster.head, 1.5)
        proc = subprocess_run(wf, cluster.driver_env(), log)
        with ActorWatch(cluster.nodes) as watch:
            deadline = time.monotonic() + 120
            while not (tmp_path / "runs").is_dir() or not _epochs(_run_dir(tmp_path)):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            done_before = _epochs(_run_dir(tmp_path))
            # the group that reported the epoch: a group start that Ray retried under load has left
            # a pid in the history (``pids``), so count the processes running now
            before = watch.live("worker1", TRAIN_WORKER)
            assert len(before) == 2 and not watch.pids("head", TRAIN_WORKER), watch.seen
            cluster.workers[0].kill_raylet()
            hold.kill()
            hold.wait()
            _finish(proc, log, timeout=360)
        assert cluster.workers[0].process.poll() is not None  # the worker node is gone
    assert cluster.stray_pids() == []

    # the restarted group, on the survivor (2 workers; a group start that Ray retries under load
    # leaves a third pid behind, seen in CI on a loaded machine)
    assert len(watch.pids("head", TRAIN_WORKER)) >= 2
    history = _epochs(_run_dir(tmp_path))
    assert history == list(range(epochs)), history  # each epoch once: no restart from epoch 0
    assert len(done_before) < epochs  # the kill came mid-training
    client, run = _mlflow_run(tmp_path)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == list(range(epochs))
