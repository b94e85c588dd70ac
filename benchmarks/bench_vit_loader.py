"""ViT training throughput (spectra/s) with the real loader (HDF5 -> DataLoader workers -> noise on
the device) against the same model fed the same batches from memory, measured in the same run;
plus what the loader alone delivers. Target: loader overhead under 10%.

    .venv/bin/python benchmarks/bench_vit_loader.py [--data /tmp/models20k.h5] [--model vit-tiny]
        [--steps 40] [--workers 1] [--threads 1]

Without --data a small dataset is simulated into a temporary directory. Results go to the
"vit_loader" section of benchmarks/RESULTS-models.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from _common import loader_rate, train_rate, write_section


def timed_steps(model, batches, steps: int, warmup: int, start_step: int = 0) -> float:
    """spectra/s over ``steps`` training steps after ``warmup`` untimed ones."""
    train_rate(model, batches, warmup, start_step)
    return train_rate(model, batches, steps, start_step + warmup)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data")
    ap.add_argument("--model", default="vit-tiny", choices=["vit", "vit-tiny"])
    ap.add_argument("--n-train", type=int, default=20_000)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3, help="alternating rounds of (memory, loader); medians reported")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the training process")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    import torch

    from specscale.core.vocab import Cell
    from specscale.data.loader import MemoryBatches
    from specscale.data.simulate import SimulationConfig, simulate
    from specscale.data.sources import open_source
    from specscale.models.registry import model_class

    torch.set_num_threads(args.threads)
    tmp = None
    data = args.data
    if data is None:
        tmp = tempfile.TemporaryDirectory()
        data = Path(tmp.name) / "bench.h5"
        simulate(
            data, SimulationConfig(n_train=min(args.n_train, 4096), n_val=64, n_test=64, device="cpu"), progress=False
        )
    src = open_source(data)
    n = min(args.n_train, src.n("train"))
    cls = model_class(args.model)
    params = dataclasses.replace(cls.Params(), workers=args.workers)
    model = cls(params, seed=0, device=args.device, n_threads=args.threads)
    cell = Cell(noise=1.0, mag="20.5-22.5", model="vit", n_train=n, seed=0)
    model.build(src, cell)
    memory = MemoryBatches(src, n, cell.mag, model.sampler, device=args.device)

    mem_rates, loader_rates = [], []
    step = 0
    for _ in range(args.repeat):  # alternate, so drifting machine load hits both alike
        mem_rates.append(timed_steps(model, memory, args.steps, args.warmup, step))
        step += args.steps + args.warmup
        loader_rates.append(timed_steps(model, model.loader, args.steps, args.warmup, step))
        step += args.steps + args.warmup
    only = loader_rate(model.loader, model.sampler, max(20, args.steps))
    # the same loader shipping full var_a/var_b arrays (the format before the per-star noise
    # coefficients): the baseline for what the compact batches save
    from specscale.data.loader import train_loader

    full, full_sampler = train_loader(
        src, n, cell.mag, batch=params.batch, slab=params.slab, seed=0, workers=args.workers, compact=False
    )
    only_full = loader_rate(full, full_sampler, max(20, args.steps))
    del full
    model.close()
    mem, real = statistics.median(mem_rates), statistics.median(loader_rates)
    overhead = 1.0 - real / mem
    text = "\n".join(
        [
            "## ViT training throughput: real loader vs memory (benchmarks/bench_vit_loader.py)",
            "",
            f"Measured {time.strftime('%Y-%m-%d %H:%M')} on `{platform.node()}` ({os.cpu_count()} cores visible, shared), "
            f"device {args.device}, torch {torch.__version__} with {args.threads} thread(s); model `{args.model}` "
            f"({model.net.n_params():,} parameters, batch {params.batch}, {params.slab}-row slabs), "
            f"{n:,} training stars of {Path(data).name}; {args.repeat} alternating rounds of {args.steps} steps after "
            f"{args.warmup} warm-up steps, medians.",
            "",
            "| feed | spectra/s | rounds |",
            "|---|---|---|",
            f"| from memory (same batches, same noise on the device) | {mem:,.0f} | {', '.join(f'{r:,.0f}' for r in mem_rates)} |",
            f"| real loader: HDF5 slabs in {args.workers} worker process(es) | {real:,.0f} | {', '.join(f'{r:,.0f}' for r in loader_rates)} |",
            f"| the loader alone (no model): flux + 3 noise coefficients per star (16 KB) | {only:,.0f} | |",
            f"| the loader alone, full var_a/var_b arrays (48 KB per spectrum, the baseline) | {only_full:,.0f} | |",
            "",
            f"Loader overhead: **{100 * overhead:.1f}%** of training throughput (target < 10%"
            f"{'; below zero: within the rounds spread' if overhead < 0 else ''}). "
            f"The loader alone delivers {only / mem:.1f}x what the model consumes here; the compact batches "
            f"make it {only / only_full:.2f}x the full-array loader.",
        ]
    )
    print(text)
    if not args.no_write:
        write_section("vit_loader", text)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
