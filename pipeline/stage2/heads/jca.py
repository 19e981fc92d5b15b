"""`jca`: joint cross-attention (Praveen et al., ABAW3 2022 / T-BIOM 2023).

A joint feature J = concat(A, V); for each modality X, a correlation between X and J,
C = tanh(X W J^T / sqrt(d)) (T x T), an attention map H = ReLU(W_x X + W_c (C J')) and the
attended feature W_h H + X (residual); the attended A and V are concatenated and regressed.
One deviation, so the head works for any window length: the original W_c is a Linear over
the (fixed) time axis of C^T; here C weights the joint features over time instead (C J', with
J' = J projected to d, averaged over T), and W_c is a Linear over features.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.stage2.heads import HEADS, FusionHead
from pipeline.stage2.layers import RegressionHead


class JointAttention(nn.Module):
    """Attends one modality X (B, T, d) with the joint feature J (B, T, 2d)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.w_j = nn.Linear(2 * d, d, bias=False)   # J -> d, for the correlation and C J'
        self.w_x = nn.Linear(d, d, bias=False)
        self.w_c = nn.Linear(d, d, bias=False)
        self.w_h = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor, joint: torch.Tensor) -> torch.Tensor:
        jd = self.w_j(joint)                                              # (B, T, d)
        corr = torch.tanh(x @ jd.transpose(1, 2) / math.sqrt(x.shape[-1]))  # (B, T, T)
        h = F.relu(self.w_x(x) + self.w_c(corr @ jd / x.shape[1]))        # (B, T, d)
        return self.w_h(h) + x


class JCABlock(nn.Module):
    """One joint cross-attention step over both modalities."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.audio, self.visual = JointAttention(d), JointAttention(d)

    def forward(self, a: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        joint = torch.cat([a, v], dim=-1)                                 # (B, T, 2d)
        return self.audio(a, joint), self.visual(v, joint)


@HEADS.register("jca")
class JCA(FusionHead):
    iterations = 1  # rjca.py's subclass applies the block recursively

    def __init__(self, **common) -> None:
        """Arguments: FusionHead's (heads/layers unused)."""
        super().__init__(**common)
        self.temporal_a, self.temporal_v = self.temporal_encoder(), self.temporal_encoder()
        self.block = JCABlock(self.d)
        self.head = RegressionHead(2 * self.d, self.dropout)

    def forward(self, audio, visual, audio_mask, visual_mask) -> torch.Tensor:
        a = self.temporal_a(self.audio_in(audio, audio_mask))             # (B, T, d)
        v = self.temporal_v(self.visual_in(visual, visual_mask))          # (B, T, d)
        for _ in range(self.iterations):
            a, v = self.block(a, v)
        return self.head(torch.cat([a, v], dim=-1))                       # (B, T, 2)
