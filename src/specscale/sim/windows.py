"""Wavelength windows: the pixels a model (and its references) may use.

A window is a named set of line regions or explicit ranges in vacuum Angstrom. Named regions are
centred on the lines that carry log g in the red arm (the air wavelengths of the line list,
converted to vacuum like the instrument's grid): the Ca II triplet (pressure-broadened wings in
dwarfs, stronger cores in giants), the Na I 8183/8195 doublet and Mg I 8807. A window spec is

    None | "full"                      every pixel
    "ca_triplet"                       a named window (see ``WINDOWS``)
    ["ca_triplet", "mg_8807"]          the union of named windows
    [[8490.0, 8680.0], ...]            explicit [lo, hi] ranges, vacuum Angstrom (may mix with names)

Windows sit in the simulation layer because models, their feature pipelines and the references
(Fisher, Bayes) all select pixels with them, and every one of those stages is above this one.
"""

from __future__ import annotations

import json

import numpy as np

from specscale.core.config import ConfigError
from specscale.sim.instrument import air_to_vacuum

# half-widths (Angstrom) cover the damping wings of dwarfs at R ~ 5000
_CA_II = (8498.02, 8542.09, 8662.14)
WINDOWS_AIR = {
    "ca_triplet": [(c - 15.0, c + 15.0) for c in _CA_II],
    "na_8190": [(8175.0, 8205.0)],
    "mg_8807": [(8796.0, 8818.0)],
}
WINDOWS = {
    name: [(float(air_to_vacuum(lo)), float(air_to_vacuum(hi))) for lo, hi in ranges]
    for name, ranges in WINDOWS_AIR.items()
}


def window_ranges(spec, where: str = "window") -> list[tuple[float, float]] | None:
    """The vacuum-Angstrom ranges of a window spec (None: the full spectrum). ConfigError names
    ``where`` for an unknown name or a malformed range."""
    if spec is None or spec == "full":
        return None
    items = [spec] if isinstance(spec, str) else list(spec)
    if not items:
        raise ConfigError(f"{where}: empty window; use 'full' for every pixel")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            if item not in WINDOWS:
                raise ConfigError(f"{where}[{i}]: unknown window {item!r}; known: {sorted(WINDOWS)} or [lo, hi] in A")
            out += WINDOWS[item]
            continue
        try:
            lo, hi = (float(v) for v in item)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}[{i}]: {item!r} is neither a window name nor a [lo, hi] range in A") from None
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ConfigError(f"{where}[{i}]: range {item!r} needs finite lo < hi (vacuum Angstrom)")
        out.append((lo, hi))
    return out


def window_mask(wave: np.ndarray, spec, where: str = "window") -> np.ndarray:
    """Boolean pixel mask of a window spec on the wavelength grid ``wave`` (vacuum Angstrom). A
    range that reaches past the grid (the arm) by more than one pixel, or holds none of its pixels,
    is an error naming ``where`` and the arm's range: a silently clipped window would not be the
    window the config asked for."""
    wave = np.asarray(wave, dtype=np.float64)
    ranges = window_ranges(spec, where)
    if ranges is None:
        return np.ones(wave.size, dtype=bool)
    edge = float(np.max(np.abs(np.diff(wave)))) if wave.size > 1 else 0.0
    arm = f"the arm covers {wave[0]:.1f}-{wave[-1]:.1f} A (vacuum)"
    mask = np.zeros(wave.size, dtype=bool)
    for lo, hi in ranges:
        inside = (wave >= lo) & (wave <= hi)
        if not inside.any():
            raise ConfigError(f"{where}: range {lo:.1f}-{hi:.1f} A holds no pixel of the arm; {arm}")
        if lo < wave[0] - edge or hi > wave[-1] + edge:
            raise ConfigError(f"{where}: range {lo:.1f}-{hi:.1f} A runs past the arm's edge; {arm}")
        mask |= inside
    return mask


def window_pixels(wave: np.ndarray, spec, where: str = "window", multiple: int = 1) -> np.ndarray:
    """Indices of the window's pixels on ``wave``, the last ``count % multiple`` of them dropped so
    that patches of ``multiple`` pixels tile the window (the ViT); ConfigError naming ``where``
    when fewer than ``multiple`` pixels remain."""
    idx = np.flatnonzero(window_mask(wave, spec, where))
    keep = idx.size - idx.size % multiple
    if keep == 0:
        raise ConfigError(f"{where}: the window holds {idx.size} pixels, fewer than one patch of {multiple}")
    return idx[:keep]


def window_label(window) -> str:
    """The window spec as stored in a file's attributes: "full" or its JSON."""
    return "full" if window is None or window == "full" else json.dumps(window)
