"""`va`: valence and arousal, two values in [-1, 1] per frame (Aff-Wild2's VA track).

Annotation file (`VA_Estimation_Challenge/<Split>/<name>.txt`)::

    valence,arousal
    0.125,-0.310        <- frame 0
    -5,-5               <- no valid label: in no loss or metric

Head: separate valence and arousal heads, Linear(d, 128), ReLU, Dropout, Linear(128, 1) each, no
tanh (as the JMT code). Loss: (1 - CCC_valence) + (1 - CCC_arousal) over the valid frames of the
batch. Metric: CCC per axis on all valid frames of a split concatenated and their mean
(`ccc_mean`), plus PCC and RMSE (pipeline.metrics.ccc: population moments). Post-processing,
explicit and reported: clipping to [-1, 1] and a per-video moving average, one width per axis
(the JMT code uses 20 frames for valence, 50 for arousal). Submission: `image_location,valence,arousal`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.metrics import ccc, ccc_from_sums, ccc_sums, ccc_torch
from pipeline.tasks import TASKS, Task, TaskOptions

AXES = ("valence", "arousal")


@dataclass(frozen=True)
class VAOptions(TaskOptions):
    """`tasks.va`: post-processing of the predictions before they are scored and written."""

    clip: bool = True           # clip predictions to [-1, 1]
    smooth_valence: int = 0     # moving-average width, frames (0: off)
    smooth_arousal: int = 0

    def __post_init__(self) -> None:
        for key in ("smooth_valence", "smooth_arousal"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0 (frames; 0: off), got {getattr(self, key)}")


@TASKS.register("va")
class ValenceArousal(Task):
    name = "va"
    width = 2
    columns = AXES
    values = 2
    folders = ("VA_Estimation_Challenge",)
    invalid = -5.0
    metric = "ccc_mean"
    metrics = ("ccc_valence", "ccc_arousal", "ccc_mean")
    outputs = AXES
    submission = AXES
    label_format = "{:.4f}"
    Options = VAOptions
    kind = "dimensional"
    title = "valence / arousal"
    table_title = "Valence-arousal (CCC)"
    names = AXES
    item = "axis"
    bounds = (-1.0, 1.0)
    panel_width = 124

    def parse_line(self, parts: list[str]) -> list[float]:
        if len(parts) != 2:
            raise ValueError("expected 'valence,arousal'")
        values = [float(p) for p in parts]
        for value in values:
            if value != self.invalid and not -1.0 <= value <= 1.0:
                raise ValueError(f"value {value} outside [-1, 1] and not -5")
        return values

    def format_annotation(self, labels: np.ndarray) -> str:
        """NaN or -5 rows become `-5,-5`; values with 4 decimals."""
        labels = np.asarray(labels, dtype=np.float64)
        if labels.ndim != 2 or labels.shape[1] != 2:
            raise ValueError(f"labels must have shape (N, 2), got {labels.shape}")
        lines = [",".join(AXES)]
        for v, a in labels:
            if np.isnan(v) or np.isnan(a) or v == self.invalid or a == self.invalid:
                lines.append("-5,-5")
            else:
                if not (-1.0 <= v <= 1.0 and -1.0 <= a <= 1.0):
                    raise ValueError(f"label ({v}, {a}) outside [-1, 1]")
                lines.append(f"{v:.4f},{a:.4f}")
        return "\n".join(lines) + "\n"

    def well_formed(self, labels: np.ndarray) -> np.ndarray:
        y = np.asarray(labels)
        return (((y >= -1) & (y <= 1)) | (y == self.invalid)).all(-1)

    def head(self, d: int, dropout: float):
        """Separate valence and arousal heads (layers.SeparateHeads), as the JMT code."""
        from pipeline.stage2.layers import SeparateHeads

        return SeparateHeads(d, AXES, dropout)

    def loss(self, pred, labels, valid, state):
        """(1 - CCC_v) + (1 - CCC_a) over the valid frames; None with fewer than 2."""
        m = valid.reshape(-1)
        if int(m.sum()) < 2:
            return None
        p, y = pred.reshape(-1, 2)[m].float(), labels.reshape(-1, 2)[m].float()
        return 2 - ccc_torch(p[:, 0], y[:, 0]) - ccc_torch(p[:, 1], y[:, 1])

    def postprocess(self, pred: np.ndarray) -> np.ndarray:
        """Clip and/or smooth one video's predictions (n, 2), as the options say."""
        o = self.options
        out = self.clipped(np.asarray(pred).astype(np.float64).copy())
        for k, width in enumerate((o.smooth_valence, o.smooth_arousal)):
            if width > 1:
                kernel = np.ones(width) / width
                padded = np.pad(out[:, k], (width // 2, width - 1 - width // 2), mode="edge")
                out[:, k] = np.convolve(padded, kernel, mode="valid")
        return out.astype(np.float32)

    def clipped(self, outputs: np.ndarray) -> np.ndarray:
        """Clipped to [-1, 1] (the labels' range) when `clip` is on."""
        return np.clip(outputs, *self.bounds) if self.options.clip else outputs

    @classmethod
    def describe_options(cls, options: dict) -> str:
        return (f"{cls.name} predictions clipped: {options.get('clip')}, smoothing: "
                f"{options.get('smooth_valence') or 'off'}/{options.get('smooth_arousal') or 'off'}")

    def score(self, pred: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """CCC (and PCC, RMSE) per axis over the frames given, and the CCC mean."""
        if len(labels) < 2:
            raise ValueError("no valid labels to score (every frame is -5)")
        out = {}
        for k, axis in enumerate(AXES):
            out[f"ccc_{axis}"] = ccc(pred[:, k], labels[:, k])
            out[f"pcc_{axis}"] = float(np.corrcoef(pred[:, k], labels[:, k])[0, 1]) if pred[:, k].std() > 0 else 0.0
            out[f"rmse_{axis}"] = float(np.sqrt(np.mean((pred[:, k] - labels[:, k]) ** 2)))
        out["ccc_mean"] = (out["ccc_valence"] + out["ccc_arousal"]) / 2
        out["frames"] = int(len(labels))
        return out

    def sums(self, pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(2, 6): CCC's sufficient statistics per axis (pipeline.metrics.ccc_sums)."""
        return np.stack([ccc_sums(pred[:, k], labels[:, k]) for k in range(2)])

    def from_sums(self, sums: np.ndarray) -> np.ndarray:
        return ccc_from_sums(sums).mean(-1)

    def from_sums_all(self, sums: np.ndarray) -> dict[str, float]:
        v, a = (float(x) for x in ccc_from_sums(sums))
        return {"ccc_valence": v, "ccc_arousal": a, "ccc_mean": (v + a) / 2}

    def submission_rows(self, pred: np.ndarray) -> list[str]:
        return [f"{v:.4f},{a:.4f}" for v, a in pred]
