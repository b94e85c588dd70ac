"""Model atmospheres from atmosnet (Nidever's neural-network emulator of ATLAS12/C3K Kurucz
models, 80 layers in column mass), with its two known traps fixed:

* atmosnet imports ``scipy.integrate.trapz``, removed from SciPy 1.14: it is aliased to
  ``trapezoid`` before atmosnet is imported;
* its networks were trained on log10 of each column but the package exponentiates with e, so the
  physical value is ``10 ** ln(output)``. With this fix 6000 K / log g 1 gives T = 3,693 K in
  the top layer (MARCS: 3,935 K) and a gas pressure equal to g * RHOX (hydrostatic) in every layer.

Columns of a Kurucz model: RHOX (g cm^-2), T (K), P (dyn cm^-2), XNE (cm^-3), ABROSS, ACCRAD,
VTURB, FLXCNV. SME needs RHOX, T, XNE, XNA (cm^-3, all particles but electrons) and RHO
(g cm^-3): XNA = P / kT - XNE and RHO = XNA * (mean mass per atom of the mixture).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np

# atmosnet's [alpha/Fe] range; the lowT prior reaches -0.25, so the structure of a star with
# [alpha/M] < -0.2 is taken at -0.2 (its line opacity still uses the star's own abundances)
ALPHA_RANGE = (-0.2, 0.6)
K_BOLTZ = 1.380649e-16  # erg K^-1
AMU = 1.66053907e-24  # g

# atomic masses (amu) of H .. Zn, enough for the mean mass per atom (heavier elements: 2.2 Z)
_MASSES = [
    1.008,
    4.0026,
    6.94,
    9.012,
    10.81,
    12.011,
    14.007,
    15.999,
    18.998,
    20.180,
    22.990,
    24.305,
    26.982,
    28.085,
    30.974,
    32.06,
    35.45,
    39.948,
    39.098,
    40.078,
    44.956,
    47.867,
    50.942,
    51.996,
    54.938,
    55.845,
    58.933,
    58.693,
    63.546,
    65.38,
]


def mean_mass_amu(abund_by_number: np.ndarray) -> float:
    """Mean mass per atom (amu) of a mixture given number fractions N_Z / N_tot for Z = 1..99."""
    z = np.arange(1, abund_by_number.size + 1)
    masses = np.where(z <= len(_MASSES), np.interp(z, np.arange(1, len(_MASSES) + 1), _MASSES), 2.2 * z)
    frac = np.nan_to_num(abund_by_number, nan=0.0)
    return float(np.sum(frac * masses) / np.sum(frac))


# atmosnet 1.0.1 loads its networks with dill (a pickle) from its own data folder: only these
# files, byte for byte as in the pinned wheel, are ever unpickled
ATMOSNET_PICKLES = {
    "atmosnet_c3k_300neurons_cool.pkl": "07a5258162bfb98deb2472b87646b1a84a55cf93994a009bf17c4178187c8618",
    "atmosnet_c3k_300neurons_hot.pkl": "1dfdbd14058e7d9ee40d5bb2c9038545ef61456e7d55b9002a1014af14d3810a",
}


def check_atmosnet_files(folder: Path) -> None:
    """Refuse to let atmosnet unpickle anything but the pinned release's two network files."""
    found = sorted(p.name for p in folder.glob("*.pkl"))
    if found != sorted(ATMOSNET_PICKLES):
        raise ValueError(f"{folder}: expected atmosnet's files {sorted(ATMOSNET_PICKLES)}, found {found}")
    for name, digest in ATMOSNET_PICKLES.items():
        if hashlib.sha256((folder / name).read_bytes()).hexdigest() != digest:
            raise ValueError(
                f"{folder / name}: not the file of atmosnet 1.0.1 (sha256 differs); refusing to unpickle it"
            )


@functools.cache
def _models():
    import importlib.util

    import scipy.integrate

    if not hasattr(scipy.integrate, "trapz"):
        scipy.integrate.trapz = scipy.integrate.trapezoid
    spec = importlib.util.find_spec("atmosnet")
    if spec is None or spec.origin is None:
        raise ValueError("atmosnet is not installed: pip install -e '.[synth]'")
    check_atmosnet_files(Path(spec.origin).parent / "data")
    from atmosnet import models

    return models.load_models()


def atmosnet_version() -> str:
    from importlib.metadata import version

    return version("atmosnet")


def kurucz_layers(teff: float, logg: float, mh: float, am: float) -> dict[str, np.ndarray]:
    """The atmosnet model at (Teff K, log g dex, [M/H] dex taken as [Fe/H], [alpha/M] dex taken as
    [alpha/Fe], clipped to :data:`ALPHA_RANGE`): {"rhox", "temp", "pgas", "xne"} per layer, top
    first, physical units."""
    model = _models()
    am = min(max(am, ALPHA_RANGE[0]), ALPHA_RANGE[1])  # the structure only; SME gets the true [alpha/M]
    labels = model._data[0].mklabels({"teff": teff, "logg": logg, "fe_h": mh, "alpha_fe": am})
    atm = model(labels)
    if atm is None:
        raise ValueError(f"labels {teff, logg, mh, am} outside atmosnet's range {model.ranges.tolist()}")
    data = 10 ** np.log(atm.data + 1e-16)  # undo the package's exp(): the nets output log10
    return {"rhox": data[:, 0], "temp": data[:, 1], "pgas": data[:, 2], "xne": data[:, 3]}


def sme_atmosphere(teff: float, logg: float, mh: float, am: float, abund, vturb: float):
    """A pysme ``Atmosphere`` (method "embedded", plane-parallel, depth scale RHOX) built from
    the atmosnet layers; ``abund`` is the pysme ``Abund`` of the star, ``vturb`` km/s."""
    from pysme.atmosphere.atmosphere import Atmosphere

    lay = kurucz_layers(teff, logg, mh, am)
    n_tot = lay["pgas"] / (K_BOLTZ * lay["temp"])
    xna = n_tot - lay["xne"]
    fractions = 10 ** (np.asarray(abund("H=12", raw=True), dtype=float) - 12.0)
    rho = xna * mean_mass_amu(fractions) * AMU
    atmo = Atmosphere(
        teff=teff,
        logg=logg,
        monh=mh,
        vturb=vturb,
        method="embedded",
        geom="PP",
        depth="RHOX",
        interp="RHOX",
        source="atmosnet",
    )
    atmo.abund = abund
    atmo.rhox = lay["rhox"]
    atmo.temp = lay["temp"]
    atmo.xne = lay["xne"]
    atmo.xna = xna
    atmo.rho = rho
    return atmo
