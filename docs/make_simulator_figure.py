"""Regenerate docs/simulator.png: spectra of the synthetic default across log g, and d flux / d log g.

.venv/bin/python docs/make_simulator_figure.py [--version 1|2|emulated]   (default: the default version)
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from specscale.sim.instrument import air_to_vacuum
from specscale.sim.versions import DEFAULT_VERSION, atmosphere_config, make_atmosphere


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", type=lambda v: int(v) if v.isdigit() else v, default=DEFAULT_VERSION)
    version = ap.parse_args().version
    model = make_atmosphere(atmosphere_config({"version": version}))
    name = version if isinstance(version, str) else f"version {version}"
    wave = model.instrument.wave
    fig, axes = plt.subplots(4, 2, figsize=(14, 11), gridspec_kw={"width_ratios": [3, 1]})
    windows = {"Ca II 8542": (8520, 8570), "Na I 8183/8195": (8170, 8210)}
    for row, (teff, mh) in enumerate([(4000.0, 0.0), (5200.0, -1.0)]):
        ax, zoom = axes[2 * row]
        for logg, colour in zip((1.0, 2.5, 4.0, 5.0), ("C3", "C1", "C2", "C0")):
            flux = model.flux(torch.tensor([[teff, logg, mh, 0.0]], dtype=torch.float64))[0].numpy()
            ax.plot(wave, flux, lw=0.5, color=colour, label=f"log g {logg:g}")
            lo, hi = windows["Ca II 8542"] if row == 0 else windows["Na I 8183/8195"]
            sel = (wave > lo) & (wave < hi)
            zoom.plot(wave[sel], flux[sel], lw=1, color=colour)
        ax.set_title(
            f"simulator {name}, Teff {teff:.0f} K, [M/H] {mh:+.1f}, [alpha/M] 0: median-normalised PFS MR flux"
        )
        ax.legend(ncol=4, fontsize=8)
        zoom.set_title("Ca II 8542" if row == 0 else "Na I doublet")
        ax_j, zoom_j = axes[2 * row + 1]
        flux, jac = model.jacobian(torch.tensor([[teff, 3.0, mh, 0.0]], dtype=torch.float64))
        ax_j.plot(wave, jac[0, :, 1].numpy(), lw=0.5, color="k")
        ax_j.set_title(f"d flux / d log g at log g 3 (per dex), Teff {teff:.0f} K")
        for lam in (8498.02, 8542.09, 8662.14, 8183.26, 8194.82, 8806.76):
            ax_j.axvline(air_to_vacuum(lam), color="C3", lw=0.4, alpha=0.5)
        lo, hi = windows["Ca II 8542"] if row == 0 else windows["Na I 8183/8195"]
        sel = (wave > lo) & (wave < hi)
        zoom_j.plot(wave[sel], jac[0, sel, 1].numpy(), color="k")
    for ax in axes[-1]:
        ax.set_xlabel("vacuum wavelength (A)")
    fig.tight_layout()
    png = f"simulator_{version}.png" if isinstance(version, str) else f"simulator_v{version}.png"
    out = Path(__file__).with_name("simulator.png" if version == DEFAULT_VERSION else png)
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
