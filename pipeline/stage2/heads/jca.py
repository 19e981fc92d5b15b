"""`jca`: joint cross-attention (Praveen et al., ABAW3 2022 / T-BIOM 2023).

For N >= 1 streams with x_i = temporal_i(input_i(s_i)) (B, T, d), the joint feature is all of
them, J = concat(x_1, ..., x_N) (B, T, N d); each stream X is attended with it:

    J'  = W_j J                                  (B, T, d)
    C   = tanh(X J'^T / sqrt(d))                 (B, T, T) correlation of X and the joint feature
    H   = ReLU(W_x X + W_c (C J' / T))           attention map
    X'  = W_h H + X                              (residual)

and the attended streams are concatenated, concat(x'_1, ..., x'_N) (B, T, N d), for the task
heads. One deviation, so the head works for any window length: the original W_c is a Linear over
the (fixed) time axis of C^T; here C weights the joint features over time instead (C J', averaged
over T), and W_c is a Linear over features. At N = 2 this is the audio-visual JCA.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.stage2.heads import HEADS, FusionHead


class JointAttention(nn.Module):
    """Attends one stream X (B, T, d) with the joint feature J (B, T, joint)."""

    def __init__(self, d: int, joint: int) -> None:
        super().__init__()
        self.w_j = nn.Linear(joint, d, bias=False)   # J -> d, for the correlation and C J'
        self.w_x = nn.Linear(d, d, bias=False)
        self.w_c = nn.Linear(d, d, bias=False)
        self.w_h = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor, joint: torch.Tensor) -> torch.Tensor:
        jd = self.w_j(joint)                                              # (B, T, d)
        corr = torch.tanh(x @ jd.transpose(1, 2) / math.sqrt(x.shape[-1]))  # (B, T, T)
        h = F.relu(self.w_x(x) + self.w_c(corr @ jd / x.shape[1]))        # (B, T, d)
        return self.w_h(h) + x


@HEADS.register("jca")
class JCA(FusionHead):
    iterations = 1  # rjca.py's subclass applies the block recursively

    def __init__(self, **common) -> None:
        """Arguments: FusionHead's (heads/layers unused)."""
        super().__init__(**common)
        self.temporal = self.per_stream(lambda s: self.temporal_encoder())
        self.block = self.per_stream(lambda s: JointAttention(self.d, len(self.streams) * self.d))
        self.head = self.task_heads(len(self.streams) * self.d)

    def forward(self, streams: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = {s: self.temporal[s](v) for s, v in self.embed(streams, masks).items()}   # each (B, T, d)
        for _ in range(self.iterations):
            joint = torch.cat([x[s] for s in self.streams], dim=-1)                    # (B, T, N d)
            x = {s: attend(x[s], joint) for s, attend in self.block.items()}
        return self.head(torch.cat([x[s] for s in self.streams], dim=-1))              # (B, T, N d) -> ...
