"""Aff-Wild2 valence-arousal annotation files.

Format (one file per annotated person and video)::

    valence,arousal
    0.125,-0.310        <- frame 0
    -5,-5               <- frame 1: no valid label (excluded from loss and metric)
    ...

Values are floats in [-1, 1]; -5 marks an invalid frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import InputError

HEADER = "valence,arousal"
INVALID = -5.0


def format_annotation(labels: np.ndarray) -> str:
    """Renders (N, 2) valence/arousal rows as file text; NaN or -5 rows become `-5,-5`."""
    labels = np.asarray(labels, dtype=np.float64)
    if labels.ndim != 2 or labels.shape[1] != 2:
        raise ValueError(f"labels must have shape (N, 2), got {labels.shape}")
    lines = [HEADER]
    for v, a in labels:
        if np.isnan(v) or np.isnan(a) or v == INVALID or a == INVALID:
            lines.append("-5,-5")
        else:
            if not (-1.0 <= v <= 1.0 and -1.0 <= a <= 1.0):
                raise ValueError(f"label ({v}, {a}) outside [-1, 1]")
            lines.append(f"{v:.4f},{a:.4f}")
    return "\n".join(lines) + "\n"


def write_annotation(path: Path, labels: np.ndarray) -> None:
    """Writes an Aff-Wild2 annotation file (header + one `v,a` line per frame)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_annotation(labels), encoding="utf-8")


def read_annotation(path: Path) -> np.ndarray:
    """Reads an annotation file into float32 (N, 2); invalid frames keep the value -5.

    Raises InputError naming the file and line for a missing file, a missing header,
    a non-numeric line or a value outside [-1, 1] that is not -5.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: annotation file not found")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines or lines[0].strip().replace(" ", "").lower() != HEADER:
        got = lines[0][:40] if lines else "an empty file"
        raise InputError(f"{path}: line 1: expected header {HEADER!r}, got {got!r}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split(",")
        try:
            if len(parts) != 2:
                raise ValueError
            v, a = float(parts[0]), float(parts[1])
        except ValueError:
            raise InputError(f"{path}: line {number}: expected 'valence,arousal', got {line!r}") from None
        for value in (v, a):
            if value != INVALID and not -1.0 <= value <= 1.0:
                raise InputError(f"{path}: line {number}: value {value} outside [-1, 1] and not -5")
        rows.append((v, a))
    return np.asarray(rows, dtype=np.float32).reshape(-1, 2)
