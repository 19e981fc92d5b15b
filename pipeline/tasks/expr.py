"""`expr`: one of Aff-Wild2's 8 expression classes per frame (the EXPR track).

Annotation file (`EXPR_Recognition_Challenge/<Split>/<name>.txt`; older releases name the folder
`EXPR_Classification_Challenge`)::

    Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other
    4                   <- frame 0: the class index 0-7 (here Happiness)
    -1                  <- no valid label: in no loss or metric

Head: Linear(d, 128), ReLU, Dropout, Linear(128, 8) logits. Loss: cross-entropy over the valid
frames, optionally weighted per class from the training split (`class_weights`: w_c = N / (8 n_c),
scikit-learn's "balanced"; a class absent from training gets weight 0). Metric: the challenge's
macro F1 over the 8 classes (`f1`), and accuracy, on all valid frames of a split concatenated
(pipeline.metrics: from the confusion matrix, so video sums add up exactly). Outputs: softmax
probabilities; the decision is the most probable class. Submission:
`image_location,Neutral,...,Other` with the class index per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.metrics import confusion, macro_f1_from_confusion
from pipeline.tasks import TASKS, Task, TaskOptions

CLASSES = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other")


@dataclass(frozen=True)
class ExprOptions(TaskOptions):
    """`tasks.expr`: the loss."""

    class_weights: bool = False   # weight the cross-entropy by inverse class frequency (training split)


@TASKS.register("expr")
class Expression(Task):
    name = "expr"
    width = len(CLASSES)
    columns = CLASSES
    values = 1                    # the class index (the header names the 8 classes)
    folders = ("EXPR_Recognition_Challenge", "EXPR_Classification_Challenge")
    invalid = -1.0
    metric = "f1"
    metrics = ("f1", "accuracy")
    outputs = tuple(f"p_{c.lower()}" for c in CLASSES)
    submission = CLASSES
    Options = ExprOptions
    kind = "categorical"
    title = "expression"
    table_title = f"Expression (macro F1 over {len(CLASSES)} classes; accuracy)"
    names = CLASSES
    item = "class"
    bounds = (0.0, 1.0)
    panel_width = 132

    def parse_line(self, parts: list[str]) -> list[float]:
        if len(parts) != 1:
            raise ValueError("expected one class index per line")
        value = int(parts[0])  # ValueError for a non-integer
        if not (value == -1 or 0 <= value < len(CLASSES)):
            raise ValueError(f"class index {value} is not in 0..{len(CLASSES) - 1} or -1")
        return [float(value)]

    def format_annotation(self, labels: np.ndarray) -> str:
        labels = np.asarray(labels).reshape(-1)
        lines = [",".join(CLASSES)]
        for value in labels:
            v = int(value)
            if not (v == -1 or 0 <= v < len(CLASSES)):
                raise ValueError(f"class index {v} is not in 0..{len(CLASSES) - 1} or -1")
            lines.append(str(v))
        return "\n".join(lines) + "\n"

    def well_formed(self, labels: np.ndarray) -> np.ndarray:
        y = np.asarray(labels)[:, 0]
        return (y == np.round(y)) & (y >= -1) & (y < self.width)

    def loss_state(self, labels: np.ndarray) -> dict:
        import torch

        if not self.options.class_weights:
            return {}
        counts = np.bincount(np.asarray(labels, np.int64).ravel(), minlength=self.width).astype(np.float64)
        weights = np.where(counts > 0, counts.sum() / (self.width * np.maximum(counts, 1)), 0.0)
        return {"class_weights": torch.as_tensor(weights, dtype=torch.float32)}

    def loss(self, pred, labels, valid, state):
        """Cross-entropy over the valid frames (class-weighted when the state has weights)."""
        import torch.nn.functional as F

        m = valid.reshape(-1)
        if int(m.sum()) < 1:
            return None
        logits = pred.reshape(-1, self.width)[m].float()
        target = labels.reshape(-1)[m].long()
        weight = state.get("class_weights")
        if weight is not None:
            weight = weight.to(logits.device)
            if float(weight[target].sum()) == 0:  # only classes absent from training: nothing to learn
                return None
        return F.cross_entropy(logits, target, weight=weight)

    def activate(self, pred: np.ndarray) -> np.ndarray:
        """Logits -> softmax probabilities (n, 8)."""
        x = np.asarray(pred, np.float64)
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def decisions(self, pred: np.ndarray) -> np.ndarray:
        return np.asarray(pred).argmax(axis=1)[:, None]

    def sums(self, pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(8, 8): the confusion matrix [true, predicted] of the frames given."""
        return confusion(np.asarray(pred).argmax(axis=1), np.asarray(labels).reshape(-1).astype(np.int64),
                         self.width)

    def from_sums(self, sums: np.ndarray) -> np.ndarray:
        m = np.asarray(sums, np.float64)
        return np.where(m.sum((-2, -1)) > 0, macro_f1_from_confusion(m), np.nan)

    def from_sums_all(self, sums: np.ndarray) -> dict[str, float]:
        m = np.asarray(sums, np.float64)
        total = m.sum()
        return {"f1": float(self.from_sums(m)),
                "accuracy": float(np.trace(m) / total) if total else float("nan")}

    def score(self, pred: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        if len(labels) < 1:
            raise ValueError("no valid labels to score (every frame is -1)")
        return super().score(pred, labels)

    def submission_rows(self, pred: np.ndarray) -> list[str]:
        return [str(int(c)) for c in self.decisions(pred)[:, 0]]

    def table(self, outputs: np.ndarray, labels: np.ndarray | None = None) -> dict[str, list[str]]:
        """`expression` (the most probable class's name), then each class's probability."""
        out = {"expression": [CLASSES[int(c)] for c in self.decisions(outputs)[:, 0]], **super().table(outputs)}
        if labels is not None:
            out["label_expression"] = [CLASSES[int(v)] if v >= 0 else "-1" for v in labels[:, 0]]
        return out
