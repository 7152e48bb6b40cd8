"""What to label next: N cases picked by ``segops select`` vs N picked at random, same retraining.

The pool, the labelled seed set and the held-out set are drawn from one generated distribution,
built so that labelling at random is wasteful, as in an archive from a production line:

- **common look** (about 85 % of the images): :func:`segops.synth.make_defect_archive` (size 96,
  70 % defect-free: dark blowholes, cracks, chipped edges, uneven patches), each photo shot in a
  burst of 1-4 near-identical frames (shifted by up to 2 px, sensor noise, small gain change);
- **rare look** (about 15 %): :func:`segops.synth.make_inspection_archive` (gray, 96-128 px, a
  finer machined texture with bright or dark scratches and pits), one frame each.

Each set is made by the same function with its own generator seed, so the held-out set has both
looks in the same shares as the pool (not only the rare one). Per benchmark seed:

1. **seed model**: the quickstart's U-Net and train recipe (``_quickstart.py``; 8-bit window and
   64 px patches as in ``finetune.py``) trained from scratch in this process on a small labelled
   seed set with segops' engine loops (``finetune.fit``);
   saved as a segops checkpoint with the ``fingerprint.json`` and ``embeddings.npz`` a train step
   stores (so the risk has its area z-scores and flags, and drift its reference);
2. **segment**: a real segops workflow with one segment step (Ray, default review and drift
   settings) over the unlabelled pool folder: ``outputs.parquet`` with each case's ``risk``;
3. **select arm**: :func:`segops.steps.select.select_for_labelling` on that run (what ``segops
   select RUN --budget N`` calls: the run's model embeds the candidates, risk-weighted k-center
   greedy picks N) writes the labelling package; the generator's true masks of its
   ``manifest.csv`` cases are the labeller's work;
4. **random arm**: N pool cases drawn uniformly with the seed;
5. **retrain**: each arm warm-starts from the seed model (``model.weights_path``, as
   ``workflows/retrain.yaml`` starts from the champion) and trains the same epochs, learning rate
   and sampling seed on seed set + its N cases; scored on the held-out set: Dice over every case
   (a defect-free case scores 1 when nothing is predicted, 0 otherwise: false alarms count) and
   over the cases with a defect (``fg_dice``).

The goal (``benchmarks/README.md``, issue 19): the select arm's mean held-out Dice beats the random
arm's by more than the seed spread, i.e. the larger of the two arms' min-max ranges over seeds.

    .venv/bin/python benchmarks/active.py            # 3 seeds (3 min on 2 cores at load 4-6)
    .venv/bin/python benchmarks/active.py --quick    # smoke run: small sets, 1 seed, few epochs (~1.5 min)
    .venv/bin/python benchmarks/active.py --seeds 0 1 2 3 4 --budget 30
    .venv/bin/python benchmarks/active.py --arms representative risk-top half-random strata-random

``--arms`` adds reference arms beside the goal's two (default ``representative``; see
:data:`REFERENCE_ARMS`): other ways to use the same run's risk, masks and embeddings.
``--random-draws K`` adds K - 1 more uniform draws per seed (arms ``random-2``..), and a row over
every draw: how much uniform picks alone spread, which the goal's one draw per seed hides.

Rows (mean and min-max over seeds) are printed as a table and written with every per-seed figure
(and what each arm picked: rare-look cases, defect cases, distinct bursts) to
``benchmarks/out/active.json`` (``--quick``: ``active-quick.json``). Training runs in this process
with torch on ``--threads`` threads; the segment step runs on a local Ray started once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import numpy as np
import pandas as pd
import torch
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _measure import stopwatch  # noqa: E402
from _quickstart import quickstart_train  # noqa: E402
from finetune import PRE, fit, read_semantic, score  # noqa: E402

from segops.cluster.fingerprint import write_fingerprint  # noqa: E402
from segops.config.load import validate_workflow_text  # noqa: E402
from segops.config.schema import TrainStep  # noqa: E402
from segops.data.fingerprint import FingerprintAccumulator, record_stats  # noqa: E402
from segops.data.selection import RISK_WEIGHT
from segops.engine.checkpoint import LoadedModel, save_checkpoint  # noqa: E402
from segops.engine.embeddings import EMBEDDINGS_FILE, EmbeddingReference, embed  # noqa: E402
from segops.models import build_model, load_weights  # noqa: E402
from segops.synth import make_defect_archive, make_inspection_archive  # noqa: E402

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out" / "active"
#: ``select`` and ``random`` are the goal's arms (always run); the others are references, each a
#: different way to use the same run's risk, masks and embeddings (``--arms``):
#: ``representative``: the pool case nearest each of N k-means centres of the embeddings (typical
#: cases, no risk); ``risk-top``: the N riskiest cases (no diversity); ``half-random``: half the
#: budget by ``select``, the rest uniform among the others; ``strata-random``: uniform within two
#: strata, cases with and without predicted foreground, each given its share of the pool;
#: ``strata-select``: the same strata and shares, ``select``'s risk-weighted k-center within each.
GOAL_ARMS = ("select", "random")
REFERENCE_ARMS = ("representative", "risk-top", "half-random", "strata-random", "strata-select")
ARMS = GOAL_ARMS + ("representative",)


def recipe(epochs: int, weights: Path | None = None) -> TrainStep:
    """The quickstart's train step (its U-Net, loss, batch size, learning rate: ``_quickstart.py``)
    with ``finetune.py``'s preprocessing for 8-bit images (window 0-255, 64 px patches), ``epochs``
    epochs, and, with ``weights``, warm-started from that checkpoint (``model.weights_path``)."""
    doc = quickstart_train(preprocess=PRE.model_dump(mode="json"), epochs=epochs)
    if weights is not None:
        doc["model"] = doc["model"] | {"weights_path": str(weights)}
    return TrainStep.model_validate(doc)


MODEL = recipe(1).model
log = logging.getLogger("active")

Pair = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Plan:
    """Sizes of a run. ``*_photos``: common-look photos (each a burst of 1-4 frames); ``*_rare``:
    rare-look images (one frame each)."""

    pool_photos: int
    pool_rare: int
    test_photos: int
    test_rare: int
    seed_photos: int
    seed_rare: int
    budget: int
    seed_epochs: int  # the seed model, from scratch
    epochs: int  # each arm's retraining, warm-started from the seed model


PLANS = {
    False: Plan(
        pool_photos=70,
        pool_rare=30,
        test_photos=40,
        test_rare=16,
        seed_photos=6,
        seed_rare=2,
        budget=20,
        seed_epochs=60,
        epochs=30,
    ),
    True: Plan(
        pool_photos=16,
        pool_rare=6,
        test_photos=8,
        test_rare=4,
        seed_photos=4,
        seed_rare=1,
        budget=8,
        seed_epochs=15,
        epochs=8,
    ),
}


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Case:
    """One image of a generated set, as written under ``images/`` (gray PNG), and its true mask."""

    rel_path: str
    image: np.ndarray  # (1, H, W) float32, the PNG's values
    label: np.ndarray  # (H, W) {0, 1}
    rare: bool
    burst: str  # frames of one photo share it


def _jitter(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Pair:
    """Another frame of the same photo: shifted by up to 2 px, new sensor noise, gain within ±4 %."""
    dy, dx = (int(v) for v in rng.integers(-2, 3, 2))
    frame = np.roll(image, (dy, dx), axis=(-2, -1)) * rng.uniform(0.96, 1.04) + rng.normal(0, 3, image.shape)
    return np.clip(np.round(frame), 0, 255).astype(np.float32), np.roll(label, (dy, dx), axis=(-2, -1))


def make_set(root: Path, photos: int, rare: int, seed: int) -> list[Case]:
    """``photos`` common-look photos in bursts of 1-4 frames and ``rare`` rare-look images, written
    as gray PNGs under ``root/images`` (the true masks stay in memory); made once per ``root``."""
    common_raw = root / "raw-common"
    rare_raw = root / "raw-rare"
    if not (root / "done").exists():
        shutil.rmtree(root, ignore_errors=True)
        make_defect_archive(common_raw, count=photos, seed=seed, size=96, defect_free=0.7)
        make_inspection_archive(rare_raw, count=rare, seed=seed, rgb_fraction=0.0)
    rng = np.random.default_rng([seed, 7])
    cases: list[Case] = []
    common_files = [p for p in sorted(common_raw.glob("*/*.jpg"))]  # read_semantic's order
    for path, (image, label) in zip(common_files, read_semantic(common_raw, common_raw, "*/*.jpg")):
        burst = f"{path.parent.name}-{path.stem}"
        frames = [(image, label)] + [_jitter(image, label, rng) for _ in range(int(rng.integers(0, 4)))]
        for k, (frame, mask) in enumerate(frames):
            cases.append(Case(f"common/{burst}-f{k}.png", frame, mask.astype(np.uint8), False, burst))
    for path, (image, label) in zip(
        sorted((rare_raw / "images").glob("*.png")), read_semantic(rare_raw / "images", rare_raw / "labels", "*.png")
    ):
        cases.append(Case(f"rare/{path.stem}.png", image, label.astype(np.uint8), True, f"rare-{path.stem}"))
    if not (root / "done").exists():
        for case in cases:
            dst = root / "images" / case.rel_path
            dst.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(case.image[0].astype(np.uint8)).save(dst)
        (root / "done").touch()
    return cases


def pairs_of(cases: list[Case]) -> list[Pair]:
    return [(c.image, c.label) for c in cases]


def composition(cases: list[Case]) -> dict[str, int]:
    """What a set of cases holds: images, rare-look ones, ones with a defect, distinct photos."""
    return {
        "cases": len(cases),
        "rare": sum(c.rare for c in cases),
        "with_defect": sum(bool(c.label.any()) for c in cases),
        "distinct_photos": len({c.burst for c in cases}),
    }


# --------------------------------------------------------------------------- seed model and segment run


def save_seed_model(model: torch.nn.Module, folder: Path, cases: list[Case], seed: int) -> Path:
    """The seed model as a segops checkpoint with what a train step stores beside it: the training
    fingerprint (risk area z-scores and flags, drift) and the training cases' embedding reference."""
    checkpoint = save_checkpoint(folder, model, MODEL, PRE)
    acc = FingerprintAccumulator(task="semantic", seed=seed)
    for case in cases:
        acc.add(record_stats(case.image, case.label, case.rel_path, "semantic", seed=seed), group_id=case.burst)
    write_fingerprint(acc.result(), checkpoint)
    loaded = LoadedModel(model.eval(), MODEL, PRE, {})
    EmbeddingReference.from_embeddings(embed(loaded, [c.image for c in cases]), seed).save(checkpoint / EMBEDDINGS_FILE)
    return checkpoint


def segment_pool(checkpoint: Path, pool_images: Path, seed: int, num_cpus: int) -> Path:
    """A segops workflow of one segment step over the pool folder (default review and drift
    settings), run in this process on a local Ray; returns the run folder."""
    from segops.workflows import run_workflow

    doc = {
        "name": f"active-seed{seed}",
        "seed": seed,
        "output_dir": str(OUT / "runs"),
        "tracking": {"uri": f"sqlite:///{OUT / 'mlruns.db'}", "experiment": "active"},
        "cluster": {"num_cpus": num_cpus},
        "steps": [
            {
                "step": "segment",
                "model": str(checkpoint),
                "source": {"kind": "images", "path": str(pool_images)},
                "overlays": 0,
            }
        ],
    }
    text = yaml.safe_dump(doc, sort_keys=False)
    return run_workflow(validate_workflow_text(text, doc["name"]), text, new_run=True).run_dir


def select_picks(run_dir: Path, budget: int, seed: int, risk_weight: float) -> tuple[list[str], dict[str, Any]]:
    """``segops select RUN --budget N``'s code path: the package's ``rel_path`` in pick order, and
    how risky the picks were against the pool (from ``outputs.parquet``)."""
    from segops.steps.select import select_for_labelling

    package = select_for_labelling(run_dir, budget, OUT / f"select-seed{seed}", risk_weight=risk_weight)
    manifest = package.manifest
    return manifest["rel_path"].astype(str).tolist(), {
        "candidates": package.candidates,
        "picked_risk_mean": float(manifest["risk"].astype(float).mean()),
        "package": str(package.folder),
    }


def pool_risk(run_dir: Path) -> dict[str, float]:
    """The pool's mean risk, overall and by look (does the risk see the rare look?)."""
    import pandas as pd

    outputs = pd.read_parquet(run_dir / "outputs.parquet", columns=["rel_path", "risk"])
    rare = outputs["rel_path"].astype(str).str.startswith("rare/")
    return {
        "risk_mean": float(outputs["risk"].mean()),
        "risk_mean_rare": float(outputs.loc[rare, "risk"].mean()),
        "risk_mean_common": float(outputs.loc[~rare, "risk"].mean()),
    }


# --------------------------------------------------------------------------- one seed


def representative_picks(run_dir: Path, budget: int, seed: int) -> list[str]:
    """``rel_path`` of the candidate nearest each of ``budget`` k-means centres of the candidates'
    encoder embeddings (standardised per dimension), as ``select`` gets them (its own functions)."""
    from sklearn.cluster import KMeans

    from segops.steps.select import candidate_cases, embed_cases, read_run

    finished = read_run(run_dir, OUT / f"representative-seed{seed}" / ".model")
    rows, emb = embed_cases(finished, candidate_cases(pd.read_parquet(finished.segment.outputs)))
    z = (emb - emb.mean(axis=0)) / (emb.std(axis=0) + 1e-8)
    km = KMeans(n_clusters=budget, n_init=4, random_state=seed).fit(z)
    picks = []
    for k in range(budget):
        members = np.flatnonzero(km.labels_ == k)
        picks.append(members[np.argmin(np.linalg.norm(z[members] - km.cluster_centers_[k], axis=1))])
    return rows.iloc[picks]["rel_path"].astype(str).tolist()


def reference_picks(run_dir: Path, budget: int, seed: int, arm: str) -> list[str]:
    """``rel_path`` of the picks of a reference arm (other than ``representative``) from the run's
    ``outputs.parquet`` (risk, predicted foreground) and ``select``'s own candidates and embeddings."""
    from segops.data.selection import select_cases
    from segops.steps.select import candidate_cases, embed_cases, read_run

    finished = read_run(run_dir, OUT / f"{arm}-seed{seed}" / ".model")
    rows = candidate_cases(pd.read_parquet(finished.segment.outputs))
    rng = np.random.default_rng(10_000 + seed)
    risk = rows["risk"].astype(float).fillna(-np.inf).to_numpy()
    if arm == "risk-top":
        picks = list(np.argsort(-risk, kind="stable")[:budget])
    elif arm == "half-random":
        rows, emb = embed_cases(finished, rows)
        first = select_cases(rows["case_id"].tolist(), rows["risk"].astype(float).to_numpy(), emb, budget // 2)
        picks = list(first.indices)
        rest = np.setdiff1d(np.arange(len(rows)), picks)
        picks += list(rng.choice(rest, budget - len(picks), replace=False))
    elif arm == "strata-random":
        picks = [i for members, n in _strata(rows, budget) for i in rng.choice(members, n, replace=False)]
    elif arm == "strata-select":
        rows, emb = embed_cases(finished, rows)  # the cases that still read: risk and strata of these
        risk = rows["risk"].astype(float).to_numpy()
        picks = []
        for members, n in _strata(rows, budget):
            part = select_cases(rows["case_id"].iloc[members].tolist(), risk[members], emb[members], n)
            picks += list(members[part.indices])
    else:
        raise ValueError(f"unknown arm {arm!r}")
    return rows.iloc[picks]["rel_path"].astype(str).tolist()


def _strata(rows: pd.DataFrame, budget: int) -> list[tuple[np.ndarray, int]]:
    """(positions, picks) of the two strata, cases with and without predicted foreground, each
    given its share of ``budget`` as of the candidates."""
    with_fg = rows["fg_fraction"].astype(float).to_numpy() > 0
    n_fg = int(round(budget * with_fg.mean()))
    return [(np.flatnonzero(with_fg), n_fg), (np.flatnonzero(~with_fg), budget - n_fg)]


def run_seed(
    seed: int, plan: Plan, pool: list[Case], test: list[Case], tag: str, num_cpus: int, risk_weight: float
) -> dict[str, Any]:
    seed_set = make_set(OUT / f"seedset-{tag}-{seed}", plan.seed_photos, plan.seed_rare, seed=100 + seed)
    torch.manual_seed(seed)
    model = build_model(MODEL)
    seed_s = fit(model, recipe(plan.seed_epochs), pairs_of(seed_set), seed=seed)
    checkpoint = save_seed_model(model, OUT / f"seed-model-{tag}-{seed}", seed_set, seed)
    before = score(model, MODEL, pairs_of(test))
    print(f"  seed {seed}: seed model on {len(seed_set)} labelled cases in {seed_s:.0f} s: " + _shown(before))

    with stopwatch() as segment_s:
        run_dir = segment_pool(checkpoint, OUT / f"pool-{tag}" / "images", seed, num_cpus)
    with stopwatch() as select_s:
        picked_paths, select_info = select_picks(run_dir, plan.budget, seed, risk_weight)
    by_path = {c.rel_path: c for c in pool}
    picks = {
        "select": [by_path[p] for p in picked_paths],
        "random": [pool[i] for i in sorted(np.random.default_rng(seed).choice(len(pool), plan.budget, replace=False))],
    }
    for arm in (a for a in ARMS if a.startswith("random-")):  # --random-draws: more uniform draws
        rng = np.random.default_rng([seed, int(arm.split("-")[1])])
        picks[arm] = [pool[i] for i in sorted(rng.choice(len(pool), plan.budget, replace=False))]
    for arm in (a for a in ARMS[len(GOAL_ARMS) :] if not a.startswith("random-")):
        paths = (
            representative_picks(run_dir, plan.budget, seed)
            if arm == "representative"
            else reference_picks(run_dir, plan.budget, seed, arm)
        )
        picks[arm] = [by_path[p] for p in paths]
    print(f"  seed {seed}: segment step {segment_s():.0f} s, select {select_s():.0f} s ({run_dir.name})")

    arms = []
    for arm in ARMS:
        step = recipe(plan.epochs, weights=checkpoint)
        torch.manual_seed(1000 + seed)
        retrained = build_model(step.model)
        load_weights(retrained, step.model)
        train_s = fit(retrained, step, pairs_of(seed_set + picks[arm]), 1000 + seed)
        figures = score(retrained, MODEL, pairs_of(test))
        arms.append({"arm": arm, "train_s": train_s, "picked": composition(picks[arm]), **figures})
        print(f"  seed {seed} {arm:6s}: {_shown(figures)}; picked {composition(picks[arm])}; {train_s:.0f} s")
    return {
        "seed": seed,
        "seed_set": composition(seed_set),
        "seed_model": before,
        "seed_train_s": seed_s,
        "segment_s": segment_s(),
        "select_s": select_s(),
        "run": str(run_dir),
        **select_info,
        **pool_risk(run_dir),
        "arms": arms,
    }


def _shown(figures: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in figures.items())


# --------------------------------------------------------------------------- report


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per arm: mean, min, max over seeds of Dice and fg_dice; per figure: the select arm's mean gain
    over random, the seed spread (the larger min-max range of the two arms), and whether the goal
    holds (None with one seed)."""
    rows: dict[str, Any] = {}
    for arm in ARMS:
        entries = [a for r in runs for a in r["arms"] if a["arm"] == arm]
        rows[arm] = {
            key: {"mean": statistics.fmean(v), "min": min(v), "max": max(v)}
            for key in ("dice", "fg_dice")
            for v in [[e[key] for e in entries]]
        }
        rows[arm]["picked_rare"] = statistics.fmean(e["picked"]["rare"] for e in entries)
        rows[arm]["picked_with_defect"] = statistics.fmean(e["picked"]["with_defect"] for e in entries)
        rows[arm]["picked_distinct_photos"] = statistics.fmean(e["picked"]["distinct_photos"] for e in entries)
    goals = {}
    for key in ("dice", "fg_dice"):
        gain = rows["select"][key]["mean"] - rows["random"][key]["mean"]
        spread = max(rows[arm][key]["max"] - rows[arm][key]["min"] for arm in ("select", "random"))
        paired = [
            next(a[key] for a in r["arms"] if a["arm"] == "select")
            - next(a[key] for a in r["arms"] if a["arm"] == "random")
            for r in runs
        ]
        holds = gain > spread if len(runs) > 1 else None  # one seed has no spread to beat
        goals[key] = {"gain": gain, "spread": spread, "per_seed_gain": paired, "holds": holds}
    return {"arms": rows, "goal": goals}


def _cell(stat: dict[str, float]) -> str:
    return f"{stat['mean']:.3f} ({stat['min']:.3f}-{stat['max']:.3f})"


def print_table(document: dict[str, Any]) -> None:
    s, plan = document["summary"], document["plan"]
    runs = document["runs"]
    print(
        f"\npool {document['pool']['cases']} cases ({document['pool']['rare']} rare look, "
        f"{document['pool']['with_defect']} with a defect); held-out {document['test']['cases']} "
        f"({document['test']['rare']} rare); seed set ~{runs[0]['seed_set']['cases']}; budget {plan['budget']}; "
        f"{len(runs)} seed(s)"
    )
    seed_model = {k: statistics.fmean(r["seed_model"][k] for r in runs) for k in ("dice", "fg_dice")}
    print(
        "\n| arm | held-out Dice, mean (min-max) | Dice, defect cases | picked: rare / with defect / distinct photos |"
    )
    print("|---|---|---|---|")
    print(f"| seed model (before labelling) | {seed_model['dice']:.3f} | {seed_model['fg_dice']:.3f} | |")
    for arm in ARMS:
        row = s["arms"][arm]
        picked = f"{row['picked_rare']:.1f} / {row['picked_with_defect']:.1f} / {row['picked_distinct_photos']:.1f}"
        print(f"| {arm} (+{plan['budget']}) | {_cell(row['dice'])} | {_cell(row['fg_dice'])} | {picked} |")
    draws = [a for r in runs for a in r["arms"] if a["arm"] == "random" or a["arm"].startswith("random-")]
    if len(draws) > len(runs):  # --random-draws: how far uniform picks alone spread
        cells = [
            _cell({"mean": statistics.fmean(v), "min": min(v), "max": max(v)})
            for k in ("dice", "fg_dice")
            for v in [[d[k] for d in draws]]
        ]
        print(f"| every random draw ({len(draws)}: seeds x draws) | {cells[0]} | {cells[1]} | |")
    for key, goal in s["goal"].items():
        verdict = {True: "holds", False: "does not hold", None: "n/a (one seed)"}[goal["holds"]]
        gains = ", ".join(f"{g:+.3f}" for g in goal["per_seed_gain"])
        print(
            f"{key}: select - random = {goal['gain']:+.3f} (per seed {gains}), seed spread {goal['spread']:.3f}: "
            f"goal {verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0 1 2 (--quick: 0)")
    parser.add_argument("--budget", type=int, default=None, help="cases to label per arm (default: the plan's)")
    parser.add_argument("--quick", action="store_true", help="small sets, few epochs, 1 seed: a smoke run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training (default 1)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray for the segment step")
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/out/active[-quick].json")
    parser.add_argument(
        "--risk-weight",
        type=float,
        default=RISK_WEIGHT,
        help=f"select's risk weight (segops' default {RISK_WEIGHT}; 0: diversity alone)",
    )
    parser.add_argument(
        "--arms",
        nargs="*",
        choices=REFERENCE_ARMS,
        default=["representative"],
        help="reference arms beside select and random (default: representative; see REFERENCE_ARMS)",
    )
    parser.add_argument(
        "--random-draws",
        type=int,
        default=1,
        help="uniform draws per seed (default 1, the goal's random arm; more add arms random-2.. to show their spread)",
    )
    args = parser.parse_args()
    global ARMS
    ARMS = GOAL_ARMS + tuple(args.arms) + tuple(f"random-{d}" for d in range(2, args.random_draws + 1))
    args.out = args.out or ROOT / "out" / ("active-quick.json" if args.quick else "active.json")
    plan = PLANS[args.quick]
    if args.budget is not None:
        plan = Plan(**(plan.__dict__ | {"budget": args.budget}))
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    OUT.mkdir(parents=True, exist_ok=True)
    tag = "quick" if args.quick else "full"
    started = time.perf_counter()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    with stopwatch() as data_s:
        pool = make_set(OUT / f"pool-{tag}", plan.pool_photos, plan.pool_rare, seed=1)
        test = make_set(OUT / f"heldout-{tag}", plan.test_photos, plan.test_rare, seed=2)
    print(f"pool {composition(pool)}, held-out {composition(test)}; data {data_s():.0f} s")
    document: dict[str, Any] = {
        "quick": args.quick,
        "seeds": seeds,
        "threads": torch.get_num_threads(),
        "plan": plan.__dict__,
        "risk_weight": args.risk_weight,
        "arms": list(ARMS),
        "recipe": recipe(1).model_dump(mode="json", exclude={"epochs"}),
        "pool": composition(pool),
        "test": composition(test),
        "runs": [],
    }
    for seed in seeds:
        document["runs"].append(run_seed(seed, plan, pool, test, tag, args.num_cpus, args.risk_weight))
        document["summary"] = summary(document["runs"])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=2))  # after each seed: a later failure keeps it
    document["minutes"] = (time.perf_counter() - started) / 60
    args.out.write_text(json.dumps(document, indent=2))
    print_table(document)
    print(f"\ntotal {document['minutes']:.1f} min, load average {os.getloadavg()[0]:.1f}")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
