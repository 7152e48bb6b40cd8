"""nnU-Net v2 in its own virtual environment (never a dependency of segops), and the trainer
variant that holds its training to a wall-clock budget.

The venv gets the same torch release as segops' (pinned, so pip takes the local wheel where
there is one and does not pull another build) and a pinned ``nnunetv2``. Installing is
idempotent: a marker file records the pins, and a venv whose pins match is left alone.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

NNUNET_VERSION = "2.8.1"
TRAINER = "nnUNetTrainer_SegopsBudget"

#: Written into nnunetv2/training/nnUNetTrainer/variants/, where nnU-Net looks trainers up by name.
TRAINER_SOURCE = '''"""Written by segops benchmarks/vs_nnunet.py: nnU-Net's default trainer, held to a deadline.

SEGOPS_BENCH_DEADLINE (Unix time) ends training when the next epoch would not finish before it
(an epoch that runs into it stops after the current iteration, then validates);
the poly learning-rate schedule is re-aimed at the number of epochs that fit, re-estimated after
every epoch from the mean epoch time (the first epoch, with its start-up, is left out once there
are others), so the rate still decays to about zero at the deadline. SEGOPS_BENCH_ITERATIONS sets
num_iterations_per_epoch (nnU-Net's 250 is an hour per epoch on a 2-core CPU). The final
validation is skipped: with fold "all" its cases are the training cases.
"""

import os
import time

import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_SegopsBudget(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.deadline = float(os.environ["SEGOPS_BENCH_DEADLINE"])
        iterations = int(os.environ.get("SEGOPS_BENCH_ITERATIONS", "250"))
        self.num_iterations_per_epoch = iterations
        self.num_val_iterations_per_epoch = max(1, iterations // 5)
        self.epoch_seconds = []

    def _aim_schedule(self) -> None:
        times = self.epoch_seconds[1:] or self.epoch_seconds
        per_epoch = sum(times) / len(times)
        fit = int((self.deadline - time.time()) // per_epoch)
        self.num_epochs = max(self.current_epoch + max(fit, 0), self.current_epoch, 1)
        self.lr_scheduler.max_steps = max(self.num_epochs, 1)
        self.print_to_log_file(f"budget: {per_epoch:.1f} s per epoch, {self.num_epochs} epochs in all")

    def run_training(self):
        self.on_train_start()
        while self.current_epoch < self.num_epochs:
            start = time.time()
            self.on_epoch_start()
            self.on_train_epoch_start()
            outputs = []
            for _ in range(self.num_iterations_per_epoch):
                outputs.append(self.train_step(next(self.dataloader_train)))
                if time.time() >= self.deadline:  # a long epoch (CPU) stops mid-way rather than overrun
                    break
            self.on_train_epoch_end(outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                batches = range(self.num_val_iterations_per_epoch)
                self.on_validation_epoch_end([self.validation_step(next(self.dataloader_val)) for _ in batches])
            self.on_epoch_end()
            self.epoch_seconds.append(time.time() - start)
            self._aim_schedule()
        self.on_train_end()

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("final validation skipped (fold all: the validation cases are the training cases)")
'''


def torch_pin() -> str:
    """``torch==<segops' torch release>`` (a local build tag such as ``+cu130`` dropped)."""
    return "torch==" + importlib.metadata.version("torch").split("+")[0]


def venv_bin(venv: Path, tool: str) -> Path:
    return venv / "bin" / tool


def install(venv: Path, nnunet_version: str = NNUNET_VERSION) -> None:
    """Create ``venv`` with pinned torch and nnunetv2 unless a finished install with the same pins is there."""
    pins = [torch_pin(), f"nnunetv2=={nnunet_version}"]
    marker = venv / "segops-pins.txt"
    if marker.is_file() and marker.read_text().split() == pins and venv_bin(venv, "nnUNetv2_train").is_file():
        log.info("nnU-Net venv %s already has %s: not reinstalling", venv, " ".join(pins))
        return
    if not venv_bin(venv, "python").is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv_bin(venv, "python")), "-m", "pip", "install", "--disable-pip-version-check"]
    log.info("installing %s into %s", " ".join(pins), venv)
    subprocess.run([*pip, *pins], check=True)
    marker.write_text("\n".join(pins) + "\n")


def write_trainer(venv: Path) -> Path:
    """Write the budget trainer into the venv's nnunetv2 variants folder (every run: cheap, current)."""
    found = subprocess.run(
        [str(venv_bin(venv, "python")), "-c", "import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    path = Path(found) / "training" / "nnUNetTrainer" / "variants" / "segops_budget.py"
    if not path.is_file() or path.read_text() != TRAINER_SOURCE:
        path.write_text(TRAINER_SOURCE)
    return path


def nnunet_env(root: Path, deadline: float | None = None, iterations: int | None = None) -> dict[str, str]:
    """The environment nnU-Net's commands need: its three folders under ``root``, the budget, threads."""
    env = dict(os.environ)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        folder = root / name.split("_")[1]
        folder.mkdir(parents=True, exist_ok=True)
        env[name] = str(folder.resolve())
    env.setdefault("nnUNet_n_proc_DA", str(max(1, (os.cpu_count() or 2) - 1)))
    if deadline is not None:
        env["SEGOPS_BENCH_DEADLINE"] = f"{deadline:.3f}"
    if iterations is not None:
        env["SEGOPS_BENCH_ITERATIONS"] = str(iterations)
    return env
