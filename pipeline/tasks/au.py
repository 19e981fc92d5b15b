"""`au`: 12 facial action units, each present (1) or not (0) per frame (Aff-Wild2's AU track).

Annotation file (`AU_Detection_Challenge/<Split>/<name>.txt`)::

    AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26
    0,0,0,1,0,0,1,0,0,0,0,0     <- frame 0 (AU6 and AU12: a smile)
    -1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1   <- no valid label: in no loss or metric

A frame with any -1 is invalid for the task. Head: Linear(d, 128), ReLU, Dropout,
Linear(128, 12) logits. Loss: binary cross-entropy over the valid frames, optionally with
`pos_weight` per AU from the training split (negatives / positives, 1 for an AU never present).
Metric: the mean over the 12 AUs of the binary F1 at threshold 0.5 (`f1`, the challenge's), on
all valid frames of a split concatenated (pipeline.metrics: from TP/FP/FN counts, so video
sums add up exactly). Option `tune_thresholds`: per-AU thresholds chosen on the validation
split alone, reported as `f1_tuned` beside `f1` (never in place of it; pipeline.stage2.protocol).
Outputs: sigmoid probabilities. Submission: `image_location,AU1,...,AU26` with 0/1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.metrics import binary_counts, f1_from_counts
from pipeline.tasks import TASKS, Task, TaskOptions

AUS = ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26")
THRESHOLD = 0.5
# candidate thresholds of `tune_thresholds`
GRID = tuple(round(t, 2) for t in np.arange(0.05, 0.96, 0.05))


@dataclass(frozen=True)
class AUOptions(TaskOptions):
    """`tasks.au`: the loss and the validation-tuned thresholds."""

    pos_weight: bool = False        # weight each AU's positives by negatives / positives (training split)
    tune_thresholds: bool = False   # also report f1_tuned: per-AU thresholds chosen on validation


@TASKS.register("au")
class ActionUnits(Task):
    name = "au"
    width = len(AUS)
    columns = AUS
    values = len(AUS)
    folders = ("AU_Detection_Challenge",)
    invalid = -1.0
    metric = "f1"
    metrics = ("f1",)
    outputs = tuple(f"p_{a.lower()}" for a in AUS)
    submission = AUS
    Options = AUOptions
    kind = "multilabel"
    title = "action units"
    table_title = f"Action units (mean F1 over {len(AUS)} AUs at {THRESHOLD:g})"
    names = AUS
    item = "AU"
    bounds = (0.0, 1.0)
    threshold = THRESHOLD
    panel_width = 100

    def parse_line(self, parts: list[str]) -> list[float]:
        if len(parts) != len(AUS):
            raise ValueError(f"expected {len(AUS)} comma-separated values")
        values = [int(p) for p in parts]  # ValueError for a non-integer
        bad = [v for v in values if v not in (-1, 0, 1)]
        if bad:
            raise ValueError(f"value {bad[0]} is not 0, 1 or -1")
        return [float(v) for v in values]

    def format_annotation(self, labels: np.ndarray) -> str:
        labels = np.asarray(labels)
        if labels.ndim != 2 or labels.shape[1] != len(AUS):
            raise ValueError(f"labels must have shape (N, {len(AUS)}), got {labels.shape}")
        lines = [",".join(AUS)]
        for row in labels:
            if (row == self.invalid).any():
                lines.append(",".join(["-1"] * len(AUS)))
            else:
                if not np.isin(row, (0, 1)).all():
                    raise ValueError(f"AU values must be 0 or 1, got {row.tolist()}")
                lines.append(",".join(str(int(v)) for v in row))
        return "\n".join(lines) + "\n"

    def well_formed(self, labels: np.ndarray) -> np.ndarray:
        y = np.asarray(labels)
        return np.isin(y, (0, 1)).all(-1) | (y == self.invalid).all(-1)

    def loss_state(self, labels: np.ndarray) -> dict:
        import torch

        if not self.options.pos_weight:
            return {}
        pos = np.asarray(labels, np.float64).sum(0)
        neg = len(labels) - pos
        return {"pos_weight": torch.as_tensor(np.where(pos > 0, neg / np.maximum(pos, 1), 1.0), dtype=torch.float32)}

    def loss(self, pred, labels, valid, state):
        """Binary cross-entropy over the valid frames and every AU."""
        import torch.nn.functional as F

        m = valid.reshape(-1)
        if int(m.sum()) < 1:
            return None
        logits = pred.reshape(-1, self.width)[m].float()
        target = labels.reshape(-1, self.width)[m].float()
        weight = state.get("pos_weight")
        return F.binary_cross_entropy_with_logits(logits, target,
                                                  pos_weight=None if weight is None else weight.to(logits.device))

    def activate(self, pred: np.ndarray) -> np.ndarray:
        """Logits -> sigmoid probabilities (n, 12)."""
        return (1.0 / (1.0 + np.exp(-np.asarray(pred, np.float64)))).astype(np.float32)

    def decisions(self, pred: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
        return (np.asarray(pred) >= (THRESHOLD if thresholds is None else thresholds)).astype(np.int64)

    def sums(self, pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(12, 4): TP, FP, FN, TN of each AU at the threshold 0.5."""
        return binary_counts(self.decisions(pred), np.asarray(labels) > 0.5)

    def from_sums(self, sums: np.ndarray) -> np.ndarray:
        s = np.asarray(sums, np.float64)
        f1 = f1_from_counts(s[..., 0], s[..., 1], s[..., 2]).mean(-1)
        return np.where(s[..., 0, :].sum(-1) > 0, f1, np.nan)   # NaN: no frame at all

    def from_sums_all(self, sums: np.ndarray) -> dict[str, float]:
        s = np.asarray(sums, np.float64)
        per_au = f1_from_counts(s[..., 0], s[..., 1], s[..., 2])
        return {"f1": float(per_au.mean()), **{f"f1_{a}": float(f) for a, f in zip(AUS, per_au)}}

    def score(self, pred: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        if len(labels) < 1:
            raise ValueError("no valid labels to score (every frame is -1)")
        return super().score(pred, labels)

    def tune(self, pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Per-AU thresholds maximising each AU's F1 on these (validation) frames: (12,)."""
        truth = np.asarray(labels) > 0.5
        best = np.full(self.width, THRESHOLD)
        best_f1 = np.full(self.width, -1.0)
        for t in GRID:
            c = binary_counts(np.asarray(pred) >= t, truth)
            f1 = f1_from_counts(c[:, 0], c[:, 1], c[:, 2])
            better = f1 > best_f1 + 1e-12
            best[better], best_f1[better] = t, f1[better]
        return best

    def score_at(self, pred: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> float:
        """Mean F1 over the AUs at the given per-AU thresholds."""
        c = binary_counts(self.decisions(pred, thresholds), np.asarray(labels) > 0.5)
        return float(f1_from_counts(c[:, 0], c[:, 1], c[:, 2]).mean())

    def submission_rows(self, pred: np.ndarray) -> list[str]:
        return [",".join(str(int(v)) for v in row) for row in self.decisions(pred)]

    def table(self, outputs: np.ndarray, labels: np.ndarray | None = None) -> dict[str, list[str]]:
        """Each AU's 0/1 decision at 0.5 (`au1`...), then its probability (`p_au1`...)."""
        decided = self.decisions(outputs)
        return {**{a.lower(): [str(int(v)) for v in decided[:, k]] for k, a in enumerate(AUS)},
                **super().table(outputs, labels)}
