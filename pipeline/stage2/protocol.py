"""The evaluation protocol: predict every frame of a split, then score all valid frames of the
split concatenated across videos (the official ABAW way), per axis and their mean."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.errors import InputError
from pipeline.metrics import ccc
from pipeline.stage2.data import Entry, predict_entry


def predict_split(model: torch.nn.Module, entries: list[Entry], window: int, hop: int,
                  device: torch.device, *, drop: str | None = None) -> dict[str, np.ndarray]:
    """Per-entry predictions (n, 2), model in eval mode."""
    model.eval()
    return {e.name: predict_entry(model, e, window, hop, device, drop=drop) for e in entries}


def labels_of(entries: list[Entry]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-entry (labels (n, 2), label_mask (n,))."""
    out = {}
    for e in entries:
        arrays = e.read(0, e.n)
        out[e.name] = (arrays["labels"], arrays["label_mask"])
    return out


def score(preds: dict[str, np.ndarray], labels: dict[str, tuple[np.ndarray, np.ndarray]],
          split: str = "split") -> dict[str, float]:
    """CCC (and PCC, RMSE) per axis over all valid frames of all entries, and the CCC mean."""
    p = np.concatenate([preds[n][labels[n][1]] for n in preds])
    y = np.concatenate([labels[n][0][labels[n][1]] for n in preds])
    if len(y) < 2:
        raise InputError(f"{split}: no valid labels to score (every frame is -5)")
    out = {}
    for k, axis in enumerate(("valence", "arousal")):
        out[f"ccc_{axis}"] = ccc(p[:, k], y[:, k])
        out[f"pcc_{axis}"] = float(np.corrcoef(p[:, k], y[:, k])[0, 1]) if p[:, k].std() > 0 else 0.0
        out[f"rmse_{axis}"] = float(np.sqrt(np.mean((p[:, k] - y[:, k]) ** 2)))
    out["ccc_mean"] = (out["ccc_valence"] + out["ccc_arousal"]) / 2
    out["frames"] = int(len(y))
    return out
