"""Simulate a dataset and write it to HDF5 (the layout :class:`specscale.data.synthetic.SyntheticSource` reads).

Layout (one file):
    /wave                     (n_pix,) float64, vacuum Angstrom
    /{train,val,test}/flux    (N, n_pix) float32, median-normalised, noiseless
    /{split}/labels           (N, 4) float32: teff K, logg dex, mh dex, am dex
    /{split}/mag              (N,) float32: HSC-i AB mag in the simulation's mag_range
    /{split}/obs_u            (N, 3) float64: per-star quantiles (magnitude, seeing, zenith)
    /{split}/fmed0            (N,) float64: median f_lambda at HSC-i AB 0, erg s^-1 cm^-2 A^-1
    attrs: format, format_version, config (JSON: simulation, observation, atmosphere), seed,
           simulator_version, specscale_version, content_hash (sha256 of every array as written).

Stars are drawn in blocks of ``BLOCK`` from a Philox stream keyed by (seed, split, block), so a
star's labels do not depend on chunking or on the split sizes. Generation streams chunk by chunk
(memory independent of N), into ``FILE.h5.tmp-PID`` renamed at the end; on any error the
temporary file is removed and nothing that looks finished is left (a full disk or an I/O error:
:class:`specscale.core.files.WriteFailed`, one line naming the file and the errno). One writer per file: a lock
beside it (``FILE.h5.lock``) makes a second ``simulate`` of the same file fail at once naming the
first one's PID, and temporary files of dead writers are removed when the next one starts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from specscale import __version__
from specscale.core.config import ConfigError, config_hash, from_dict, section, to_jsonable
from specscale.core.files import atomic_write, hdf5_sink, remove_stale_temps, writer_lock
from specscale.core.hardware import resolve_device
from specscale.core.vocab import LABELS, PRIORS, SPLIT_CODE, SPLITS
from specscale.data.synthetic import SYNTHETIC_FORMAT
from specscale.sim.atmosphere import AtmosphereConfig
from specscale.sim.atmosphere_grid import GridAtmosphereConfig
from specscale.sim.atmosphere_v2 import AtmosphereV2Config
from specscale.sim.observe import ObservingConfig
from specscale.sim.versions import DEFAULT_VERSION, atmosphere_config, make_atmosphere, simulator_version

FORMAT_VERSION = 1
BLOCK = 4096


@dataclass(frozen=True)
class SimulationConfig:
    """What ``specscale simulate`` writes. Magnitudes are HSC-i AB."""

    prior: str = "lowT"
    n_train: int = 10_000
    n_val: int = 1_000
    n_test: int = 10_000
    seed: int = 42
    mag_range: tuple[float, float] = (20.5, 22.5)  # stored per-star magnitudes
    mag_limits: tuple[float, float] = (14.0, 26.0)  # cells a reader may ask for
    chunk: int = BLOCK
    device: str = "auto"  # "auto": CUDA when available

    def __post_init__(self):
        if self.prior not in PRIORS:
            raise ValueError(f"unknown prior {self.prior!r}; known: {sorted(PRIORS)}")
        for name in ("n_train", "n_val", "n_test"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"simulation.{name} must be a positive integer, got {v!r}")
        if not self.mag_limits[0] <= self.mag_range[0] <= self.mag_range[1] <= self.mag_limits[1]:
            raise ValueError("simulation.mag_range must lie inside simulation.mag_limits")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"simulation.seed must be an integer >= 0, got {self.seed!r}")
        if self.chunk < 1 or BLOCK % self.chunk:
            raise ValueError(f"simulation.chunk must divide {BLOCK}")

    def size(self, split: str) -> int:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}[split]


def simulation_configs(config: dict, **overrides):
    """(SimulationConfig, ObservingConfig, AtmosphereConfig, AtmosphereV2Config or
    GridAtmosphereConfig by ``atmosphere.version``) from a loaded config dict plus command-line overrides (None values
    are ignored)."""
    sim = dict(section(config, "simulation"))
    sim.update({k: v for k, v in overrides.items() if v is not None})
    return (
        from_dict(SimulationConfig, sim, "simulation"),
        from_dict(ObservingConfig, section(config, "observation"), "observation"),
        atmosphere_config(section(config, "atmosphere"), "atmosphere", default_version=DEFAULT_VERSION),
    )


def draw_stars(sim: SimulationConfig, split: str, block: int) -> dict[str, np.ndarray]:
    """Labels and observing quantiles of the stars of one block (deterministic, uniform)."""
    key = np.array([sim.seed, SPLIT_CODE[split]], dtype=np.uint64)
    rng = np.random.Generator(np.random.Philox(counter=np.array([0, block, 0, 0], dtype=np.uint64), key=key))
    u = rng.random((BLOCK, 4))
    prior = PRIORS[sim.prior]
    labels = np.stack([lo + u[:, i] * (hi - lo) for i, (lo, hi) in enumerate(prior[k] for k in LABELS)], 1)
    obs_u = rng.random((BLOCK, 3))
    mag = sim.mag_range[0] + obs_u[:, 0] * (sim.mag_range[1] - sim.mag_range[0])
    return {"labels": labels, "obs_u": obs_u, "mag": mag}


def _spectra(model, labels: np.ndarray, device, batch: int = 128):
    """Noiseless normalised flux (float32) and fmed0 (float64) in compute batches small enough
    to stay in cache on a CPU (large batches are slower per spectrum there)."""
    batch = batch if device.type == "cpu" else 4096
    fl, fm = [], []
    with torch.no_grad():
        for i in range(0, len(labels), batch):
            f, m = model.spectrum(torch.as_tensor(labels[i : i + batch], dtype=torch.float32, device=device))
            fl.append(f.cpu().numpy()), fm.append(m.double().cpu().numpy())
    return np.concatenate(fl), np.concatenate(fm)


def simulate(
    out,
    sim: SimulationConfig,
    obs: ObservingConfig | None = None,
    atm: AtmosphereConfig | AtmosphereV2Config | GridAtmosphereConfig | None = None,
    progress: bool = True,
) -> str:
    """Simulate train/val/test and write ``out``; returns the content hash."""
    obs = obs or ObservingConfig()
    atm = atm or atmosphere_config({}, default_version=DEFAULT_VERSION)
    out = Path(out)
    if out.suffix != ".h5":
        raise ConfigError(f"output {out} must end in .h5")
    if out.is_dir():
        raise ConfigError(f"output {out} is a directory; --out names the .h5 file to write")
    with writer_lock(out, "output"):  # one writer per file; a second fails at once naming the holder
        remove_stale_temps(out.parent, f"{out.name}.tmp-*")
        return _simulate(out, sim, obs, atm, progress)


def _simulate(out: Path, sim: SimulationConfig, obs: ObservingConfig, atm, progress: bool) -> str:
    model = make_atmosphere(atm)
    model.check_prior(PRIORS[sim.prior], f"simulation.prior={sim.prior!r}")
    device = torch.device(resolve_device(sim.device, "simulation.device"))
    wave = model.instrument.wave
    config = {"simulation": to_jsonable(sim), "observation": to_jsonable(obs), "atmosphere": to_jsonable(atm)}
    digest = hashlib.sha256()
    total = sum(sim.size(s) for s in SPLITS)
    bar = tqdm(total=total, unit="spec", desc=f"simulate {out.name}", disable=not progress, mininterval=2.0)
    try:
        # HDF5 writes through a sink that keeps the first write error (core.files): checked after
        # every chunk, so a full disk stops the run at once and HDF5 still closes the file cleanly
        with (
            atomic_write(out) as tmp,
            hdf5_sink(tmp) as sink,
            h5py.File(sink, "w", libver=("earliest", "v110"), track_order=False) as f,
        ):
            f.create_dataset("wave", data=wave, track_times=False)
            digest.update(wave.tobytes())
            for split in SPLITS:
                n = sim.size(split)
                g = f.create_group(split)
                rows = min(n, 256)
                ds = {
                    "flux": g.create_dataset("flux", (n, wave.size), "f4", chunks=(rows, wave.size), track_times=False),
                    "labels": g.create_dataset("labels", (n, 4), "f4", track_times=False),
                    "mag": g.create_dataset("mag", (n,), "f4", track_times=False),
                    "obs_u": g.create_dataset("obs_u", (n, 3), "f8", track_times=False),
                    "fmed0": g.create_dataset("fmed0", (n,), "f8", track_times=False),
                }
                for start in range(0, n, sim.chunk):
                    stop = min(n, start + sim.chunk)
                    block, off = divmod(start, BLOCK)
                    stars = draw_stars(sim, split, block)
                    sl = slice(off, off + stop - start)
                    labels = stars["labels"][sl]
                    flux, fmed0 = _spectra(model, labels, device)
                    bad = ~(np.isfinite(flux).all(1) & np.isfinite(fmed0) & (fmed0 > 0))
                    if bad.any():
                        i = int(np.argmax(bad))
                        raise FloatingPointError(
                            f"simulator produced NaN/inf flux for {split} row {start + i} (labels {labels[i].tolist()})"
                        )
                    arrays = {
                        "flux": flux,
                        "labels": labels.astype(np.float32),
                        "mag": stars["mag"][sl].astype(np.float32),
                        "obs_u": stars["obs_u"][sl],
                        "fmed0": fmed0,
                    }
                    for name, arr in arrays.items():
                        ds[name][start:stop] = arr
                        digest.update(np.ascontiguousarray(arr).tobytes())
                    sink.check()
                    bar.update(stop - start)
            content_hash = digest.hexdigest()[:16]
            f.attrs.update(
                {
                    "format": SYNTHETIC_FORMAT,
                    "format_version": FORMAT_VERSION,
                    "config": json.dumps(config, sort_keys=True),
                    "config_hash": config_hash(config),
                    "seed": sim.seed,
                    "simulator_version": f"{simulator_version(atm)}+atm.{config_hash(config['atmosphere'])}",
                    "specscale_version": __version__,
                    "content_hash": content_hash,
                    **model.provenance(),
                    "label_names": ",".join(LABELS),
                    "units": "wave: vacuum Angstrom; flux: median-normalised; teff K; logg, mh, am dex; mag HSC-i AB",
                }
            )
    finally:
        bar.close()
    return content_hash
