"""`only:<stream>`: one stream's projection, temporal model and task heads; every other stream is
ignored. The references every fusion head must beat, one per stream (`compare.heads` may name
each, or `only:*` for all):

    fused = temporal(input_k(s_k))       for the named stream s_k, any N >= 1
"""

from __future__ import annotations

import torch

from pipeline.stage2.heads import HEADS, FusionHead


SEARCH_SPACE = {  # jmt tune: this head's part of the search space (pipeline/stage2/tune/space.py)
    "train.modality_dropout": 0.0,     # fixed: dropping a stream would drop this head's only input
}


@HEADS.register("only")
class Unimodal(FusionHead):
    def __init__(self, *, stream: str = "", **common) -> None:
        """stream: the stream it reads (the name after `only:`); other args: FusionHead's
        (heads/layers unused)."""
        super().__init__(**common)
        if stream not in self.streams:
            raise ValueError(f"only:{stream}: no stream {stream!r} among {', '.join(self.streams)} "
                             "(name one: only:<stream>)")
        self.stream = stream
        self.temporal = self.temporal_encoder()
        self.head = self.task_heads(self.d)

    def forward(self, streams: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        s = self.stream
        return self.head(self.temporal(self.inputs[s](streams[s], masks[s])))   # (B, T, d) -> {task: ...}
