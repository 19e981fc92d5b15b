"""`audio_only` and `visual_only`: one modality's projection, temporal model and regression
heads; the other modality is ignored. The references every fusion head must beat."""

from __future__ import annotations

import torch

from pipeline.stage2.heads import HEADS, FusionHead
from pipeline.stage2.layers import RegressionHead


class Unimodal(FusionHead):
    modality = ""

    def __init__(self, **common) -> None:
        """Arguments: FusionHead's (heads/layers unused)."""
        super().__init__(**common)
        self.temporal = self.temporal_encoder()
        self.head = RegressionHead(self.d, self.dropout)

    def forward(self, audio, visual, audio_mask, visual_mask) -> torch.Tensor:
        x = self.audio_in(audio, audio_mask) if self.modality == "audio" else self.visual_in(visual, visual_mask)
        return self.head(self.temporal(x))                                # (B, T, 2)


@HEADS.register("audio_only")
class AudioOnly(Unimodal):
    modality = "audio"


@HEADS.register("visual_only")
class VisualOnly(Unimodal):
    modality = "visual"
