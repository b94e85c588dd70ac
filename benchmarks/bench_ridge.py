"""Streaming Ridge: time of the X^T X accumulation per 10k x 4096 rows against numpy's one-shot
X.T @ X on the same in-memory data (measured in the same run), peak memory for 10k vs 40k
streamed rows (it must not grow with N), the alpha-path solve, and the end-to-end streaming pass
over a real dataset (HDF5 read + noise + accumulation) when --data is given.

    .venv/bin/python benchmarks/bench_ridge.py [--data /tmp/models20k.h5] [--threads 1]

BLAS is limited to --threads threads for both sides (default 1: this machine is shared).
Results go to the "ridge" section of benchmarks/RESULTS-models.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from _common import write_section

P = 4096
CHUNK = 4096  # RidgeParams.batch


def _rows(n: int, seed: int = 0):
    """n x P float32 flux-like rows, made chunk by chunk (never all in memory)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        yield (1.0 + 0.1 * rng.standard_normal((m, P), dtype=np.float32)), rng.standard_normal(m)


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM: per address space, so a child started by exec
    does not inherit its parent's peak the way ru_maxrss does)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child_stream(n: int) -> None:
    """Accumulate n streamed rows; print time and peak RSS (run in a fresh process)."""
    from specscale.models.ridge import RidgeAccumulator

    acc = RidgeAccumulator(P)
    t0 = time.perf_counter()
    for X, y in _rows(n):
        acc.add(X, y)
    secs = time.perf_counter() - t0
    print(json.dumps({"n": n, "seconds": secs, "peak_rss_mb": peak_rss_mb()}))


def child_numpy(n: int) -> None:
    """numpy's way for contrast: the whole float64 matrix in memory, one X.T @ X."""
    import numpy as np

    X = np.concatenate([x for x, _ in _rows(n)]).astype(np.float64)
    t0 = time.perf_counter()
    X.T @ X
    secs = time.perf_counter() - t0
    print(json.dumps({"n": n, "seconds": secs, "peak_rss_mb": peak_rss_mb()}))


def _run_child(kind: str, n: int, threads: int) -> dict:
    env = {
        **os.environ,
        "OPENBLAS_NUM_THREADS": str(threads),
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }
    out = subprocess.run(
        [sys.executable, __file__, f"--child-{kind}", str(n)], env=env, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="a specscale dataset for the end-to-end pass (>= 10k training stars)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="timings per variant (the median is reported)")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--child-stream", type=int)
    ap.add_argument("--child-numpy", type=int)
    args = ap.parse_args()
    if args.child_stream:
        return child_stream(args.child_stream)
    if args.child_numpy:
        return child_numpy(args.child_numpy)

    import numpy as np
    from threadpoolctl import threadpool_info, threadpool_limits

    from specscale.models.ridge import RidgeAccumulator

    n = 10_000
    rows = list(_rows(n))
    X32 = np.concatenate([x for x, _ in rows])
    y = np.concatenate([t for _, t in rows])
    res = {}
    with threadpool_limits(args.threads):
        blas = [
            f"{i['internal_api']} {i.get('version')} ({i['num_threads']} thr)"
            for i in threadpool_info()
            if i["user_api"] == "blas"
        ]

        def numpy_once():
            X = X32.astype(np.float64)  # the same float64 conversion the accumulator does, untimed
            t0 = time.perf_counter()
            X.T @ X
            return time.perf_counter() - t0

        def numpy_with_conversion():
            t0 = time.perf_counter()
            X = X32.astype(np.float64)
            X.T @ X
            return time.perf_counter() - t0

        def stream_once():
            acc = RidgeAccumulator(P)
            t0 = time.perf_counter()
            for s in range(0, n, CHUNK):
                acc.add(X32[s : s + CHUNK], y[s : s + CHUNK])
            return time.perf_counter() - t0, acc

        t_np = float(np.median([numpy_once() for _ in range(args.repeat)]))
        t_np_conv = float(np.median([numpy_with_conversion() for _ in range(args.repeat)]))
        stream = [stream_once() for _ in range(args.repeat)]
        t_stream = float(np.median([s[0] for s in stream]))
        # correctness of what was timed: the accumulated Gram equals numpy's (after centring)
        acc = stream[0][1]
        Xc = X32.astype(np.float64) - acc.shift
        err = np.max(np.abs(acc.gram - Xc.T @ Xc)) / np.max(np.abs(Xc.T @ Xc))
        t0 = time.perf_counter()
        acc.solve()
        t_solve = time.perf_counter() - t0
        res.update(numpy_s=t_np, numpy_conv_s=t_np_conv, stream_s=t_stream, rel_err=float(err), solve_s=t_solve)

        def kernel_solve(m: int) -> float:
            """Accumulate and solve m < P rows (the n x n kernel path)."""
            acc = RidgeAccumulator(P)
            t0 = time.perf_counter()
            for s in range(0, m, CHUNK):
                acc.add(X32[s : min(s + CHUNK, m)], y[s : min(s + CHUNK, m)])
            acc.solve()
            return time.perf_counter() - t0

        kernel = {m: float(np.median([kernel_solve(m) for _ in range(args.repeat)])) for m in (400, 2000)}

        if args.data:
            from specscale.data.loader import prefetch
            from specscale.data.sources import open_source

            src = open_source(args.data)
            m = min(n, src.n("train"))
            for name, wrap in (("serial", lambda it: it), ("prefetch", prefetch)):
                acc = RidgeAccumulator(P)
                t0 = time.perf_counter()
                for obs in wrap(src.iter_observed("train", "20.5-22.5", 1.0, 0, n=m, batch=CHUNK)):
                    acc.add(obs.flux, obs.labels[:, 1])
                res[f"e2e_{name}_s"] = (time.perf_counter() - t0) * n / m
            t0 = time.perf_counter()
            for _ in src.iter_observed("train", "20.5-22.5", 1.0, 0, n=m, batch=CHUNK):
                pass
            res["read_only_s"] = (time.perf_counter() - t0) * n / m

    mem = {k: _run_child("stream", k, args.threads) for k in (10_000, 40_000)}
    mem_np = {k: _run_child("numpy", k, args.threads) for k in (10_000, 40_000)}

    lines = [
        "## Streaming Ridge (benchmarks/bench_ridge.py)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} on `{platform.node()}` ({os.cpu_count()} cores visible, shared), "
        f"BLAS limited to {args.threads} thread(s): {', '.join(blas) or 'unknown'}; "
        f"env OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}. "
        f"Rows of {P} float32 pixels, chunks of {CHUNK}, median of {args.repeat}.",
        "",
        "| quantity (per 10k x 4096 rows) | seconds | ratio to numpy X.T @ X |",
        "|---|---|---|",
        f"| numpy `X.T @ X` on the in-memory float64 matrix (baseline) | {t_np:.2f} | 1.00 |",
        f"| numpy incl. float32 -> float64 conversion | {t_np_conv:.2f} | {t_np_conv / t_np:.2f} |",
        f"| streaming accumulation (shift, chunk X.T @ X, sums) on the same data | {t_stream:.2f} | **{t_stream / t_np:.2f}** |",
    ]
    if args.data:
        lines += [
            f"| end to end from {Path(args.data).name}: read + noise + accumulate, serial | {res['e2e_serial_s']:.2f} | {res['e2e_serial_s'] / t_np:.2f} |",
            f"| end to end, reading one chunk ahead in a thread (what `RidgeModel.fit` does) | {res['e2e_prefetch_s']:.2f} | {res['e2e_prefetch_s'] / t_np:.2f} |",
            f"| of which reading + noise alone (`Source.iter_observed`) | {res['read_only_s']:.2f} | {res['read_only_s'] / t_np:.2f} |",
        ]
    lines += [
        "",
        f"Accumulated Gram matrix vs numpy: max relative difference {res['rel_err']:.1e}. "
        f"Alpha path (one 4096 x 4096 eigendecomposition + standardisation): {t_solve:.1f} s, once per cell.",
        "",
        "| fewer stars than pixels: accumulate + solve by the n x n kernel | seconds | ratio to the 4096^2 solve alone |",
        "|---|---|---|",
        *(f"| {m} stars | {t:.2f} | {t / t_solve:.3f} |" for m, t in kernel.items()),
        "",
        "| peak RSS (fresh process) | 10k rows | 40k rows |",
        "|---|---|---|",
        f"| streaming accumulation | {mem[10_000]['peak_rss_mb']:.0f} MB | {mem[40_000]['peak_rss_mb']:.0f} MB |",
        f"| numpy, whole matrix in memory (for contrast) | {mem_np[10_000]['peak_rss_mb']:.0f} MB | {mem_np[40_000]['peak_rss_mb']:.0f} MB |",
        "",
        f"Streaming time for 40k rows: {mem[40_000]['seconds']:.1f} s ({mem[40_000]['seconds'] / 4:.2f} s per 10k). "
        "Target: streaming within 1.3x of numpy, memory flat in N.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("ridge", text)


if __name__ == "__main__":
    main()
