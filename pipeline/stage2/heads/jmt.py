"""`jmt`: Joint Multimodal Transformer (Waligora et al., CVPR 2024 workshops, arXiv 2403.10488).

The function of the authors' MultimodalTransformer_w_JR (models/mm_multi_transformers.py in
PoloWlg/Joint-Multimodal-Transformer-6th-ABAW) and of the regressors around it
(models/two_transformers.py), for N >= 1 streams s_1..s_N in the cache's order. With
x_i = temporal_i(input_i(s_i)), each (B, T, d):

    J   = Linear(N d -> d)(concat(x_1, ..., x_N))             the joint stream, before the encoders
    e_i = Enc_i(x_i),  e_J = Enc_J(J)                          one post-norm encoder per stream
    a(q -> k) = MHA_q(query e_q, key = value e_k)              key-based cross-attention, one MHA
                                                               per query stream, no residual or norm
    tokens, in this order (query -> key):
        for each pair i < j:   s_i -> s_j,  s_j -> s_i
        then for each k:       J -> s_k,    s_k -> J

N(N+1) tokens: each of the N + 1 streams attends to every other one. At N = 2 with the default
streams (visual, audio) this is the authors' order, [V->A, A->V, J->V, V->J, J->A, A->J];
at N = 3 (s_1, s_2, s_3): [1->2, 2->1, 1->3, 3->1, 2->3, 3->2, J->1, 1->J, J->2, 2->J, J->3, 3->J].

Aggregation 'self_attention' (default) stacks the tokens per frame, runs one more encoder
(`layers` blocks) and one self-attention over them and keeps the LAST token (s_N -> J; A->J at
N = 2); the tokens carry no position, so the order decides which stream is kept. 'fc'
concatenates them in the same order (N(N+1) d) and applies Linear(N(N+1) d -> 2d). Then each
task's head. tests/stage2/test_jmt_reference.py matches both aggregations to the authors' module.

What differs from theirs by design:
- temporal encoders (TCN etc.) over cached per-frame embeddings stand in for their clip
  backbones (the joint stream is built from their outputs, as theirs from the backbones');
- every input goes through ModalityInput: L2 norm (as theirs), a Linear to d for audio too (they
  project only a visual input wider than 512), and a learned "missing" vector on masked frames
  (they have no masks);
- `dropout` acts in every attention, FFN and output head (theirs: only in the regressors);
- their fc path returns sequence-first (T, B, 2d) tensors, so their fc predictions come out
  (T, B); a quirk, not copied: every path here is batch-first.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from pipeline.stage2.heads import HEADS, FusionHead
from pipeline.stage2.layers import Encoder

JOINT = "J"  # the joint stream's name in `order` (never a stream name: those are lower case)


def order(streams: list[str]) -> list[tuple[str, str]]:
    """The (query, key) pairs of the cross-attentions, in token order (see the docstring)."""
    pairs = [p for i, a in enumerate(streams) for b in streams[i + 1:] for p in ((a, b), (b, a))]
    return pairs + [p for s in streams for p in ((JOINT, s), (s, JOINT))]


SEARCH_SPACE = {  # jmt tune: this head's part of the search space (pipeline/stage2/tune/space.py)
    "model.heads": [1, 2, 4],          # attention heads of every encoder and cross-attention
    "model.layers": [1, 2],            # blocks per stream encoder and in the aggregation
    "model.aggregation": ["self_attention", "fc"],
}


@HEADS.register("jmt")
class JMT(FusionHead):
    def __init__(self, *, aggregation: str = "self_attention", **common) -> None:
        """aggregation: 'self_attention' (paper default) or 'fc'; other args: FusionHead."""
        super().__init__(**common)
        d, h, drop = self.d, self.heads, self.dropout
        if aggregation not in ("self_attention", "fc"):
            raise ValueError(f"jmt aggregation must be 'self_attention' or 'fc', got {aggregation!r}")
        self.aggregation = aggregation
        self.pairs = order(self.streams)
        self.temporal = self.per_stream(lambda s: self.temporal_encoder())
        self.joint = nn.Linear(len(self.streams) * d, d)
        self.enc = self.per_stream(lambda s: Encoder(d, h, self.layers, drop))
        self.enc_joint = Encoder(d, h, self.layers, drop)
        self.cross = self.per_stream(lambda s: nn.MultiheadAttention(d, h, dropout=drop, batch_first=True))
        self.cross_joint = nn.MultiheadAttention(d, h, dropout=drop, batch_first=True)
        if aggregation == "self_attention":
            self.agg_block = Encoder(d, h, self.layers, drop)       # theirs: num_layers blocks here too
            self.agg_attn = nn.MultiheadAttention(d, h, dropout=drop, batch_first=True)
            out = d
        else:
            self.agg_fc = nn.Linear(len(self.pairs) * d, 2 * d)
            out = 2 * d
        self.head = self.task_heads(out)

    def forward(self, streams: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = {s: self.temporal[s](v) for s, v in self.embed(streams, masks).items()}   # each (B, T, d)
        j = self.joint(torch.cat([x[s] for s in self.streams], dim=-1))               # (B, T, d) joint stream
        e = {s: self.enc[s](v) for s, v in x.items()}
        e[JOINT] = self.enc_joint(j)

        def attend(query: str, key: str) -> torch.Tensor:
            mha = self.cross_joint if query == JOINT else self.cross[query]
            return mha(e[query], e[key], e[key], need_weights=False)[0]              # (B, T, d)

        tokens = [attend(q, k) for q, k in self.pairs]                                  # N(N+1) x (B, T, d)
        if self.aggregation == "fc":
            fused = self.agg_fc(torch.cat(tokens, dim=-1))                              # (B, T, 2d)
        else:
            b, t, d = j.shape
            stacked = torch.stack(tokens, dim=2).reshape(b * t, len(tokens), d)          # (B*T, N(N+1), d)
            stacked = self.agg_block(stacked)
            stacked = self.agg_attn(stacked, stacked, stacked, need_weights=False)[0]
            fused = stacked[:, -1].reshape(b, t, d)                                     # last token, s_N -> J
        return self.head(fused)                                                         # {task: (B, T, width)}
