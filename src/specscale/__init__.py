"""specscale: log g information in Subaru PFS MR spectra, from simulation to the scaling cube."""

__version__ = "0.1.0"
