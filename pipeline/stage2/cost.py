"""What a head costs: parameters, MFLOPs per frame (torch's FLOP counter, matmuls and convs
at the training window length) and CPU latency per 1000 frames — for `jmt compare`."""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.stage2.heads import count_parameters


def _inputs(streams: dict[str, int], window: int, batch: int = 1):
    return ({s: torch.randn(batch, window, d) for s, d in streams.items()},
            {s: torch.ones(batch, window, dtype=torch.bool) for s in streams})


@torch.no_grad()
def head_cost(model: torch.nn.Module, streams: dict[str, int], window: int,
              *, repeats: int = 5, batch: int = 16) -> dict:
    """{'parameters', 'mflops_per_frame', 'cpu_ms_per_1000_frames'} of a head in eval mode
    (streams: name -> input width)."""
    model = model.eval().cpu()
    counter = FlopCounterMode(display=False)
    with counter:
        model(*_inputs(streams, window))
    flops = counter.get_total_flops() / window
    x = _inputs(streams, window, batch)
    model(*x)  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        model(*x)
    per_frame = (time.perf_counter() - t0) / (repeats * batch * window)
    return {"parameters": count_parameters(model), "mflops_per_frame": round(flops / 1e6, 6),
            "cpu_ms_per_1000_frames": round(per_frame * 1e6, 2)}
