"""Streaming spectra from a Source into models.

Two ways in:
- :func:`train_loader`: a torch DataLoader over the NOISELESS training stars (flux, var_a, var_b,
  labels); noise is drawn on the model's device every step, so one file serves every noise level
  and every epoch sees fresh noise. Batches come from :class:`SlabBatchSampler`: each batch is a
  few contiguous slabs of rows, sorted, so a worker issues a handful of slice reads per batch
  instead of one HDF5 read per row (random single-row reads are ~6x slower).
- :func:`prefetch`: run an iterator (e.g. ``Source.iter_observed``) one item ahead in a thread,
  so reading and drawing noise overlaps with the consumer's BLAS work (streaming Ridge, LightGBM).

Preemption: SLURM signals a job's whole process group, so the loader's worker processes get the
same SIGTERM/SIGUSR1 as the trainer. Workers ignore SIGTERM, SIGUSR1 and SIGINT
(:func:`ignore_stop_signals`): the trainer decides when to stop, checkpoints at the current step,
and only then shuts the workers down with :func:`close_loader`. (Signals never reach threads in
Python, so ``prefetch``'s thread and torch's pin-memory thread need nothing of the kind.)
"""

from __future__ import annotations

import functools
import math
import queue
import signal
import threading

import numpy as np

from specscale.core.vocab import MagRange
from specscale.data.sources import Source
from specscale.sim.observe import expand_variances

# torch is imported inside the functions that use it: Ridge and LightGBM use this module's
# prefetch/cpu_count and should not pay torch's import time and memory. DataLoader needs no
# Dataset/Sampler base classes, only __getitem__/__len__ and an iterable of index lists.


class SlabBatchSampler:
    """Row batches for one epoch of the first ``n`` stars.

    Rows are cut into slabs of ``slab`` consecutive rows at a random offset, slabs are shuffled,
    and consecutive runs of ``batch`` rows of that order form the batches (each sorted). Stars are
    i.i.d. draws, so a slab is as random a sample as any; the per-epoch offset and shuffle vary
    which stars share a batch. The order depends only on (seed, epoch): a resumed run sees the
    same batches, and ``skip`` drops the first batches of an epoch that was interrupted."""

    def __init__(self, n: int, batch: int, slab: int, seed: int, shuffle: bool = True):
        if n < 1 or batch < 1 or slab < 1:
            raise ValueError(f"need n, batch, slab >= 1, got {n}, {batch}, {slab}")
        self.n, self.batch, self.slab, self.seed, self.shuffle = n, batch, slab, seed, shuffle
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def batches_per_epoch(self) -> int:
        return math.ceil(self.n / self.batch)

    def __len__(self) -> int:
        return self.batches_per_epoch() - self.skip

    def epoch_order(self) -> np.ndarray:
        """All rows in this epoch's order (slab-shuffled)."""
        if not self.shuffle:
            return np.arange(self.n)
        rng = np.random.default_rng([self.seed, self.epoch])
        offset = int(rng.integers(self.slab)) if self.n > self.slab else 0
        cuts = np.r_[0, np.arange(offset or self.slab, self.n, self.slab), self.n]
        cuts = np.unique(cuts)
        slabs = [np.arange(a, b) for a, b in zip(cuts[:-1], cuts[1:])]
        return np.concatenate([slabs[i] for i in rng.permutation(len(slabs))])

    def __iter__(self):
        order = self.epoch_order()
        for k in range(self.skip, self.batches_per_epoch()):
            yield np.sort(order[k * self.batch : (k + 1) * self.batch]).tolist()


def contiguous_runs(rows: np.ndarray) -> list[tuple[int, int]]:
    """[(start, stop), ...] of the maximal runs of consecutive values in sorted ``rows``."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.r_[0, breaks]
    stops = np.r_[breaks, rows.size]
    return [(int(rows[a]), int(rows[b - 1]) + 1) for a, b in zip(starts, stops)]


class NoiselessSpectra:
    """Noiseless stars of one split in a magnitude cell, read a batch at a time: ``ds[rows]`` with
    a sorted list of rows returns a dict of tensors flux (n, n_pix) float32, labels (n, 4) float32,
    rows (n,) int64 and the noise model at noise level 1 (sigma^2 = var_a * flux + var_b): where
    the source's variances factor (``Source.variance_basis``), ``noise_coef`` (n, 3) float32 -
    the consumer expands it with :func:`batch_variances` on its device, so a batch moves 16 KB per
    spectrum through worker IPC and the host-to-device copy instead of 48 KB - else var_a, var_b
    (n, n_pix) float32."""

    def __init__(self, source: Source, split: str, n: int, cell, compact: bool = True):
        self.source, self.split, self.n, self.cell = source, split, n, MagRange.parse(cell)
        self.compact = compact and source.variance_basis() is not None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, rows):
        import torch

        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        parts = [
            self.source.noiseless(self.split, np.arange(a, b), self.cell, variances=not self.compact)
            for a, b in contiguous_runs(rows)
        ]
        names = (
            ("flux", "noise_coef", "labels", "rows") if self.compact else ("flux", "var_a", "var_b", "labels", "rows")
        )
        return {name: torch.from_numpy(np.concatenate([getattr(p, name) for p in parts])) for name in names}


def batch_variances(batch: dict, basis):
    """(var_a, var_b) tensors (n, n_pix) of a loader batch: its own, or its ``noise_coef`` (n, 3)
    expanded with ``basis`` (3, n_pix), a tensor on the batch's device (``Source.variance_basis``)."""
    if "noise_coef" not in batch:
        return batch["var_a"], batch["var_b"]
    return expand_variances(batch["noise_coef"], basis)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: the worker ignores SIGTERM, SIGUSR1 and SIGINT, so a signal to
    the process group (a SLURM preemption, Ctrl-C) stops only the trainer, which checkpoints first
    and then closes the workers (:func:`close_loader`). A worker whose trainer died without closing
    it exits on its own: torch's worker loop checks every few seconds that its parent is alive.
    The worker was started with these signals blocked (:class:`StopSafeLoader`); one that arrived
    since is pending, and ignoring it before unblocking discards it."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


@functools.cache
def _stop_safe_loader_class():
    """A DataLoader that starts its workers with the stop signals blocked: between a worker's start
    and its ``worker_init_fn`` a process-group signal would otherwise kill it (seen under load),
    and the trainer would then fail instead of checkpointing. The child inherits the blocked mask;
    the trainer's own mask is restored at once, so a signal to it in that window is delivered then.
    Made once, on first use, so that torch is imported only by the loaders that need it."""
    from torch.utils.data import DataLoader

    class StopSafeLoader(DataLoader):
        def _get_iterator(self):
            old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                return super()._get_iterator()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)

    return StopSafeLoader


def close_loader(loader, timeout: float = 10.0) -> None:
    """Shut down the worker processes of a :func:`train_loader` DataLoader (persistent workers
    live until this, or until the loader is garbage collected): the orderly shutdown torch does
    itself, then SIGKILL for a worker still alive after ``timeout`` s (it ignores SIGTERM, which is
    torch's own fallback). A loader without workers, or already closed, is left as it is."""
    it = getattr(loader, "_iterator", None)
    if it is None or not hasattr(it, "_shutdown_workers"):
        return
    loader._iterator = None
    it._shutdown_workers()
    for w in getattr(it, "_workers", ()):
        w.join(timeout)
        if w.is_alive():
            w.kill()
            w.join(timeout)


def train_loader(
    source: Source,
    n: int,
    cell,
    *,
    batch: int,
    slab: int,
    seed: int,
    workers: int,
    prefetch_factor: int = 4,
    pin_memory: bool = False,
    shuffle: bool = True,
    split: str = "train",
    compact: bool = True,
):
    """(DataLoader, SlabBatchSampler) over the first ``n`` noiseless stars of ``split``
    (``compact=False``: full variance arrays even where they factor, for benchmarks). The workers
    ignore stop signals (see the module docstring); close them with :func:`close_loader`.

    Set the epoch with ``sampler.set_epoch(epoch, skip)`` before iterating."""
    import torch
    from torch.utils.data import DataLoader

    sampler = SlabBatchSampler(n, batch, slab, seed, shuffle)
    kwargs = {}
    if workers > 0:
        kwargs = {
            "persistent_workers": True,
            "prefetch_factor": prefetch_factor,
            "worker_init_fn": ignore_stop_signals,
        }
    loader_class = _stop_safe_loader_class() if workers > 0 else DataLoader
    loader = loader_class(
        NoiselessSpectra(source, split, n, cell, compact),
        batch_size=None,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    )
    return loader, sampler


class MemoryBatches:
    """The same batches as :func:`train_loader`, served from tensors already in memory (on
    ``device``): the no-I/O reference the loader's overhead is measured against."""

    def __init__(
        self,
        source: Source,
        n: int,
        cell,
        sampler: SlabBatchSampler,
        device="cpu",
        split: str = "train",
        chunk: int = 4096,
    ):
        import torch

        ds = NoiselessSpectra(source, split, n, cell)
        parts = [{k: v.to(device) for k, v in ds[np.arange(a, min(n, a + chunk))].items()} for a in range(0, n, chunk)]
        self.data = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        import torch

        batches = list(self.sampler)
        if not batches:
            return
        # one transfer of the epoch's order, then device-side slices (no per-step host copies)
        order = torch.as_tensor(np.concatenate(batches), dtype=torch.int64).to(self.data["flux"].device)
        start = 0
        for rows in batches:
            idx = order[start : start + len(rows)]
            start += len(rows)
            yield {k: v.index_select(0, idx) for k, v in self.data.items()}


def prefetch(iterable, depth: int = 1):
    """Iterate ``iterable`` in a background thread, ``depth`` items ahead (exceptions re-raised).
    Reading HDF5 and drawing noise release the GIL enough to overlap with BLAS in the consumer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work():
        try:
            for item in iterable:
                if stop.is_set():
                    return
                q.put(item)
            q.put(done)
        except BaseException as exc:
            q.put(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.01)
