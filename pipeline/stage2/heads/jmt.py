"""`jmt`: Joint Multimodal Transformer (Waligora et al., CVPR 2024 workshops, arXiv 2403.10488).

The function of the authors' MultimodalTransformer_w_JR (models/mm_multi_transformers.py in
PoloWlg/Joint-Multimodal-Transformer-6th-ABAW) and of the regressors around it
(models/two_transformers.py). Besides the audio (A) and visual (V) streams, a joint stream
J = Linear(2d -> d)(concat(V, A)) is built from the features before the transformer encoders.
Each stream has its own post-norm encoder (`layers` blocks); then six key-based cross-attentions
(query from one stream, key and value from another; three MHA modules, one per query stream,
each used twice), no residual or norm after them, in the authors' order (query->key):

    [V->A, A->V, J->V, V->J, J->A, A->J]

Aggregation 'self_attention' (default) stacks the six as six tokens per frame, runs one more
encoder (`layers` blocks) and one self-attention over them and keeps the LAST token (A->J);
the tokens carry no position, so the order decides which stream is kept. 'fc' concatenates
the six in the same order (6d) and applies Linear(6d -> 2d). Separate valence and arousal heads.
tests/stage2/test_jmt_reference.py matches both aggregations to the authors' module.

What differs from theirs by design:
- temporal encoders (TCN etc.) over cached per-frame embeddings stand in for their clip
  backbones (the joint stream is built from their outputs, as theirs from the backbones');
- both inputs go through ModalityInput: L2 norm (as theirs), a Linear to d for audio too (they
  project only a visual input wider than 512), and a learned "missing" vector on masked frames
  (they have no masks);
- `dropout` acts in every attention, FFN and regression head (theirs: only in the regressors);
- their fc path returns sequence-first (T, B, 2d) tensors, so their fc predictions come out
  (T, B); a quirk, not copied: every path here is batch-first.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from pipeline.stage2.heads import HEADS, FusionHead
from pipeline.stage2.layers import Encoder, RegressionHead


@HEADS.register("jmt")
class JMT(FusionHead):
    def __init__(self, *, aggregation: str = "self_attention", **common) -> None:
        """aggregation: 'self_attention' (paper default) or 'fc'; other args: FusionHead."""
        super().__init__(**common)
        d, h, drop = self.d, self.heads, self.dropout
        if aggregation not in ("self_attention", "fc"):
            raise ValueError(f"jmt aggregation must be 'self_attention' or 'fc', got {aggregation!r}")
        self.aggregation = aggregation
        self.temporal_a, self.temporal_v = self.temporal_encoder(), self.temporal_encoder()
        self.joint = nn.Linear(2 * d, d)
        self.enc_a, self.enc_v, self.enc_j = (Encoder(d, h, self.layers, drop) for _ in range(3))
        self.cross_a, self.cross_v, self.cross_j = (
            nn.MultiheadAttention(d, h, dropout=drop, batch_first=True) for _ in range(3))
        if aggregation == "self_attention":
            self.agg_block = Encoder(d, h, self.layers, drop)       # theirs: num_layers blocks here too
            self.agg_attn = nn.MultiheadAttention(d, h, dropout=drop, batch_first=True)
            out = d
        else:
            self.agg_fc = nn.Linear(6 * d, 2 * d)
            out = 2 * d
        self.head = RegressionHead(out, drop)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor, audio_mask: torch.Tensor,
                visual_mask: torch.Tensor) -> torch.Tensor:
        a = self.temporal_a(self.audio_in(audio, audio_mask))         # (B, T, d)
        v = self.temporal_v(self.visual_in(visual, visual_mask))      # (B, T, d)
        j = self.joint(torch.cat([v, a], dim=-1))                      # (B, T, d) joint stream
        a, v, j = self.enc_a(a), self.enc_v(v), self.enc_j(j)

        def attend(mha: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
            return mha(query, key, key, need_weights=False)[0]         # (B, T, d)

        # The authors' order, query->key: [V->A, A->V, J->V, V->J, J->A, A->J]; see the docstring.
        six = [attend(self.cross_v, v, a), attend(self.cross_a, a, v),
               attend(self.cross_j, j, v), attend(self.cross_v, v, j),
               attend(self.cross_j, j, a), attend(self.cross_a, a, j)]
        if self.aggregation == "fc":
            fused = self.agg_fc(torch.cat(six, dim=-1))                # (B, T, 2d)
        else:
            b, t, d = v.shape
            tokens = torch.stack(six, dim=2).reshape(b * t, 6, d)      # (B*T, 6, d)
            tokens = self.agg_block(tokens)
            tokens = self.agg_attn(tokens, tokens, tokens, need_weights=False)[0]
            fused = tokens[:, -1].reshape(b, t, d)                     # last token, A->J: (B, T, d)
        return self.head(fused)                                        # (B, T, 2)
