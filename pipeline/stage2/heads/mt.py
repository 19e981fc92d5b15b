"""`mt`: vanilla multimodal transformer, the baseline the JMT authors compare with: each stream
encoded, then cross-attention between every ordered pair of streams, no joint stream; the
attended streams are concatenated and fed to the task heads. For N >= 2 streams s_1..s_N in
the cache's order, with e_i = Enc_i(temporal_i(input_i(s_i))):

    a(i -> j) = MHA_i(query e_i, key = value e_j)       one MHA per query stream
    fused = concat(a(i -> j) for i in 1..N for j in 1..N, j != i)     (B, T, N(N-1) d)

At N = 2 (visual, audio): concat(V -> A, A -> V), as the authors' baseline.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from pipeline.stage2.heads import HEADS, FusionHead
from pipeline.stage2.layers import Encoder


SEARCH_SPACE = {  # jmt tune: this head's part of the search space (pipeline/stage2/tune/space.py)
    "model.heads": [1, 2, 4],
    "model.layers": [1, 2],
}


@HEADS.register("mt")
class MT(FusionHead):
    min_streams = 2

    def __init__(self, **common) -> None:
        """Arguments: FusionHead's."""
        super().__init__(**common)
        d, h, drop = self.d, self.heads, self.dropout
        self.pairs = [(q, k) for q in self.streams for k in self.streams if k != q]
        self.temporal = self.per_stream(lambda s: self.temporal_encoder())
        self.enc = self.per_stream(lambda s: Encoder(d, h, self.layers, drop))
        self.cross = self.per_stream(lambda s: nn.MultiheadAttention(d, h, dropout=drop, batch_first=True))
        self.head = self.task_heads(len(self.pairs) * d)

    def forward(self, streams: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        e = {s: self.enc[s](self.temporal[s](v)) for s, v in self.embed(streams, masks).items()}  # each (B, T, d)
        attended = [self.cross[q](e[q], e[k], e[k], need_weights=False)[0] for q, k in self.pairs]
        return self.head(torch.cat(attended, dim=-1))                      # (B, T, N(N-1) d) -> {task: ...}
