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


def loader_rate(loader, sampler, batches: int) -> float:
    """Spectra/s the loader alone delivers over ``batches`` batches (epochs restart as needed)."""
    n, epoch, t0 = 0, 0, time.perf_counter()
    while True:
        sampler.set_epoch(epoch)
        for b in loader:
            n += b["flux"].shape[0]
            batches -= 1
            if batches == 0:
                return n / (time.perf_counter() - t0)
        epoch += 1
