"""Prediction over windows, in one place: where windows start, the hop between them when a model
is applied, how a batch of windows is read, and the two protocols that predict every frame of a
video from windows of `window` frames.

Every head sees a window of frames and may look both ways inside it (attention, a BiLSTM, JCA's
correlation over the window).

- offline (`predict_entry`): windows every `hop` frames plus one ending at the last frame
  (`window_starts`, where training windows start too), the outputs of the windows covering a
  frame averaged; frame t may depend on up to a window of later frames. A model is applied with
  `inference_hop` (evaluate, validation during training, compare, predict, export).
- causal (`predict_entry_causal`): for every frame t the window that ENDS at t, its last output
  kept:

      window(t) = frames [max(0, t - window + 1), t]        (t + 1 frames while t < window - 1)
      y(t)      = model(window(t))[-1]

  No padding is ever added: near a video's start the window is simply shorter (the heads take
  any length), so the first frames are predicted from what was seen so far, as a live stream is.
  `RollingWindow` is the same rule one frame at a time (`jmt live`). The cost is a window per
  frame instead of about two (docs/measurements.md has the time and the metric cost per head).

`predict_split` predicts a list of entries under either (`PROTOCOLS`: `evaluate.protocol` and
`compare.protocol`, `--protocol` on both commands).
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

import numpy as np
import torch

from pipeline.tasks import TASKS, Task

if TYPE_CHECKING:
    from pipeline.stage2.data import CachedEntry

PROTOCOLS = ("offline", "causal")


def inference_hop(window: int) -> int:
    """The hop between prediction windows when a model is applied: half a window, so every frame
    but the first half-window's is predicted with context on both sides (`predict_entry`)."""
    return window // 2


def window_starts(n: int, window: int, hop: int) -> list[int]:
    """Window starts covering frames 0..n-1: every `hop`, plus one ending at the last frame."""
    if n <= window:
        return [0]
    starts = list(range(0, n - window + 1, hop))
    if starts[-1] != n - window:
        starts.append(n - window)
    return starts


def read_windows(entry: CachedEntry, starts: list[int], length: int, device: torch.device, *,
                 drop: str | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """The windows of `length` frames from each of `starts` (data.read_window: padded past the
    end), stacked: {streams, masks} of (b, length, ...) tensors on `device`; `drop` (a stream's
    name) masked everywhere."""
    from pipeline.stage2.data import read_window   # data imports this module (window_starts): here

    items = [read_window(entry, s, length) for s in starts]
    x = {part: {k: torch.stack([it[part][k] for it in items]).to(device) for k in items[0][part]}
         for part in ("streams", "masks")}                                   # (b, length, ...)
    if drop:
        x["masks"][drop] = torch.zeros_like(x["masks"][drop])
    return x


@torch.no_grad()
def last_outputs(model: torch.nn.Module, streams: dict[str, torch.Tensor],
                 masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model over windows (b, T, ...) -> each window's last frame's outputs {task: (b, width)}."""
    return {t: y[:, -1] for t, y in model(streams, masks).items()}


@torch.no_grad()
def predict_entry(model: torch.nn.Module, entry: CachedEntry, window: int, hop: int,
                  device: torch.device, *, drop: str | None = None, batch: int = 32) -> dict[str, np.ndarray]:
    """Per-frame outputs {task: (n, width)} for a whole entry, offline: overlapping windows,
    averaged.

    Windows are read and run `batch` at a time, so memory holds one batch of windows plus the
    (n, width) sums whatever the video's length. `drop` (a stream's name) masks that stream
    everywhere (robustness checks)."""
    total = {t: np.zeros((entry.n, TASKS.get(t).width), np.float64) for t in model.tasks}
    count = np.zeros(entry.n, np.float64)
    starts = window_starts(entry.n, window, hop)
    for i in range(0, len(starts), batch):
        group = starts[i:i + batch]
        x = read_windows(entry, group, window, device, drop=drop)                # (b, window, ...)
        out = {t: y.float().cpu().numpy() for t, y in model(x["streams"], x["masks"]).items()}  # (b, window, width)
        for j, s in enumerate(group):
            m = min(window, entry.n - s)
            for t in total:
                total[t][s:s + m] += out[t][j, :m]
            count[s:s + m] += 1
    return {t: (v / count[:, None]).astype(np.float32) for t, v in total.items()}


@torch.no_grad()
def predict_entry_causal(model: torch.nn.Module, entry: CachedEntry, window: int, device: torch.device, *,
                         drop: str | None = None, batch: int = 32) -> dict[str, np.ndarray]:
    """Per-frame raw outputs {task: (n, width)} of one entry, frame t from window(t) (module
    docstring). The full windows run `batch` at a time; the shorter ones at a video's start one
    by one (each has its own length). `drop` masks that stream everywhere."""
    out = {t: np.zeros((entry.n, TASKS.get(t).width), np.float32) for t in model.tasks}

    def run(ends: list[int], length: int) -> None:
        x = read_windows(entry, [t - length + 1 for t in ends], length, device, drop=drop)  # (b, length, ...)
        for t, y in last_outputs(model, x["streams"], x["masks"]).items():
            out[t][ends] = y.float().cpu().numpy()

    for t in range(min(window - 1, entry.n)):
        run([t], t + 1)
    full = list(range(window - 1, entry.n))
    for i in range(0, len(full), batch):
        run(full[i:i + batch], window)
    return out


def predict_split(model: torch.nn.Module, entries: list[CachedEntry], window: int, hop: int, device: torch.device,
                  tasks: dict[str, Task], *, drop: str | None = None,
                  protocol: str = "offline") -> dict[str, dict[str, np.ndarray]]:
    """Per entry and task, the task's outputs (n, width) activated (none, softmax, sigmoid) under
    `protocol` (offline: `predict_entry`, overlapping windows every `hop`, averaged; causal:
    `predict_entry_causal`, window(t) per frame, `hop` unused), model in eval mode."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r}: one of {', '.join(PROTOCOLS)}")
    model.eval()
    out = {}
    for e in entries:
        if protocol == "offline":
            raw = predict_entry(model, e, window, hop, device, drop=drop)
        else:
            raw = predict_entry_causal(model, e, window, device, drop=drop)
        out[e.name] = {t: tasks[t].activate(raw[t]) for t in tasks}
    return out


class RollingWindow:
    """The causal rule one frame at a time (`jmt live`): frames are pushed as they come, and each
    push runs the model over the last `window` of them, [max(0, t - window + 1), t], keeping
    the last output (`predict_entry_causal` computes the same for a whole entry at once)."""

    def __init__(self, model: torch.nn.Module, window: int, widths: dict[str, int]) -> None:
        self.model, self.window, self.widths = model, window, widths
        self.frames: collections.deque = collections.deque(maxlen=window)   # (features, masks) per frame

    def warm_up(self) -> None:
        """One pass over a full window and one over a single frame, outputs discarded."""
        for length in (self.window, 1):
            streams = {s: torch.zeros(1, length, d) for s, d in self.widths.items()}
            masks = {s: torch.ones(1, length, dtype=torch.bool) for s in self.widths}
            last_outputs(self.model, streams, masks)

    def skip(self) -> None:
        """A frame with no stream present (a dropped one): in the window, no output."""
        self.frames.append(({s: np.zeros(d, np.float32) for s, d in self.widths.items()},
                            {s: False for s in self.widths}))

    def push(self, features: dict[str, np.ndarray], masks: dict[str, bool]) -> dict[str, torch.Tensor]:
        """Adds a frame ({stream: (D,) features}, {stream: present}) and returns the model's raw
        outputs for it {task: (1, width)}."""
        self.frames.append((features, masks))
        streams = {s: torch.as_tensor(np.stack([f[s] for f, _ in self.frames]))[None] for s in self.widths}
        present = {s: torch.as_tensor([m[s] for _, m in self.frames])[None] for s in self.widths}
        return last_outputs(self.model, streams, present)                   # {task: (1, width)}
