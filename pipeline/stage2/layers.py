"""Building blocks shared by the fusion heads (written once, as timm's layers/)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm

from pipeline.registry import Registry

TEMPORAL: Registry = Registry("temporal encoder")


class EncoderBlock(nn.Module):
    """Post-norm transformer encoder block, as in the JMT code:
    x = LN(x + MHA(x, x, x)); x = LN(x + FFN(x)), FFN = Linear(d, ffn), ReLU, Linear(ffn, d)."""

    def __init__(self, d: int, heads: int = 1, ffn: int = 512, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d, ffn), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn, d))
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        x = self.norm1(x + self.drop(self.attn(x, x, x, need_weights=False)[0]))
        return self.norm2(x + self.drop(self.ffn(x)))


class Encoder(nn.Sequential):
    """`layers` EncoderBlocks."""

    def __init__(self, d: int, heads: int, layers: int, dropout: float) -> None:
        super().__init__(*[EncoderBlock(d, heads, dropout=dropout) for _ in range(layers)])


class SeparateHeads(nn.Module):
    """One small head per output value, Linear(d, 128), ReLU, Dropout, Linear(128, 1) each (the
    JMT code's separate valence and arousal heads; no tanh: predictions are clipped at
    evaluation), concatenated: (B, T, d) -> (B, T, len(names))."""

    def __init__(self, d: int, names: tuple[str, ...], dropout: float = 0.0) -> None:
        super().__init__()
        self.names = tuple(names)
        for name in self.names:  # built, registered and run in this order
            setattr(self, name, nn.Sequential(nn.Linear(d, 128), nn.ReLU(), nn.Dropout(dropout), nn.Linear(128, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([getattr(self, name)(x) for name in self.names], dim=-1)


class ModalityInput(nn.Module):
    """Per-frame embeddings -> model width: standardise each feature with the training split's
    mean and std (buffers, set by `jmt train` when model.standardize; identity otherwise), then
    L2-normalise on the feature axis (as JMT does), project to d, and put a learned 'missing'
    vector where the stream is masked (no face, no voice), so a head can tell absence from content.

    Why standardise first: hand-crafted features (log-mel statistics, prosody) carry large
    constant offsets; L2-normalising them raw leaves a vector dominated by the offsets, whose
    emotional variation is a tiny angle (docs/training.md)."""

    def __init__(self, d_in: int, d: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_in, d)
        self.missing = nn.Parameter(torch.zeros(d))
        self.register_buffer("mean", torch.zeros(d_in))
        self.register_buffer("std", torch.ones(d_in))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = (x.float() - self.mean) / self.std                        # (B, T, d_in)
        x = self.proj(F.normalize(x, dim=-1))                         # (B, T, d)
        return torch.where(mask.unsqueeze(-1), x, self.missing.to(x.dtype))


# ---- temporal encoders: (B, T, d_in) -> (B, T, d_out) ---------------------------------


class TemporalBlock(nn.Module):
    """Weight-normed causal dilated Conv1d residual block (two convs), as in the TCN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.pad = (kernel - 1) * dilation  # left padding only: causal
        self.conv1 = weight_norm(nn.Conv1d(c_in, c_out, kernel, dilation=dilation))
        self.conv2 = weight_norm(nn.Conv1d(c_out, c_out, kernel, dilation=dilation))
        self.drop = nn.Dropout(dropout)
        self.down = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        y = self.drop(F.relu(self.conv1(F.pad(x, (self.pad, 0)))))
        y = self.drop(F.relu(self.conv2(F.pad(y, (self.pad, 0)))))
        return F.relu(y + self.down(x))


@TEMPORAL.register("tcn")
class TCN(nn.Module):
    """Temporal convolutional network: kernel 5, dilations 1, 2, 4, 8, dropout 0.1 by default."""

    def __init__(self, d_in: int, d_out: int, *, dropout: float = 0.1, kernel: int = 5,
                 dilations: tuple[int, ...] = (1, 2, 4, 8)) -> None:
        super().__init__()
        chans = [d_in] + [d_out] * len(dilations)
        self.blocks = nn.Sequential(*[TemporalBlock(chans[i], chans[i + 1], kernel, d, dropout)
                                      for i, d in enumerate(dilations)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x.transpose(1, 2)).transpose(1, 2)       # (B, T, d_out)


@TEMPORAL.register("gru")
class GRU(nn.Module):
    """A unidirectional GRU."""

    def __init__(self, d_in: int, d_out: int, *, dropout: float = 0.1) -> None:
        super().__init__()
        self.rnn = nn.GRU(d_in, d_out, batch_first=True)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.rnn(x)[0])


@TEMPORAL.register("bilstm")
class BiLSTM(nn.Module):
    """A bidirectional LSTM (d_out / 2 per direction), as in RJCA."""

    def __init__(self, d_in: int, d_out: int, *, dropout: float = 0.1) -> None:
        super().__init__()
        if d_out % 2:
            raise ValueError(f"bilstm needs an even width, got {d_out}")
        self.rnn = nn.LSTM(d_in, d_out // 2, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.rnn(x)[0])


@TEMPORAL.register("identity")
class Identity(nn.Module):
    """No temporal model: a per-frame Linear (only to match widths)."""

    def __init__(self, d_in: int, d_out: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.proj = nn.Linear(d_in, d_out) if d_in != d_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)
