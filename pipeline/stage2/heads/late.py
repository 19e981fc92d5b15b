"""`late`: late fusion. Two unimodal predictors (projection, temporal model, regression heads)
whose outputs are averaged with learned weights, one pair per axis (softmax-normalised)."""

from __future__ import annotations

import torch
import torch.nn as nn

from pipeline.stage2.heads import HEADS, FusionHead
from pipeline.stage2.layers import RegressionHead


@HEADS.register("late")
class Late(FusionHead):
    def __init__(self, **common) -> None:
        """Arguments: FusionHead's (heads/layers unused)."""
        super().__init__(**common)
        self.temporal_a, self.temporal_v = self.temporal_encoder(), self.temporal_encoder()
        self.head_a, self.head_v = RegressionHead(self.d, self.dropout), RegressionHead(self.d, self.dropout)
        self.mix = nn.Parameter(torch.zeros(2, 2))  # (modality, axis) logits: equal weights at start

    def forward(self, audio, visual, audio_mask, visual_mask) -> torch.Tensor:
        pa = self.head_a(self.temporal_a(self.audio_in(audio, audio_mask)))      # (B, T, 2)
        pv = self.head_v(self.temporal_v(self.visual_in(visual, visual_mask)))   # (B, T, 2)
        w = torch.softmax(self.mix, dim=0)                                       # (2, 2)
        return w[0] * pa + w[1] * pv
