"""Fusion heads behind one registry and one contract.

Every head maps cached per-frame embeddings to per-frame valence and arousal:

    forward(audio (B, T, Da), visual (B, T, Dv), audio_mask (B, T), visual_mask (B, T)) -> (B, T, 2)

Masks are True where the modality is present (a face was found; the frame has audio).
Constructors take keyword-only arguments; `build_head` is the one place that maps params to
them and records (name, kwargs) on the module so checkpoints can rebuild it.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from pipeline.registry import Registry
from pipeline.stage2.layers import TEMPORAL, ModalityInput

HEADS: Registry = Registry("fusion head")


class FusionHead(nn.Module):
    """Base: the two modality inputs (L2 norm, projection to d_model, missing-vector) and the
    shared hyper-parameters. Subclasses build their fusion in __init__ and define forward."""

    def __init__(self, *, audio_dim: int, visual_dim: int, d_model: int = 512, temporal: str = "tcn",
                 heads: int = 1, layers: int = 1, dropout: float = 0.0, temporal_dropout: float = 0.1) -> None:
        """audio_dim/visual_dim: cached embedding widths; d_model: stream width; temporal: a
        TEMPORAL registry name applied per stream; heads/layers: attention heads and encoder
        layers; dropout: in attention/FFN/regression heads; temporal_dropout: in the encoder."""
        super().__init__()
        self.d, self.heads, self.layers, self.dropout = d_model, heads, layers, dropout
        self._temporal, self._temporal_dropout = TEMPORAL.get(temporal), temporal_dropout
        self.audio_in = ModalityInput(audio_dim, d_model)
        self.visual_in = ModalityInput(visual_dim, d_model)

    def set_input_stats(self, audio: tuple, visual: tuple) -> None:
        """Per-feature (mean, std) of each modality, from the training split (model.standardize)."""
        for module, (mean, std) in ((self.audio_in, audio), (self.visual_in, visual)):
            module.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
            module.std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def temporal_encoder(self, d_in: int | None = None) -> nn.Module:
        """A fresh temporal encoder (d_in -> d_model) of the configured kind."""
        return self._temporal(d_in or self.d, self.d, dropout=self._temporal_dropout)


def build_head(name: str, **kwargs) -> FusionHead:
    """Builds a registered head; the module remembers how (`spec`) for checkpoints."""
    head = HEADS.get(name)(**kwargs)
    head.spec = {"name": name, "kwargs": dict(kwargs)}
    return head


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# Importing the modules registers the heads.
from pipeline.stage2.heads import concat, jca, jmt, late, mt, rjca, unimodal  # noqa: E402,F401
