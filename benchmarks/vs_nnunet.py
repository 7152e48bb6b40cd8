"""nnU-Net v2 (``nnunetv2`` from PyPI, in its own venv) against segops on the ISBI 2012 slices, with
the same held-out slices, the same training time and the same metrics.

    .venv/bin/python benchmarks/vs_nnunet.py                         # both, 30 min of training each
    .venv/bin/python benchmarks/vs_nnunet.py --minutes 60
    .venv/bin/python benchmarks/vs_nnunet.py --only segops           # the halves can run apart:
    .venv/bin/python benchmarks/vs_nnunet.py --only nnunet --segops-run benchmarks/out/nnunet/segops/runs/<id>

segops: ``workflows/isbi2012.yaml`` with its held-out slices as the test split (see
``_isbi_heldout.py``), its epochs sized to ``--minutes`` by a timing probe (or ``--segops-epochs``),
run end to end; or the finished run given by ``--segops-run``. nnU-Net: the 25 slices segops trains
and validates on become ``Dataset<ID>_ISBI`` (``imagesTr/<case>_0000.png``, ``labelsTr/<case>.png``
with segops' decoded classes, 1 = membrane), ``nnUNetv2_plan_and_preprocess -c 2d``, the 2d
configuration trained on all of them (``fold all``) by ``nnUNetTrainer_SegopsBudget``, nnU-Net's
default trainer held to a deadline equal to segops' train-step time (``--minutes`` when no segops
run is at hand); then ``nnUNetv2_predict`` on the 5 held-out slices, with and without its
test-time mirroring. Both are scored by segops' metrics on segops' decoded labels.

Not like for like in three ways, each stated in the output: segops' segment step segments all 30
labelled slices (its time includes the actor pool's start-up), nnU-Net predicts the 5 held-out
ones (its time includes the process start-up and model loading); on a CPU nnU-Net runs
``--iterations`` training iterations per epoch (default 250, its own, on a GPU; fewer on a CPU,
where 250 iterations of 512x512 patches take most of an hour), and the epoch count follows the
budget instead of nnU-Net's 1000.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _nnunet_env as env
from _isbi_heldout import (
    Case,
    boundary_class,
    derive,
    heldout_cases,
    labelled_cases,
    load_recipe,
    probe_epochs,
    read_run,
    result_row,
    run_segops,
    score,
    score_run,
    step_of,
    validated,
)

OUT = Path("benchmarks/out/nnunet")
log = logging.getLogger("vs_nnunet")


def nnunet_name(case: Case) -> str:
    """nnU-Net case identifier of a slice: its relative path without suffix, as letters, digits and ``_``."""
    stem = "".join(ch if ch.isalnum() else "_" for ch in str(Path(case.rel_path).with_suffix("")))
    return f"isbi_{stem}"


def write_raw(root: Path, dataset: str, train: list[Case], test: list[Case], labels: dict[str, int]) -> Path:
    """nnU-Net raw folder: training images byte for byte, segops' decoded labels, the test images."""
    folder = root / dataset
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        shutil.rmtree(folder / sub, ignore_errors=True)
        (folder / sub).mkdir(parents=True)
    for case in train:
        shutil.copyfile(case.source_uri, folder / "imagesTr" / f"{nnunet_name(case)}_0000.png")
        Image.fromarray(case.label).save(folder / "labelsTr" / f"{nnunet_name(case)}.png")
    for case in test:
        shutil.copyfile(case.source_uri, folder / "imagesTs" / f"{nnunet_name(case)}_0000.png")
    meta = {
        "channel_names": {"0": "EM"},  # not "CT": nnU-Net z-scores each image
        "labels": labels,
        "numTraining": len(train),
        "file_ending": ".png",
        "name": dataset,
        "description": "ISBI 2012 membranes, the slices segops trains and validates on (written by vs_nnunet.py)",
    }
    (folder / "dataset.json").write_text(json.dumps(meta, indent=2))
    return folder


def _run(cmd: list[str], environ: dict[str, str], log_file: Path) -> float:
    """Run an nnU-Net command, its output into ``log_file``; wall seconds. Exits with the log's tail on failure."""
    start = time.perf_counter()
    with log_file.open("w") as out:
        done = subprocess.run(cmd, env=environ, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode:
        tail = "".join(log_file.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise SystemExit(f"{' '.join(cmd)} failed (exit {done.returncode}); last lines of {log_file}:\n{tail}")
    return seconds


def nnunet(
    args: argparse.Namespace,
    train: list[Case],
    test: list[Case],
    budget_s: float,
    classes: int,
    boundary: int,
    labels: dict[str, int],
) -> list[dict[str, Any]]:
    """Install, convert, plan, train for ``budget_s``, predict and score; one row per prediction mode."""
    venv = OUT / "venv"
    if not args.skip_install:
        env.install(venv)
    env.write_trainer(venv)
    dataset = f"Dataset{args.dataset_id}_ISBI"
    device = args.device
    iterations = args.iterations or (250 if device == "cuda" else 25)
    logs = OUT / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    environ = env.nnunet_env(OUT)
    raw = write_raw(Path(environ["nnUNet_raw"]), dataset, train, test, labels)
    procs = str(max(1, args.processes))
    plan_s = _run(
        [
            str(env.venv_bin(venv, "nnUNetv2_plan_and_preprocess")),
            "-d",
            str(args.dataset_id),
            "-c",
            "2d",
            "--verify_dataset_integrity",
            "-np",
            procs,
            "-npfp",
            procs,
        ],
        environ,
        logs / "plan_and_preprocess.log",
    )
    results = Path(environ["nnUNet_results"]) / dataset / f"{env.TRAINER}__nnUNetPlans__2d" / "fold_all"
    shutil.rmtree(results, ignore_errors=True)  # a fresh training every time: the time is the measurement
    environ = env.nnunet_env(OUT, deadline=time.time() + budget_s, iterations=iterations)
    train_s = _run(
        [
            str(env.venv_bin(venv, "nnUNetv2_train")),
            str(args.dataset_id),
            "2d",
            "all",
            "-tr",
            env.TRAINER,
            "-device",
            device,
        ],
        environ,
        logs / "train.log",
    )
    epochs = _epochs_trained(results)
    rows = []
    for mode in args.predict:
        out = OUT / f"pred-{mode}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [
            str(env.venv_bin(venv, "nnUNetv2_predict")),
            "-i",
            str(raw / "imagesTs"),
            "-o",
            str(out),
            "-d",
            str(args.dataset_id),
            "-c",
            "2d",
            "-f",
            "all",
            "-tr",
            env.TRAINER,
            "-chk",
            "checkpoint_final.pth",
            "-device",
            device,
            "-npp",
            "1",
            "-nps",
            "1",
        ]
        infer_s = _run([*cmd, "--disable_tta"] if mode == "notta" else cmd, environ, logs / f"predict-{mode}.log")
        preds = {c.case_id: np.asarray(Image.open(out / f"{nnunet_name(c)}.png"), dtype=np.uint8) for c in test}
        scored = score(preds, test, classes, boundary)
        rows.append(
            {
                "system": f"nnU-Net v2 2d ({'mirroring TTA' if mode == 'tta' else 'no TTA'})",
                **result_row(
                    scored,
                    train_s,
                    infer_s,
                    len(test),
                    epochs,
                    iterations_per_epoch=iterations,
                    budget_minutes=budget_s / 60,
                    plan_and_preprocess_s=plan_s,
                    device=device,
                ),
            }
        )
    return rows


def _epochs_trained(results: Path) -> int | None:
    """Epochs the budget trainer ran, from nnU-Net's log ("Epoch k" lines count from 0)."""
    lines = [ln for p in sorted(results.glob("training_log_*.txt")) for ln in p.read_text().splitlines()]
    epochs = [int(ln.split("Epoch ")[1].split()[0]) for ln in lines if "Epoch " in ln and "time" not in ln]
    return max(epochs) + 1 if epochs else None


def segops(args: argparse.Namespace, doc: dict[str, Any], n_train: int, n_val: int, shape: tuple[int, ...]) -> Path:
    """Run the recipe for ``--minutes`` of training (epochs from a probe, or ``--segops-epochs``)."""
    epochs = args.segops_epochs or probe_epochs(validated(doc), args.minutes, n_train, n_val, shape)
    step_of(doc, "train")["epochs"] = epochs
    doc["name"] = f"isbi2012-vs-nnunet-{epochs}ep"
    return run_segops(doc, OUT / "segops" / f"{doc['name']}.yaml", args.new_run)


def segops_row(run_dir: Path, split: Any, test: list[Case], classes: int, boundary: int) -> dict[str, Any]:
    run = read_run(run_dir)
    scored = score_run(run, split, test, classes, boundary)
    train = step_of(run.workflow, "train")
    return {
        "system": f"segops {train['model']['arch']}",
        **result_row(scored, run.train_s, run.segment_s, run.segmented, train["epochs"], run_dir=str(run_dir)),
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = f"{'system':<40} {'pixel err':>9} {'Rand err':>9} {'Dice':>7} {'train min':>9} {'infer s':>8} {'slices':>6} {'s/slice':>7} {'epochs':>6}"  # noqa: E501
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['system']:<40} {r['pixel_error']:>9.4f} {r['rand_error']:>9.4f} {r['dice']:>7.4f} "
            f"{r['train_minutes']:>9.1f} {r['inference_s']:>8.1f} {r['inference_slices']:>6d} "
            f"{r['inference_s'] / r['inference_slices']:>7.2f} {r['epochs']!s:>6}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="Training budget of each side.")
    parser.add_argument("--only", choices=("nnunet", "segops"), default=None)
    parser.add_argument(
        "--segops-run", type=Path, default=None, help="Score this finished segops run instead of training."
    )
    parser.add_argument(
        "--nnunet-minutes", type=float, default=None, help="nnU-Net's budget (default: segops' train-step time)."
    )
    parser.add_argument("--segops-epochs", type=int, default=None, help="Instead of sizing them by a probe.")
    parser.add_argument("--new-run", action="store_true", help="Train segops afresh instead of resuming its run.")
    parser.add_argument("--skip-install", action="store_true", help="Use the nnU-Net venv as it is.")
    parser.add_argument("--workflow", type=Path, default=Path("workflows/isbi2012.yaml"))
    parser.add_argument("--dataset-id", type=int, default=501)
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default=None, help="nnU-Net's; default cuda if segops' torch sees one."
    )
    parser.add_argument(
        "--iterations", type=int, default=None, help="nnU-Net iterations per epoch (default 250 on cuda, 25 on cpu)."
    )
    parser.add_argument("--predict", nargs="+", choices=("tta", "notta"), default=["tta", "notta"])
    parser.add_argument("--processes", type=int, default=2, help="nnU-Net planning/preprocessing processes.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"

    doc = derive(load_recipe(args.workflow), "isbi2012-vs-nnunet", OUT / "segops")
    spec = validated(doc)
    split, test = heldout_cases(spec)
    cases = labelled_cases(spec)
    train_cases = [c for c in cases if c.group_id not in set(split.test)]
    classes = next(s for s in spec.steps if s.step == "train").model.classes
    boundary = boundary_class(spec)
    log.info("held-out slices (segops' test split): %s", ", ".join(c.rel_path for c in test))

    rows: list[dict[str, Any]] = []
    run_dir = args.segops_run
    if args.only != "nnunet" and run_dir is None:
        run_dir = segops(args, doc, len(split.train), len(split.val), test[0].label.shape)
    if run_dir is not None:
        rows.append(segops_row(run_dir, split, test, classes, boundary))
    if args.only != "segops":
        budget_s = 60 * (args.nnunet_minutes or (rows[0]["train_minutes"] if rows else args.minutes))
        segments = next(s for s in spec.steps if s.step == "segment").segments
        names = {"background": 0} | {name: int(k) for k, name in segments.items()}
        rows += nnunet(args, train_cases, test, budget_s, classes, boundary, names)

    result_path = OUT / "result.json"
    kept = json.loads(result_path.read_text())["rows"] if result_path.is_file() else []
    systems = {r["system"] for r in rows}
    merged = [r for r in kept if r["system"] not in systems] + rows
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps({"heldout": [c.rel_path for c in test], "rows": merged}, indent=2))
    print(table(merged))
    print(f"held-out slices: {', '.join(c.rel_path for c in test)}; written {result_path}")
    print(
        "Not 1:1: segops' inference time is its segment step over all labelled slices (actor start-up "
        "included); nnU-Net's is nnUNetv2_predict over the held-out slices (process start-up included)."
    )


if __name__ == "__main__":
    main()
