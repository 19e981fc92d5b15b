"""`late`: late fusion. N unimodal predictors (projection, temporal model, task heads), one per
stream, whose outputs are averaged with learned weights, one set per output value of each task
(softmax over the streams):

    p_i = heads_i(temporal_i(input_i(s_i)))                 {task: (B, T, width)}
    out[task] = sum_i w_i[task] * p_i[task],   w[task] = softmax over i of mix[task] (N, width)

The mix logits start at 0: equal weights.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from pipeline.stage2.heads import HEADS, FusionHead
from pipeline.tasks import TASKS


@HEADS.register("late")
class Late(FusionHead):
    def __init__(self, **common) -> None:
        """Arguments: FusionHead's (heads/layers unused)."""
        super().__init__(**common)
        self.temporal = self.per_stream(lambda s: self.temporal_encoder())
        self.predict = self.per_stream(lambda s: self.task_heads(self.d))
        # (stream, output) logits per task, rows in the cache's stream order
        self.mix = nn.ParameterDict({t: nn.Parameter(torch.zeros(len(self.streams), TASKS.get(t).width))
                                     for t in self.tasks})

    def forward(self, streams: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        p = {s: self.predict[s](self.temporal[s](v)) for s, v in self.embed(streams, masks).items()}
        out = {}
        for t in self.tasks:  # the tasks' order (a ParameterDict built from a dict sorts its keys)
            w = torch.softmax(self.mix[t], dim=0)                                 # (N, width)
            out[t] = sum(w[i] * p[s][t] for i, s in enumerate(self.streams))    # (B, T, width)
        return out
