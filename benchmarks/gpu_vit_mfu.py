"""Model FLOP utilisation (MFU) of the DEFAULT ViT on a GPU, fed by the real loader and from GPU
memory, in one self-contained run (about 3 minutes on an H100/H200, most of it torch.compile).

    python benchmarks/gpu_vit_mfu.py                      # simulate 65,536 spectra on the GPU, then time
    python benchmarks/gpu_vit_mfu.py --data big.h5 --batch 1024 --steps 200
    python benchmarks/gpu_vit_mfu.py --smoke              # tiny sizes on the CPU: checks the code paths

MFU = achieved model FLOP/s / dense bf16 peak. Model FLOPs per spectrum = 6 x (matmul
parameters) x tokens + attention (12 x layers x tokens^2 x width), from
SpectrumViT.train_flops_per_spectrum; the peak comes from $SPECSCALE_PEAK_FLOPS or the table
PEAK_BF16 by device name (H100 SXM and H200: 989e12). Training is the real train_step: noise
drawn on the GPU every step, bf16 autocast, torch.compile, fused AdamW, gradient clipping;
attention through F.scaled_dot_product_attention (flash kernels). The loader is the real one:
DataLoader worker processes reading HDF5 slabs, pinned memory, persistent workers, prefetch.

Prints a markdown table; with $OUT set (the device tool) also writes $OUT/gpu_vit_mfu.md and
.json; without --smoke/--no-write it updates the "gpu_vit_mfu" section of RESULTS-models.md.
Runs with the package from the source tree (PYTHONPATH=src is set up by the script).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from _common import loader_rate, train_rate, write_section

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
ViT_SLAB_DEFAULT = 32

# dense bf16 tensor-core peaks (no sparsity), FLOP/s, by a substring of the device name
PEAK_BF16 = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "GH200": 989e12, "A100": 312e12, "L40S": 362e12}


def peak_flops(name: str) -> float | None:
    env = os.environ.get("SPECSCALE_PEAK_FLOPS")
    if env:
        return float(env)
    for key, value in PEAK_BF16.items():  # ordered: specific names first
        if key in name:
            return value
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="existing dataset; default: simulate --n-train spectra (on the GPU)")
    ap.add_argument("--n-train", type=int, default=65_536)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=150, help="timed steps per feed")
    ap.add_argument("--warmup", type=int, default=15, help="untimed steps first (compilation, autotuning)")
    ap.add_argument("--workers", type=int, default=None, help="default min(16, CPUs)")
    ap.add_argument("--prefetch", type=int, default=4)
    ap.add_argument("--slab", type=int, default=ViT_SLAB_DEFAULT, help="consecutive rows per read inside a batch")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--compile-mode", default="default", help="torch.compile mode (models.vit.compile_mode)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on any device: checks the code paths")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument(
        "--diagnose",
        action="store_true",
        help="also: draw loader batches but train on memory batches (CPU interference without copies)",
    )
    args = ap.parse_args()

    import torch

    from specscale.core.hardware import cpu_count
    from specscale.core.vocab import Cell
    from specscale.data.loader import MemoryBatches
    from specscale.data.simulate import SimulationConfig, simulate
    from specscale.data.sources import open_source
    from specscale.models.vit import ViTModel, ViTParams

    cuda = torch.cuda.is_available()
    dev = "cuda" if cuda else "cpu"
    cpus = cpu_count()
    workers = args.workers if args.workers is not None else min(16, cpus)
    params = ViTParams(
        batch=args.batch,
        workers=workers,
        prefetch=args.prefetch,
        slab=args.slab,
        compile=cuda and not args.no_compile,
        compile_mode=args.compile_mode,
    )
    n_train, steps, warmup = args.n_train, args.steps, args.warmup
    if args.smoke:  # the code paths, not the numbers
        params = dataclasses.replace(
            params, depth=2, width=64, heads=4, mlp=128, batch=16, workers=min(2, workers), compile=False
        )
        n_train, steps, warmup = 256, 4, 2
    if not cuda:
        torch.set_num_threads(max(1, min(4, cpus)))

    tmp = tempfile.TemporaryDirectory()
    t0 = time.perf_counter()
    if args.data:
        data = Path(args.data)
    else:
        data = Path(tmp.name) / "gpu_bench.h5"
        simulate(data, SimulationConfig(n_train=n_train, n_val=256, n_test=256, device=dev), progress=False)
    sim_s = time.perf_counter() - t0
    src = open_source(data)
    n_train = min(n_train, src.n("train"))
    cell = Cell(noise=1.0, mag="20.5-22.5", model="vit", n_train=n_train, seed=0)
    model = ViTModel(params, seed=0, device=dev, n_threads=cpus)
    model.build(src, cell)
    t0 = time.perf_counter()
    memory = MemoryBatches(src, n_train, cell.mag, model.sampler, device=dev)
    load_s = time.perf_counter() - t0
    flops = model.net.train_flops_per_spectrum()
    name = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
    peak = (
        peak_flops(name)
        if cuda
        else (float(os.environ["SPECSCALE_PEAK_FLOPS"]) if "SPECSCALE_PEAK_FLOPS" in os.environ else None)
    )

    t0 = time.perf_counter()
    train_rate(model, memory, warmup, 0)  # compile + autotune
    warm_s = time.perf_counter() - t0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    mem_rate, mem_s = train_rate(model, memory, steps, warmup)
    train_rate(model, model.loader, max(2, warmup // 3), warmup + steps)  # start the workers
    ld_rate, ld_s = train_rate(model, model.loader, steps, 2 * warmup + steps)
    only = loader_rate(model.loader, model.sampler, max(steps, 20))
    if args.diagnose:
        import itertools

        class Both:  # loader batches are fetched (and pinned) but the step uses the memory batch
            def __iter__(self):
                for m, b in zip(memory, model.loader):
                    m["flux"].add_(0 * b["flux"][:1, :1].to(m["flux"].device, non_blocking=True))
                    yield m

        both, _ = train_rate(model, Both(), steps, 3 * warmup + 2 * steps)
        copy_only = []
        for b in itertools.islice(iter(model.loader), 20):
            t0 = time.perf_counter()
            {k: v.to(model.dev, non_blocking=True) for k, v in b.items()}
            if cuda:
                torch.cuda.synchronize()
            copy_only.append(time.perf_counter() - t0)
        print(
            f"DIAG fetch loader + train from memory: {both:,.0f} spectra/s; H2D copy of one batch "
            f"{1e3 * sorted(copy_only)[len(copy_only) // 2]:.1f} ms (median)"
        )
    gpu_mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    model.close()

    res = {
        "device": name,
        "torch": torch.__version__,
        "cpus": cpus,
        "workers": workers,
        "batch": params.batch,
        "compiled": params.compile,
        "compile_mode": params.compile_mode,
        "amp_bf16": model.use_amp,
        "n_params": model.net.n_params(),
        "tokens": model.net.n_tokens,
        "flops_per_spectrum": flops,
        "peak_flops": peak,
        "n_train": n_train,
        "steps": steps,
        "simulate_s": sim_s,
        "load_to_memory_s": load_s,
        "warmup_s": warm_s,
        "memory_spectra_per_s": mem_rate,
        "loader_spectra_per_s": ld_rate,
        "loader_only_spectra_per_s": only,
        "memory_step_ms": 1e3 * mem_s / steps,
        "loader_step_ms": 1e3 * ld_s / steps,
        "memory_tflops": flops * mem_rate / 1e12,
        "loader_tflops": flops * ld_rate / 1e12,
        "mfu_memory": flops * mem_rate / peak if peak else None,
        "mfu_loader": flops * ld_rate / peak if peak else None,
        "loader_overhead": 1 - ld_rate / mem_rate,
        "gpu_peak_mem_gib": gpu_mem,
        "smoke": args.smoke,
    }
    pct = lambda v: f"{100 * v:.1f}%" if v is not None else "n/a (no peak for this device)"
    text = "\n".join(
        [
            "## ViT MFU on a GPU (benchmarks/gpu_vit_mfu.py)"
            + (" - SMOKE RUN, not a measurement" if args.smoke else ""),
            "",
            f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {name} (torch {torch.__version__}, {cpus} CPUs, "
            f"{workers} loader workers, {params.slab}-row slabs); ViT {params.depth} layers x width {params.width}, {res['n_params']:,} parameters, "
            f"{res['tokens']} tokens, batch {params.batch}, bf16 autocast {model.use_amp}, torch.compile {params.compile} (mode {params.compile_mode}); "
            f"{n_train:,} training spectra (simulated in {sim_s:.0f} s); {steps} timed steps per feed after {warmup} warm-up "
            f"steps ({warm_s:.0f} s incl. compilation). Model FLOPs per spectrum (train step) {flops / 1e9:.2f} G; "
            f"peak {peak / 1e12 if peak else float('nan'):.0f} TFLOP/s dense bf16.",
            "",
            "| feed | spectra/s | step (ms) | model TFLOP/s | MFU |",
            "|---|---|---|---|---|",
            f"| from GPU memory | {mem_rate:,.0f} | {res['memory_step_ms']:.1f} | {res['memory_tflops']:.1f} | {pct(res['mfu_memory'])} |",
            f"| real loader (HDF5, {workers} workers, pinned) | {ld_rate:,.0f} | {res['loader_step_ms']:.1f} | {res['loader_tflops']:.1f} | {pct(res['mfu_loader'])} |",
            f"| loader alone (no model) | {only:,.0f} | | | |",
            "",
            f"Loader overhead {100 * res['loader_overhead']:.1f}%; GPU peak memory "
            f"{f'{gpu_mem:.1f} GiB' if gpu_mem is not None else 'n/a'}.",
        ]
    )
    print(text)
    print(json.dumps(res))
    out = os.environ.get("OUT")
    if out:
        Path(out, "gpu_vit_mfu.md").write_text(text + "\n")
        Path(out, "gpu_vit_mfu.json").write_text(json.dumps(res, indent=2) + "\n")
    if not (args.smoke or args.no_write):
        write_section("gpu_vit_mfu", text)
    tmp.cleanup()


if __name__ == "__main__":
    main()
