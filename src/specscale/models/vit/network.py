"""The network: spectra in, z-scored labels out, and the two functions a reader of the
architecture needs beside it, what goes in (``input_channels``; the derived channels and the
error mask are ``channels.model_input``) and what is minimised (``loss_function``; the binned
target is ``targets``).

Top-down: ``SpectrumViT`` tokenizes patches with a Conv1d (one per scale with ``patches``, each
scale's tokens tagged by a learned scale embedding), prepends a CLS token, adds a positional
embedding (learned, or ``sinusoidal`` in log lambda; with ``rope`` the positions instead rotate the
queries and keys inside ``Attention``), runs pre-LN ``Block``s (``Attention`` then ``MLP``) and reads
the labels off the final-LN CLS token (or the mean of the patch tokens) with a linear head.
``encode`` is the encoder alone (pre-training puts its reconstruction head on it).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from specscale.core.config import ConfigError
from specscale.models.vit.params import INPUTS, LOSSES, ViTParams


class Attention(nn.Module):
    """Multi-head self-attention over (B, tokens, width) via F.scaled_dot_product_attention;
    with ``rope`` (cos, sin tables) the queries and keys are rotated by their token's position."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, rope=None):
        """(B, T, C) tokens -> (B, T, C) attended tokens."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = rotate(q, *rope), rotate(k, *rope)
        y = F.scaled_dot_product_attention(q, k, v)  # flash / memory-efficient kernels on CUDA
        return self.drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position encoding: rotate the (even, odd) channel pairs of ``x`` (B, heads, T, D) by
    the angles whose cos and sin are (T, D/2); attention scores then depend on position
    differences only."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


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

    def forward(self, x, rope=None):
        """(B, T, width) -> (B, T, width), residual around attention and around the MLP."""
        x = x + self.attn(self.ln1(x), rope)
        return x + self.mlp(self.ln2(x))


def token_positions(wave: np.ndarray, patch: int) -> np.ndarray:
    """Each patch's mean ln(lambda), in units of the median ln(lambda) step per pixel from the first
    pixel (so positions follow wavelength, not pixel index, and patches of any size share them)."""
    lnw = np.log(np.asarray(wave, np.float64))
    pos = lnw[: lnw.size // patch * patch].reshape(-1, patch).mean(1)
    return (pos - lnw[0]) / np.median(np.diff(lnw))


def sinusoidal(pos: np.ndarray, width: int) -> torch.Tensor:
    """(1, 1 + len(pos), width) fixed encoding of token positions ``pos``; the CLS slot gets zeros."""
    freq = 1.0 / 10000.0 ** (np.arange(0, width, 2) / width)
    angle = pos[:, None] * freq[None, :]
    pe = np.zeros((pos.size + 1, width))
    pe[1:, 0::2] = np.sin(angle)
    pe[1:, 1::2] = np.cos(angle[:, : width // 2])
    return torch.tensor(pe[None], dtype=torch.float32)


def sinusoidal_log_lambda(wave: np.ndarray, patch: int, width: int) -> torch.Tensor:
    """(1, 1 + n_tokens, width) sinusoidal encoding of each patch's position in ln(lambda)
    (``token_positions``); the CLS slot gets zeros."""
    return sinusoidal(token_positions(wave, patch), width)


def rope_tables(pos: np.ndarray, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each (1 + len(pos), head_dim / 2): rotary angles of the CLS token (position 0,
    no rotation) and of the patch tokens at ``pos`` (pixels of ln lambda)."""
    freq = 1.0 / 10000.0 ** (np.arange(0, head_dim, 2) / head_dim)
    angle = np.concatenate([[0.0], pos])[:, None] * freq[None, :]
    return torch.tensor(np.cos(angle), dtype=torch.float32), torch.tensor(np.sin(angle), dtype=torch.float32)


NO_DECAY = ("cls", "pos", "scale_embed", "mask_token")  # embeddings: no weight decay


def weight_decayed(name: str, param: torch.Tensor) -> bool:
    """Whether AdamW decays this parameter: matmul and conv weights, not biases, norms or embeddings."""
    return param.dim() >= 2 and name.rsplit(".", 1)[-1] not in NO_DECAY


class SpectrumViT(nn.Module):
    """(B, channels, n_pix) spectra -> (B, n_out) z-scored predictions; ``wave`` (Angstrom, n_pix)
    sets the number of tokens and their positions. ``n_out=0``: an encoder without a head
    (pre-training puts its own on top).

    Tokens: CLS, then the ``patch`` tokens, then those of each other scale of ``patches`` (each
    scale its own Conv1d tokenizer and a learned scale embedding)."""

    def __init__(self, p: ViTParams, wave: np.ndarray, n_out: int):
        super().__init__()
        n_pix = len(wave)
        scales = p.scales()
        for s in scales:
            if n_pix % s:
                raise ConfigError(f"patch={s} does not divide the spectrum's {n_pix} pixels")
        self.patch, self.pool, self.frozen = p.patch, p.pool, False
        pos = np.concatenate([token_positions(wave, s) for s in scales])
        self.n_tokens = pos.size + 1
        self.scale_tokens = [n_pix // s for s in scales]  # tokens of each scale, ``patch`` first
        channels = p.n_channels()
        self.tokenizer = nn.Conv1d(channels, p.width, kernel_size=p.patch, stride=p.patch)
        self.other_tokenizers = nn.ModuleList(nn.Conv1d(channels, p.width, kernel_size=s, stride=s) for s in scales[1:])
        self.scale_embed = nn.Parameter(torch.zeros(len(scales), p.width)) if len(scales) > 1 else None
        self.cls = nn.Parameter(torch.zeros(1, 1, p.width))
        self.rope = p.pos_encoding == "rope"
        if p.pos_encoding == "learned":
            self.pos = nn.Parameter(torch.zeros(1, self.n_tokens, p.width))
        elif p.pos_encoding == "sinusoidal":
            self.register_buffer("pos", sinusoidal(pos, p.width), persistent=False)
        else:  # rope: positions enter the attention scores, nothing is added to the tokens
            self.pos = None
            cos, sin = rope_tables(pos, p.width // p.heads)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.drop = nn.Dropout(p.dropout)
        self.blocks = nn.ModuleList(Block(p.width, p.heads, p.mlp, p.dropout) for _ in range(p.depth))
        self.norm = nn.LayerNorm(p.width)
        self.head = nn.Linear(p.width, n_out) if n_out else None
        self.apply(self._init)
        nn.init.normal_(self.cls, std=0.02)
        for emb in (self.pos, self.scale_embed):
            if isinstance(emb, nn.Parameter):
                nn.init.normal_(emb, std=0.02)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Conv1d)):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def tokens(self, x, mask=None, mask_token=None):
        """(B, channels, n_pix) -> (B, n_tokens, width) input tokens. ``mask`` (B, n_pix / patch)
        bool hides patches (pre-training): their pixels are zeroed for every scale's tokenizer and
        their ``patch`` tokens replaced by ``mask_token`` (1, 1, width)."""
        if mask is not None:
            x = x.masked_fill(mask.repeat_interleave(self.patch, dim=1)[:, None], 0.0)
        t = self.tokenizer(x).transpose(1, 2)
        if mask is not None:
            t = torch.where(mask[..., None], mask_token.to(t.dtype), t)
        parts = [t] + [tok(x).transpose(1, 2) for tok in self.other_tokenizers]
        if self.scale_embed is not None:
            parts = [part + self.scale_embed[i] for i, part in enumerate(parts)]
        t = torch.cat([self.cls.expand(x.shape[0], -1, -1), *parts], dim=1)
        if self.pos is not None:
            t = t + self.pos
        return self.drop(t)

    def encode(self, x, mask=None, mask_token=None):
        """(B, channels, n_pix) -> (B, n_tokens, width) final-LN tokens (see ``tokens`` for the mask)."""
        rope = (self.rope_cos, self.rope_sin) if self.rope else None
        t = self.tokens(x, mask, mask_token)
        for block in self.blocks:
            t = block(t, rope)
        return self.norm(t)

    def forward(self, x):
        """(B, channels, n_pix) -> (B, n_out)."""
        t = self.encode(x)
        return self.head(t[:, 0] if self.pool == "cls" else t[:, 1:].mean(1))

    def encoder_state(self) -> dict[str, torch.Tensor]:
        """The weights without the head's (what pre-training hands to fine-tuning)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("head.")}

    def freeze_encoder(self) -> None:
        """Train the head alone (a linear probe): the encoder's weights stop learning and its
        dropout stays off in training mode."""
        self.frozen = True
        for name, q in self.named_parameters():
            q.requires_grad_(name.startswith("head."))
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            for name, child in self.named_children():
                if name != "head":
                    child.eval()
        return self

    def n_params(self) -> int:
        """Number of parameters (the sinusoidal and rotary tables are buffers, not counted)."""
        return sum(p.numel() for p in self.parameters())

    def train_flops_per_spectrum(self) -> float:
        """Model FLOPs of one training step per spectrum: 6 x (matmul parameters) x tokens plus
        attention's QK^T and AV (2 x 2 T^2 d forward per layer, x3 with the backward pass); the
        tokenizers of other scales count their own tokens only."""
        T, d = self.n_tokens, self.norm.normalized_shape[0]
        n_matmul = sum(
            p.numel()
            for name, p in self.named_parameters()
            if p.dim() >= 2 and name not in ("cls", "pos", "scale_embed") and not name.startswith("other_tokenizers.")
        )
        other = sum(6.0 * tok.weight.numel() * n for tok, n in zip(self.other_tokenizers, self.scale_tokens[1:]))
        return 6.0 * n_matmul * T + other + 12.0 * len(self.blocks) * T**2 * d


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
