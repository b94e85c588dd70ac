"""The network: spectra in, z-scored labels out, and the two functions a reader of the
architecture needs beside it, what goes in (``input_channels``) and what is minimised
(``loss_function``).

Top-down: ``SpectrumViT`` tokenizes patches with a Conv1d, prepends a CLS token, adds a positional
embedding (learned, or ``sinusoidal_log_lambda``), runs pre-LN ``Block``s (``Attention`` then
``MLP``) and reads the labels off the final-LN CLS token with a linear head.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from specscale.core.config import ConfigError
from specscale.models.vit.params import INPUTS, LOSSES, ViTParams


class Attention(nn.Module):
    """Multi-head self-attention over (B, tokens, width) via F.scaled_dot_product_attention."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        """(B, T, C) tokens -> (B, T, C) attended tokens."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # flash / memory-efficient kernels on CUDA
        return self.drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))


class MLP(nn.Module):
    """Per-token GELU MLP, width -> hidden -> width."""

    def __init__(self, width: int, hidden: int, dropout: float):
        super().__init__()
        self.fc = nn.Linear(width, hidden)
        self.out = nn.Linear(hidden, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        """(B, T, width) -> (B, T, width)."""
        return self.drop(self.out(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LN encoder block."""

    def __init__(self, width: int, heads: int, hidden: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = MLP(width, hidden, dropout)

    def forward(self, x):
        """(B, T, width) -> (B, T, width), residual around attention and around the MLP."""
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


def sinusoidal_log_lambda(wave: np.ndarray, patch: int, width: int) -> torch.Tensor:
    """(1, 1 + n_tokens, width) fixed encoding of each patch's mean ln(lambda), measured in units
    of the median ln(lambda) step per pixel (so positions follow wavelength, not pixel index);
    the CLS slot gets zeros."""
    lnw = np.log(np.asarray(wave, np.float64))
    pos = lnw[: lnw.size // patch * patch].reshape(-1, patch).mean(1)
    pos = (pos - lnw[0]) / np.median(np.diff(lnw))
    freq = 1.0 / 10000.0 ** (np.arange(0, width, 2) / width)
    angle = pos[:, None] * freq[None, :]
    pe = np.zeros((pos.size + 1, width))
    pe[1:, 0::2] = np.sin(angle)
    pe[1:, 1::2] = np.cos(angle[:, : width // 2])
    return torch.tensor(pe[None], dtype=torch.float32)


class SpectrumViT(nn.Module):
    """(B, channels, n_pix) spectra -> (B, n_out) z-scored predictions; ``wave`` (Angstrom, n_pix)
    sets the number of tokens and the sinusoidal positions."""

    def __init__(self, p: ViTParams, wave: np.ndarray, n_out: int):
        super().__init__()
        n_pix = len(wave)
        if n_pix % p.patch:
            raise ConfigError(f"patch={p.patch} does not divide the spectrum's {n_pix} pixels")
        self.n_tokens = n_pix // p.patch + 1
        self.tokenizer = nn.Conv1d(INPUTS[p.inputs], p.width, kernel_size=p.patch, stride=p.patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, p.width))
        if p.pos_encoding == "learned":
            self.pos = nn.Parameter(torch.zeros(1, self.n_tokens, p.width))
        else:
            self.register_buffer("pos", sinusoidal_log_lambda(wave, p.patch, p.width), persistent=False)
        self.drop = nn.Dropout(p.dropout)
        self.blocks = nn.ModuleList(Block(p.width, p.heads, p.mlp, p.dropout) for _ in range(p.depth))
        self.norm = nn.LayerNorm(p.width)
        self.head = nn.Linear(p.width, n_out)
        self.apply(self._init)
        nn.init.normal_(self.cls, std=0.02)
        if isinstance(self.pos, nn.Parameter):
            nn.init.normal_(self.pos, std=0.02)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Conv1d)):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def forward(self, x):
        """(B, channels, n_pix) -> (B, n_out)."""
        t = self.tokenizer(x).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1) + self.pos
        t = self.drop(t)
        for block in self.blocks:
            t = block(t)
        return self.head(self.norm(t[:, 0]))

    def n_params(self) -> int:
        """Number of trainable parameters (the sinusoidal encoding is a buffer, not counted)."""
        return sum(p.numel() for p in self.parameters())

    def train_flops_per_spectrum(self) -> float:
        """Model FLOPs of one training step per spectrum: 6 x (matmul parameters) x tokens plus
        attention's QK^T and AV (2 x 2 T^2 d forward per layer, x3 with the backward pass)."""
        n_matmul = sum(p.numel() for name, p in self.named_parameters() if p.dim() >= 2 and name not in ("cls", "pos"))
        T, d = self.n_tokens, self.norm.normalized_shape[0]
        return 6.0 * n_matmul * T + 12.0 * len(self.blocks) * T**2 * d


def input_channels(kind: str, flux: torch.Tensor, error: torch.Tensor) -> torch.Tensor:
    """(B, channels, n_pix) model input from observed flux and pipeline error (B, n_pix).

    Median-normalised flux enters as flux - 1: the same function class (the tokenizer's bias
    absorbs the shift), but tokens then carry the line depths instead of a constant that the
    LayerNorms wash out, and training leaves the predict-the-mean plateau far sooner."""
    if kind == "flux":
        return (flux - 1.0)[:, None]
    if kind == "flux+error":
        return torch.stack([flux - 1.0, error], dim=1)
    if kind == "flux/error":
        return (flux / error)[:, None]
    raise ConfigError(f"inputs={kind!r} is not one of {list(INPUTS)}")


def loss_function(kind: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Training loss on z-scored labels y (B, n_targets); ``out`` has one column per target, or
    (mean, log variance) column blocks for gaussian_nll."""
    out = out.float()
    if kind == "mse":
        return F.mse_loss(out, y)
    if kind == "mae":
        return F.l1_loss(out, y)
    if kind == "gaussian_nll":
        mu, log_var = out.chunk(2, dim=1)
        return 0.5 * (log_var + (y - mu) ** 2 * torch.exp(-log_var)).mean()
    raise ConfigError(f"loss={kind!r} is not one of {list(LOSSES)}")
