"""CPU inference kernels for the quickstart U-Net: which of the options issue 21 names pay here.

One process, one model (the quickstart architecture, its weights random but fixed), one batch
(``--batch`` × 1 × ``--size``² float32), four forms of the same network, timed in interleaved
rounds so that warm-up and the machine's drift weigh on every form alike:

- **eager**: what segops runs (``torch.inference_mode``), the baseline;
- **channels_last**: weights and input in channels-last memory format;
- **TorchScript frozen**: ``torch.jit.freeze(torch.jit.trace(...))``, oneDNN's fused kernels
  (deprecated in torch 2.14 in favour of ``torch.compile``);
- **torch.compile** (inductor, ``--compile``): its one-off compile time is printed apart;
- **bfloat16 autocast** (and with channels-last): ``torch.autocast("cpu", torch.bfloat16)``, what
  segops' inference runs on a CPU with native bfloat16 (AMX or AVX512-BF16) when ``amp`` is on.

Per form: the median ms per image over the rounds (and the fastest round), the ratio to eager,
the largest absolute difference of its logits from eager's and the share of pixels whose class
differs. ``--threads`` sets torch's threads (1: what each of 2 segment actors uses on 2 cores).

    .venv/bin/python benchmarks/cpu_kernels.py --threads 1 --compile
    .venv/bin/python benchmarks/cpu_kernels.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from segops.config.models import UNetSpec
from segops.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also torch.compile (tens of seconds to compile)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # TorchScript's deprecation warnings
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    spec = UNetSpec(
        arch="unet", in_channels=1, classes=2, channels=[16, 32, 64, 128], strides=[2, 2, 2], num_res_units=2
    )
    eager = build_model(spec).eval()
    x = torch.randn(args.batch, 1, args.size, args.size)
    forms, compile_s = {"eager": (eager, x)}, None
    with torch.inference_mode():
        last = build_model(spec).eval()
        last.load_state_dict(eager.state_dict())
        forms["channels_last"] = (
            last.to(memory_format=torch.channels_last),
            x.contiguous(memory_format=torch.channels_last),
        )
        forms["TorchScript frozen"] = (torch.jit.freeze(torch.jit.trace(eager, x)), x)
        forms["bf16 autocast"] = (_bf16(eager), x)
        forms["bf16 + channels_last"] = (_bf16(last), forms["channels_last"][1])
        if args.compile:
            start = time.perf_counter()
            compiled = torch.compile(eager)
            compiled(x)
            compile_s = time.perf_counter() - start
            forms["torch.compile"] = (compiled, x)
        reference = eager(x)
        outputs = {name: f(inp) for name, (f, inp) in forms.items()}  # warm-up, and the values compared
        times: dict[str, list[float]] = {name: [] for name in forms}
        for _ in range(args.rounds):
            for name, (f, inp) in forms.items():
                start = time.perf_counter()
                f(inp)
                f(inp)
                times[name].append((time.perf_counter() - start) / (2 * args.batch) * 1000)
    base = statistics.median(times["eager"])
    print(f"threads {args.threads}, batch {args.batch} x 1 x {args.size}^2, {args.rounds} interleaved rounds")
    header = ("form", "ms/img (median)", "fastest", "vs eager", "max |dlogit|", "px class differs")
    print(
        " ".join(f"{h:<20}" if i == 0 else f"{h:>{w}}" for i, (h, w) in enumerate(zip(header, (20, 16, 8, 9, 13, 17))))
    )
    for name, values in times.items():
        median = statistics.median(values)
        diff = float((outputs[name].float() - reference).abs().max())
        flips = float((outputs[name].argmax(1) != reference.argmax(1)).float().mean())
        print(f"{name:<20} {median:>16.1f} {min(values):>8.1f} {base / median:>8.2f}x {diff:>13.2e} {flips:>17.2e}")
    if compile_s is not None:
        print(f"torch.compile: {compile_s:.0f} s to compile and run the first batch")


def _bf16(model: torch.nn.Module):
    """``model`` called under CPU bfloat16 autocast."""

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x)

    return run


if __name__ == "__main__":
    main()
