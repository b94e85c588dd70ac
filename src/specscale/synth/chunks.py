"""A chunk of stars -> one ``.npz`` of synthesised spectra: the unit of work of the synthesis
workflow (one job per chunk, resumable: a chunk whose file exists is not redone).

Chunk file keys: ``labels`` (n, 4) float64 (Teff K, log g dex, [M/H] dex, [alpha/M] dex),
``flux`` (n, 4096) float32 (median-normalised PFS MR flux), ``ln_fmed0`` (n,) float64 (ln of
fmed0, erg s^-1 cm^-2 A^-1 at HSC-i AB 0), ``seconds`` (n,) float64 (CPU seconds per star),
``ok`` (n,) bool (False: the synthesis failed, flux and ln_fmed0 are NaN). Written to a temporary
file and renamed (``os.replace``), so a killed job leaves no partial chunk.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from specscale.core.files import atomic_write
from specscale.sim.instrument import Instrument
from specscale.synth.config import SynthesisConfig
from specscale.synth.synthesize import FineFlux, sme_fine_flux, synthesize_star

log = logging.getLogger(__name__)

CHUNK_KEYS = ("labels", "flux", "ln_fmed0", "seconds", "ok")
# an absorption spectrum divided by its median stays well below this; SME blew up once in 288
# stars (5749 K, log g 1.59, [M/H] -1.56, [alpha/M] -0.23: normalised flux up to 2e11)
MAX_NORMALISED_FLUX = 3.0


def write_chunk(
    config: SynthesisConfig,
    labels: np.ndarray,
    out: str | Path,
    fine_flux: FineFlux = sme_fine_flux,
    repair: bool = False,
) -> bool:
    """Synthesise the stars ``labels`` (n, 4) into ``out``; False (nothing done) when ``out``
    already exists, unless ``repair``: then only its failed stars are synthesised again (False
    when it has none). A star whose synthesis raises is logged and kept as a NaN row (ok False)."""
    out = Path(out)
    labels = np.atleast_2d(np.asarray(labels, dtype=np.float64))
    n = len(labels)
    flux = np.full((n, Instrument().n_pix), np.nan, dtype=np.float32)
    ln_fmed0 = np.full(n, np.nan)
    seconds = np.zeros(n)
    ok = np.zeros(n, dtype=bool)
    if out.exists():
        if not repair:
            log.info("%s exists: chunk skipped", out)
            return False
        with np.load(out, allow_pickle=False) as data:
            if not np.array_equal(data["labels"], labels):
                raise ValueError(f"{out}: its labels are not those of this chunk; remove it to redo it")
            flux, ln_fmed0, seconds, ok = data["flux"], data["ln_fmed0"], data["seconds"], data["ok"]
        if ok.all():
            return False
    for i, theta in enumerate(labels):
        if ok[i]:
            continue
        try:
            f, lnf, sec = synthesize_star(config, theta, fine_flux)
        except Exception as exc:  # one bad star must not lose the chunk
            log.warning("star %s failed: %s", np.round(theta, 3).tolist(), exc)
            continue
        flux[i], ln_fmed0[i], seconds[i], ok[i] = f, lnf, sec, True
        log.info("star %d/%d %s: %.1f CPU-s", i + 1, n, np.round(theta, 3).tolist(), sec)
    with atomic_write(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, labels=labels, flux=flux, ln_fmed0=ln_fmed0, seconds=seconds, ok=ok)
    return True


def read_chunks(paths) -> dict[str, np.ndarray]:
    """The stars of several chunk files, concatenated; failed stars and stars whose normalised
    flux leaves (0, MAX_NORMALISED_FLUX) (a numerical failure of the synthesis) dropped."""
    parts: dict[str, list] = {k: [] for k in CHUNK_KEYS}
    for path in paths:
        with np.load(path, allow_pickle=False) as data:
            missing = set(CHUNK_KEYS) - set(data.files)
            if missing:
                raise ValueError(f"{path}: not a synthesis chunk (missing {sorted(missing)})")
            for k in CHUNK_KEYS:
                parts[k].append(data[k])
    if not parts["labels"]:
        raise ValueError("no chunk files given")
    out = {k: np.concatenate(v) for k, v in parts.items()}
    keep = out.pop("ok")
    sane = np.all((out["flux"] > 0) & (out["flux"] < MAX_NORMALISED_FLUX), axis=1)
    for theta in out["labels"][keep & ~sane]:
        log.warning(
            "star %s dropped: normalised flux outside (0, %g)", np.round(theta, 3).tolist(), MAX_NORMALISED_FLUX
        )
    keep &= sane
    return {k: v[keep] for k, v in out.items()}
