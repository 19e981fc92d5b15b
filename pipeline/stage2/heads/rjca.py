"""`rjca`: recursive joint cross-attention (Praveen et al., 2023): the JCA block (see jca.py)
applied `iterations` times with shared weights, each pass re-forming the joint feature from
the attended streams; the temporal model is a BiLSTM in the original (set `temporal: bilstm`)."""

from __future__ import annotations

import torch

from pipeline.stage2.heads import HEADS, FusionHead
from pipeline.stage2.heads.jca import JCABlock
from pipeline.stage2.layers import RegressionHead


@HEADS.register("rjca")
class RJCA(FusionHead):
    def __init__(self, *, iterations: int = 2, **common) -> None:
        """iterations: recursive JCA passes (2-3 in the paper); other args: FusionHead."""
        super().__init__(**common)
        if iterations < 1:
            raise ValueError(f"rjca iterations must be >= 1, got {iterations}")
        self.iterations = iterations
        self.temporal_a, self.temporal_v = self.temporal_encoder(), self.temporal_encoder()
        self.block = JCABlock(self.d)
        self.head = RegressionHead(2 * self.d, self.dropout)

    def forward(self, audio, visual, audio_mask, visual_mask) -> torch.Tensor:
        a = self.temporal_a(self.audio_in(audio, audio_mask))             # (B, T, d)
        v = self.temporal_v(self.visual_in(visual, visual_mask))          # (B, T, d)
        for _ in range(self.iterations):
            a, v = self.block(a, v)
        return self.head(torch.cat([a, v], dim=-1))                       # (B, T, 2)
