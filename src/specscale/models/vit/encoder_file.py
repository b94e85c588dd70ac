"""The file pre-training hands to fine-tuning: an encoder's weights (no head) with the architecture
and data they were made for. Written atomically, read with ``torch.load(weights_only=True)`` (only
tensors and plain data); a file for another architecture or spectrum length is refused, naming the
config key that differs."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from specscale.core.config import ConfigError
from specscale.core.files import atomic_write
from specscale.models.vit.network import SpectrumViT
from specscale.models.vit.params import ARCH_FIELDS, ViTParams, architecture

ENCODER_FORMAT = "specscale-vit-encoder"


def save_encoder(path: Path, net: SpectrumViT, p: ViTParams, n_pix: int, fingerprint: str, info: dict) -> None:
    """Write ``net``'s encoder weights with its architecture, spectrum length (pixels), the
    pre-training run's ``fingerprint`` and ``info`` (plain data) to ``path``, atomically."""
    ck = {
        "format": ENCODER_FORMAT,
        "architecture": architecture(p),
        "n_pix": int(n_pix),
        "fingerprint": fingerprint,
        "info": info,
        "encoder": {k: v.detach().to("cpu", copy=True) for k, v in net.encoder_state().items()},
    }
    with atomic_write(Path(path)) as tmp:
        torch.save(ck, tmp)


def load_encoder(path, p: ViTParams, n_pix: int, where: str) -> tuple[dict[str, torch.Tensor], str]:
    """(encoder weights, the pre-training run's fingerprint) from ``path`` for a ViT with params
    ``p`` on ``n_pix`` pixels. ConfigError naming ``where`` (the config key of the path) when the
    file is missing, unsafe, not an encoder file, or made for another architecture or length."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{where}={str(path)!r}: no such encoder file (run the pre-training first)")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ConfigError(
            f"{where}={str(path)!r}: holds objects other than tensors and plain data; not loaded"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise ConfigError(f"{where}={str(path)!r}: not a readable encoder file ({exc})") from exc
    if not isinstance(ck, dict) or ck.get("format") != ENCODER_FORMAT:
        raise ConfigError(f"{where}={str(path)!r}: not a {ENCODER_FORMAT} file")
    mine = architecture(p)
    differ = [k for k in ARCH_FIELDS if ck["architecture"].get(k) != mine[k]]
    if differ:
        k = differ[0]
        raise ConfigError(
            f"{where}={str(path)!r}: the encoder was pre-trained with {k}={ck['architecture'].get(k)!r}, this model "
            f"has {k}={mine[k]!r} (set the same {', '.join(differ)})"
        )
    if ck["n_pix"] != n_pix:
        raise ConfigError(
            f"{where}={str(path)!r}: the encoder was pre-trained on {ck['n_pix']} pixels, this model sees {n_pix} "
            "(a window needs an encoder pre-trained on the same window)"
        )
    return ck["encoder"], str(ck["fingerprint"])
