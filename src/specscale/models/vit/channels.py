"""What the network sees of a spectrum: the ``inputs`` channels (``network.input_channels``), then
the derived channels and the error mask of ``ViTParams``, computed per spectrum on the fly (the same
function for training batches, validation and test), before the tokenizer.

- ``d_flux``: the derivative of the flux along wavelength, per pixel (central differences; the
  pixels are uniform in wavelength, 0.427 Angstrom on the PFS red arm): line wings become contrast.
- ``highpass``: the flux minus its running mean over ``highpass_pixels`` pixels: lines without the
  continuum's shape.
- ``error_mask`` k > 0: pixels whose pipeline error exceeds k x the spectrum's median error (the sky
  lines) are set to 0 in every channel (the flux channel holds flux - 1, so 0 is the continuum) and a
  last channel is 1 there. The derived channels are computed from the masked flux, so a sky line's
  residual does not leak into them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specscale.models.vit.network import input_channels
from specscale.models.vit.params import ViTParams


def model_input(p: ViTParams, flux: torch.Tensor, error: torch.Tensor) -> torch.Tensor:
    """(B, p.n_channels(), n_pix) model input from observed flux and pipeline error (B, n_pix)."""
    bad = error_mask(error, p.error_mask) if p.error_mask else None
    if bad is not None:
        flux = torch.where(bad, torch.ones_like(flux), flux)  # flux - 1 = 0: the continuum level
    x = input_channels(p.inputs, flux, error)
    extra = [derived_channel(name, flux - 1.0, p.highpass_pixels) for name in p.extra_channels]
    if extra:
        x = torch.cat([x, torch.stack(extra, dim=1)], dim=1)
    if bad is None:
        return x
    x = x.masked_fill(bad[:, None], 0.0)
    return torch.cat([x, bad[:, None].to(x.dtype)], dim=1)


def error_mask(error: torch.Tensor, ratio: float) -> torch.Tensor:
    """(B, n_pix) bool: pixels whose error exceeds ``ratio`` x their spectrum's median error (none
    where the median is 0, i.e. at noise level 0)."""
    med = error.median(dim=1, keepdim=True).values
    return (error > ratio * med) & (med > 0)


def derived_channel(name: str, flux: torch.Tensor, width: int) -> torch.Tensor:
    """(B, n_pix) channel ``name`` (d_flux | highpass) of the flux (B, n_pix)."""
    if name == "d_flux":
        padded = F.pad(flux[:, None], (1, 1), mode="replicate")[:, 0]  # the edges' slope is one-sided
        return 0.5 * (padded[:, 2:] - padded[:, :-2])
    if name == "highpass":
        return flux - running_mean(flux, width)
    raise ValueError(f"extra_channels: unknown channel {name!r}")


def running_mean(flux: torch.Tensor, width: int) -> torch.Tensor:
    """(B, n_pix) mean over a centred window of ``width`` (odd) pixels, the edges replicated."""
    padded = F.pad(flux[:, None], (width // 2, width // 2), mode="replicate")
    return F.avg_pool1d(padded, width, stride=1)[:, 0]
