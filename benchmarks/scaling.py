"""Multi-node overhead: the same workflow on one 2-CPU Ray node vs two 1-CPU nodes on loopback.

Both clusters have 2 CPUs on the same 2 cores, so the ratio measures what spreading costs
(cross-node object transfers, DDP over TCP between raylets, a second raylet's own work), not a
speedup. The workflow is the quickstart's (ingest → Ray Train U-Net → segment), run by
``segops run`` in a child process; step times come from the run's manifest (1 s resolution).

Training workers get 0.75 CPU each, so on 1+1 CPUs they must sit on different nodes; one
inference actor (0.5 CPU), because two actors spread over two 1-CPU nodes hang the segment
step (see tests/cluster/test_multinode.py).

    .venv/bin/python benchmarks/scaling.py --series 3 --slices 6 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _measure import stopwatch  # noqa: E402
from _quickstart import quickstart_train  # noqa: E402

from segops.cluster.local_cluster import LocalCluster  # noqa: E402
from segops.synth import make_ct_archive  # noqa: E402

OUT = Path(__file__).parent / "out" / "scaling"
STEPS = ("ingest", "train", "segment")


def make_inputs(series: int, slices: int) -> Path:
    root = OUT / f"archive-{series}x{slices}"
    if not (root / "images").is_dir():
        make_ct_archive(root, series=series, slices=slices, seed=0)
    return root


def workflow(archive: Path, name: str, epochs: int) -> Path:
    """The quickstart workflow (same model and preprocessing) with sizes that fit both clusters."""
    root = OUT / "results" / name
    spec = {
        "name": f"scaling-{name}",
        "seed": 0,
        "output_dir": str(root / "runs"),
        "cluster": {"num_cpus": 2},
        "tracking": {"uri": f"sqlite:///{root}/mlflow.db", "experiment": "scaling"},
        "steps": [
            {
                "step": "ingest",
                "source": {
                    "kind": "dicom",
                    "path": str(archive / "images"),
                    "labels": {"kind": "mask-png", "path": str(archive / "labels")},
                },
            },
            quickstart_train(
                split={"val_fraction": 0.34, "seed": 0},
                epochs=epochs,
                register_model=False,
                scaling={"workers": 2, "use_gpu": False, "cpus_per_worker": 0.75},
            ),
            {
                "step": "segment",
                "outputs": ["png"],
                "batch_size": 16,
                "overlays": 0,
                "actors": {"min_actors": 1, "max_actors": 1, "cpus_per_actor": 0.5},
            },
        ],
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / "workflow.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run(wf: Path, env: dict[str, str], timeout_s: float) -> dict[str, float]:
    """``segops run`` in a child process → seconds per step and in total (Ray start-up included)."""
    with stopwatch() as elapsed:
        done = subprocess.run(
            [sys.executable, "-m", "segops.cli", "run", str(wf)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    if done.returncode != 0:
        raise SystemExit(f"segops run {wf} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    (run_dir,) = (wf.parent / "runs").iterdir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    seconds = {s["step"]: _seconds(s["started"], s["finished"]) for s in manifest["steps"]}
    return seconds | {"total": elapsed()}


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=3)
    parser.add_argument("--slices", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--repeats", type=int, default=1, help="alternate the two clusters this many times; best of each"
    )
    parser.add_argument("--timeout", type=float, default=600, help="per run, seconds (a stuck run is reported)")
    args = parser.parse_args()
    archive = make_inputs(args.series, args.slices)
    print(f"{args.series * args.slices} slices, {args.epochs} epochs, 2 training workers x 0.75 CPU, 1 actor x 0.5 CPU")

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "disabled"}
    ones, twos = [], []
    for i in range(args.repeats):  # alternating, so that load from elsewhere hits both sides alike
        shutil.rmtree(OUT / "results", ignore_errors=True)
        ones.append(run(workflow(archive, "1node", args.epochs), env, args.timeout))
        with stopwatch() as start_s, LocalCluster(cpus=(1, 1)) as cluster:
            started = start_s()
            twos.append(run(workflow(archive, "2node", args.epochs), cluster.driver_env(env), args.timeout))
        print(
            f"repeat {i + 1}: 1 node {_line(ones[-1])}; 2 nodes {_line(twos[-1])}; 2-node cluster start-up "
            f"{started:.1f} s"
        )
    one, two = ({k: min(r[k] for r in runs) for k in runs[0]} for runs in (ones, twos))
    print(f"{'best of ' + str(args.repeats):24s}{'1 node, 2 CPUs':>16s}{'2 nodes, 1+1':>16s}{'ratio':>8s}")
    for key in (*STEPS, "total"):
        print(f"{key + ' (s)':24s}{one[key]:16.1f}{two[key]:16.1f}{two[key] / max(one[key], 1e-9):8.2f}")
    print("ratio = 2-node / 1-node seconds: the cost of spreading over nodes on the same cores, not a speedup.")
    print("total: the whole `segops run` (1 node: includes starting its local Ray, ~4 s; 2 nodes: attaching)")


def _line(seconds: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.1f}" for k, v in seconds.items())


if __name__ == "__main__":
    main()
