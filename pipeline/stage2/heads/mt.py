"""`mt`: vanilla multimodal transformer, the baseline the JMT authors compare with: each
stream encoded, then A<->V cross-attention (V queries A, A queries V), no joint stream; the
two attended streams are concatenated and regressed."""

from __future__ import annotations

import torch
import torch.nn as nn

from pipeline.stage2.heads import HEADS, FusionHead
from pipeline.stage2.layers import Encoder, RegressionHead


@HEADS.register("mt")
class MT(FusionHead):
    def __init__(self, **common) -> None:
        """Arguments: FusionHead's."""
        super().__init__(**common)
        d, h, drop = self.d, self.heads, self.dropout
        self.temporal_a, self.temporal_v = self.temporal_encoder(), self.temporal_encoder()
        self.enc_a, self.enc_v = Encoder(d, h, self.layers, drop), Encoder(d, h, self.layers, drop)
        self.cross_a = nn.MultiheadAttention(d, h, dropout=drop, batch_first=True)
        self.cross_v = nn.MultiheadAttention(d, h, dropout=drop, batch_first=True)
        self.head = RegressionHead(2 * d, drop)

    def forward(self, audio, visual, audio_mask, visual_mask) -> torch.Tensor:
        a = self.enc_a(self.temporal_a(self.audio_in(audio, audio_mask)))      # (B, T, d)
        v = self.enc_v(self.temporal_v(self.visual_in(visual, visual_mask)))   # (B, T, d)
        va = self.cross_v(v, a, a, need_weights=False)[0]                      # V attends to A
        av = self.cross_a(a, v, v, need_weights=False)[0]                      # A attends to V
        return self.head(torch.cat([va, av], dim=-1))                          # (B, T, 2)
