"""`concat`: early fusion. The two projected streams are concatenated per frame, then one
temporal model and the regression heads."""

from __future__ import annotations

import torch

from pipeline.stage2.heads import HEADS, FusionHead
from pipeline.stage2.layers import RegressionHead


@HEADS.register("concat")
class Concat(FusionHead):
    def __init__(self, **common) -> None:
        """Arguments: FusionHead's (heads/layers unused)."""
        super().__init__(**common)
        self.temporal = self.temporal_encoder(2 * self.d)
        self.head = RegressionHead(self.d, self.dropout)

    def forward(self, audio, visual, audio_mask, visual_mask) -> torch.Tensor:
        x = torch.cat([self.audio_in(audio, audio_mask), self.visual_in(visual, visual_mask)], dim=-1)
        return self.head(self.temporal(x))                                # (B, T, 2d) -> (B, T, 2)
