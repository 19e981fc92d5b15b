"""The causal protocol: the prediction for frame t uses frames <= t only.

Every head sees a window of frames and may look both ways inside it (attention, a BiLSTM, JCA's
correlation over the window), so the offline protocol (`data.predict_entry`: overlapping
windows, outputs averaged) lets frame t depend on up to a window of later frames. Causal mode
runs, for every frame t, the window that ENDS at t and keeps the window's last output:

    window(t) = frames [max(0, t - window + 1), t]        (t + 1 frames while t < window - 1)
    y(t)      = model(window(t))[-1]

No padding is ever added: near a video's start the window is simply shorter (the heads take any
length), so the first frames are predicted from what was seen so far, as a live stream is
(`jmt live` runs exactly this, one frame at a time). The cost is a window per frame instead of
about two (docs/measurements.md has the time and the metric cost per head).

Selectable where the offline protocol is used: `evaluate.protocol` and `compare.protocol`
(`offline` | `causal`, and `--protocol` on both commands).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.stage2.data import Entry, read_window
from pipeline.stage2.protocol import predict_split as offline_split
from pipeline.tasks import TASKS, Task

PROTOCOLS = ("offline", "causal")


def protocol_paths(paths: dict[str, str], protocol: str) -> dict[str, str]:
    """Output paths for a protocol chosen on the command line against the params' one: `x.json`
    -> `x-causal.json`, `reports/eval` -> `reports/eval-causal`, so the params' (DVC-tracked)
    outputs are never overwritten by the other protocol's."""
    out = {}
    for key, value in paths.items():
        p = Path(value)
        out[key] = str(p.with_name(f"{p.stem}-{protocol}{p.suffix}"))
    return out


@torch.no_grad()
def last_outputs(model: torch.nn.Module, streams: dict[str, torch.Tensor],
                 masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model over windows (b, T, ...) -> each window's last frame's outputs {task: (b, width)}."""
    return {t: y[:, -1] for t, y in model(streams, masks).items()}


@torch.no_grad()
def predict_entry_causal(model: torch.nn.Module, entry: Entry, window: int, device: torch.device, *,
                         drop: str | None = None, batch: int = 32) -> dict[str, np.ndarray]:
    """Per-frame raw outputs {task: (n, width)} of one entry, frame t from window(t) (module
    docstring). The full windows run `batch` at a time; the shorter ones at a video's start one
    by one (each has its own length). `drop` masks that stream everywhere."""
    out = {t: np.zeros((entry.n, TASKS.get(t).width), np.float32) for t in model.tasks}

    def run(ends: list[int], length: int) -> None:
        items = [read_window(entry, t - length + 1, length) for t in ends]
        x = {part: {k: torch.stack([it[part][k] for it in items]).to(device) for k in items[0][part]}
             for part in ("streams", "masks")}                                   # (b, length, ...)
        if drop:
            x["masks"][drop] = torch.zeros_like(x["masks"][drop])
        for t, y in last_outputs(model, x["streams"], x["masks"]).items():
            out[t][ends] = y.float().cpu().numpy()

    for t in range(min(window - 1, entry.n)):
        run([t], t + 1)
    full = list(range(window - 1, entry.n))
    for i in range(0, len(full), batch):
        run(full[i:i + batch], window)
    return out


def predict_split(model: torch.nn.Module, entries: list[Entry], window: int, hop: int, device: torch.device,
                  tasks: dict[str, Task], *, drop: str | None = None,
                  protocol: str = "offline") -> dict[str, dict[str, np.ndarray]]:
    """Per entry and task, the task's activated outputs (n, width) under `protocol` (offline:
    protocol.predict_split, overlapping windows every `hop`, averaged; causal: window(t) per
    frame), model in eval mode."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r}: one of {', '.join(PROTOCOLS)}")
    if protocol == "offline":
        return offline_split(model, entries, window, hop, device, tasks, drop=drop)
    model.eval()
    out = {}
    for e in entries:
        raw = predict_entry_causal(model, e, window, device, drop=drop)
        out[e.name] = {t: tasks[t].activate(raw[t]) for t in tasks}
    return out
