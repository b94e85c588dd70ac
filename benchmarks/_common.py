"""Helpers the benchmark scripts share (run as ``python benchmarks/NAME.py``, so this module is on
sys.path as ``_common``)."""

from __future__ import annotations

import re
import time
from pathlib import Path

MODELS_RESULTS = Path(__file__).with_name("RESULTS-models.md")


def write_section(name: str, text: str, results: Path = MODELS_RESULTS) -> None:
    """Replace (or append) the section between <!-- name:start --> and <!-- name:end --> of
    ``results``, so each script rewrites only its own part of a shared RESULTS file."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{text.rstrip()}\n{end}\n"
    old = results.read_text() if results.exists() else "# Model benchmarks\n\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.S)
    results.write_text(pattern.sub(lambda _: block, old) if pattern.search(old) else old.rstrip() + "\n\n" + block)


def endless(batches, sampler):
    """The batches of epoch 0, 1, 2, ... (``sampler`` told each epoch first), without end."""
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from batches
        epoch += 1


def loader_rate(loader, sampler, batches: int) -> float:
    """Spectra/s the loader alone delivers over ``batches`` batches (epochs restart as needed)."""
    it = endless(loader, sampler)
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        n += next(it)["flux"].shape[0]
    return n / (time.perf_counter() - t0)


def train_rate(model, batches, steps: int, first_step: int = 0) -> tuple[float, float]:
    """(spectra/s, seconds) of ``steps`` ViT training steps on ``batches`` (epochs restart as needed),
    numbered from ``first_step``; the device is synchronised before and after the timed loop."""
    import torch

    it = endless(batches, model.sampler)
    if model.dev.type == "cuda":
        torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    for k in range(steps):
        b = next(it)
        n += b["flux"].shape[0]
        loss = model.train_step(b, first_step + k)
    loss.item()  # waits for the device
    dt = time.perf_counter() - t0
    return n / dt, dt
