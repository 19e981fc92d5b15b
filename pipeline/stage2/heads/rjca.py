"""`rjca`: recursive joint cross-attention (Praveen et al., 2023): the JCA step (see jca.py)
applied `iterations` times with shared weights, each pass re-forming the joint feature from the
attended streams (x^{(r+1)} = JCA(x^{(r)}), r = 0..iterations-1); the temporal model is a BiLSTM
in the original (set `temporal: bilstm`). Any N >= 1 streams, as jca."""

from __future__ import annotations

from pipeline.stage2.heads import HEADS
from pipeline.stage2.heads.jca import JCA


SEARCH_SPACE = {  # jmt tune: this head's part of the search space (pipeline/stage2/tune/space.py)
    "model.iterations": [1, 2, 3],     # the paper uses 2-3 recursive passes
}


@HEADS.register("rjca")
class RJCA(JCA):
    def __init__(self, *, iterations: int = 2, **common) -> None:
        """iterations: recursive JCA passes (2-3 in the paper); other args: FusionHead."""
        if iterations < 1:
            raise ValueError(f"rjca iterations must be >= 1, got {iterations}")
        super().__init__(**common)
        self.iterations = iterations
