"""`concat`: early fusion. The N projected streams are concatenated per frame (in the cache's
order), then one temporal model and the task heads:

    fused = temporal(concat(input_1(s_1), ..., input_N(s_N)))     (B, T, N d) -> (B, T, d)
"""

from __future__ import annotations

import torch

from pipeline.stage2.heads import HEADS, FusionHead


@HEADS.register("concat")
class Concat(FusionHead):
    def __init__(self, **common) -> None:
        """Arguments: FusionHead's (heads/layers unused)."""
        super().__init__(**common)
        self.temporal = self.temporal_encoder(len(self.streams) * self.d)
        self.head = self.task_heads(self.d)

    def forward(self, streams: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.embed(streams, masks)
        return self.head(self.temporal(torch.cat([x[s] for s in self.streams], dim=-1)))   # (B, T, N d) -> ...
