"""The evaluation protocol: predict every frame of a split, then score all valid frames of the
split concatenated across videos (the official ABAW way), per axis and their mean.

Also the one place that slices a split by modality availability: the frames where the cache
says both streams are present, where the face is missing, and where the audio is missing
(`visual_mask` / `audio_mask`, True = present; what "present" means is stage 1's business,
docs/cache.md). `jmt evaluate` and `jmt compare` both score those subsets through it."""

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
        arrays = e.read(0, e.n, ("labels", "label_mask"))  # held in memory: no feature is read
        out[e.name] = (arrays["labels"], arrays["label_mask"])
    return out


# subset -> (what it holds, a frame's membership from its (visual, audio) presence). The
# subsets overlap: a frame with neither stream is in both no_face and no_audio.
SUBSETS = {
    "both": ("face and audio", lambda visual, audio: visual & audio),
    "no_face": ("no face", lambda visual, audio: ~visual),
    "no_audio": ("no audio", lambda visual, audio: ~audio),
}
MIN_SUBSET_FRAMES = 50  # below this a subset's CCC is too noisy to report: say so instead


def availability_of(entries: list[Entry]) -> dict[str, dict[str, np.ndarray]]:
    """subset -> entry name -> frame membership (n,) bool, from the cache's masks."""
    out: dict[str, dict[str, np.ndarray]] = {s: {} for s in SUBSETS}
    for e in entries:
        arrays = e.read(0, e.n, ("visual_mask", "audio_mask"))
        visual, audio = arrays["visual_mask"].astype(bool), arrays["audio_mask"].astype(bool)
        for s, (_, member) in SUBSETS.items():
            out[s][e.name] = member(visual, audio)
    return out


def restrict(labels: dict[str, tuple[np.ndarray, np.ndarray]],
             frames: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """labels whose valid mask keeps only the given frames (name -> (n,) bool); entries left
    with no valid frame are dropped, so what follows (scoring, resampling videos) sees only
    the videos that have such frames."""
    out = {}
    for name, (y, valid) in labels.items():
        keep = valid & frames[name]
        if keep.any():
            out[name] = (y, keep)
    return out


def score_subsets(preds: dict[str, np.ndarray], labels: dict[str, tuple[np.ndarray, np.ndarray]],
                  availability: dict[str, dict[str, np.ndarray]], *,
                  min_frames: int = MIN_SUBSET_FRAMES) -> dict[str, dict]:
    """Per availability subset: valid frames, videos holding them, and CCC valence / arousal /
    mean over those frames of the split concatenated (the official protocol restricted to the
    subset). A subset with fewer than `min_frames` valid frames is not scored: `scored` is
    False and `why` says so."""
    out = {}
    for subset, frames in availability.items():
        sub = restrict(labels, frames)
        n = int(sum(m.sum() for _, m in sub.values()))
        row: dict = {"frames": n, "videos": len(sub), "scored": False}
        if n < min_frames:
            row["why"] = f"{n} valid frames, fewer than {min_frames}"
        else:
            try:
                s = score({k: preds[k] for k in sub}, sub, subset)
                row.update(scored=True, **{k: s[k] for k in ("ccc_valence", "ccc_arousal", "ccc_mean")})
            except ValueError as exc:  # both constant: CCC undefined
                row["why"] = str(exc)
        out[subset] = row
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
