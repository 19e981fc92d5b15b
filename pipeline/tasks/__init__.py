"""Per-frame tasks behind a registry: `va` (valence-arousal), `expr` (expression), `au` (action units).

A task is one file holding everything the pipeline needs to know about it (as torchmetrics keeps
a metric in one class and Hugging Face heads declare their problem type):

- its Aff-Wild2 annotation files: folder names, header, one line per frame, the invalid value
  (`read_annotation`, `format_annotation`; stage 1's `jmt labels` reads them through the task);
- its output: width per frame and the head that maps a fused (B, T, d) sequence to it;
- its loss over the valid frames of a batch, with statistics of the training split when an
  option asks for them (class weights, pos_weight);
- its metrics over the valid frames of a split concatenated (the official protocol), the one
  that counts (`metric`: summed over tasks for early stopping and the multi-task measure), and
  additive per-video statistics for bootstrap intervals (`sums` -> `from_sums`);
- its output activation (none; softmax; sigmoid), its reported post-processing options
  (va's clipping and smoothing) and its submission file;
- how its outputs are shown, so that no code outside this folder names a task: its `kind` (one
  of `KINDS`: values on axes, one class of several, labels each on or off), the words for it
  (`title`, `table_title`, `item`), the names of its outputs in figures (`names`), their
  `bounds`, the decision `threshold` of a multi-label task, its column's width in the overlay
  (`panel_width`), the outputs as shown (`clipped`) and its options in words (`describe_options`).
  `jmt predict`'s CSV, plot and overlay, `jmt live`'s lines, `jmt export`'s int8 bound, the report
  and the comparison tables take all of it from the task.

A task's options are the `tasks.<name>` section of params.yaml (`Options`, validated with the
rest of the params). Labels are float32 arrays (frames, values); a frame is valid for a
task when none of its values is the task's `invalid` marker. Adding a task is one new file in
this folder that registers a `Task` subclass with `@TASKS.register("<name>")`: every module
here is imported (`_register_all`), and the labels stage, the Aff-Wild2 adapter (its `folders`),
the params (`tasks.<name>`: its `Options`), training, evaluation, the comparison and the
submission files take it from the registry.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from pipeline.errors import InputError
from pipeline.registry import Registry

if TYPE_CHECKING:  # torch is imported where a head or a loss is made: stage 1 and the params need only numpy
    import torch
    import torch.nn as nn

TASKS: Registry = Registry("task")

# What a task's outputs are, hence how they are drawn (the overlay's columns in this order,
# predict's plot, the report's figures): "dimensional", values on axes (va: a point of the
# valence-arousal plane, its curves over time); "categorical", the probabilities of one class of
# several, the most probable the decision (expr: bars, a confusion matrix); "multilabel", a
# probability per label, each label on at or above `threshold` (au: bars, F1 per label).
KINDS = ("dimensional", "categorical", "multilabel")


@dataclass(frozen=True)
class TaskOptions:
    """A task's options (`tasks.<name>` in params.yaml). A plain frozen dataclass, so a task needs
    neither pydantic nor torch to be read; the params loader makes a strict section of its fields
    (pipeline/config.py: unknown keys and wrong types rejected) and builds it to check the
    values, which a subclass does in `__post_init__` (ranges)."""

    def as_dict(self) -> dict:
        return asdict(self)


class Task:
    """Base of every task; subclasses set the class attributes and the methods marked so."""

    name: ClassVar[str]
    width: ClassVar[int]                  # a head's output per frame
    columns: ClassVar[tuple[str, ...]]    # the annotation file's header
    values: ClassVar[int]                 # label values per frame (VA 2, EXPR 1: the class index, AU 12)
    folders: ClassVar[tuple[str, ...]]    # Aff-Wild2 annotation folders (current name first)
    invalid: ClassVar[float]              # the value marking a frame without a valid label
    metric: ClassVar[str]                 # the metric that counts (early stopping, multi-task sum)
    metrics: ClassVar[tuple[str, ...]]    # the metrics tables show, `metric` among them
    outputs: ClassVar[tuple[str, ...]]    # names of the `width` post-processed values (CSV columns)
    submission: ClassVar[tuple[str, ...]]  # the submission file's columns after image_location
    label_format: ClassVar[str] = "{:.0f}"   # how a label value is written in CSV files
    Options: ClassVar[type[TaskOptions]] = TaskOptions
    # how the outputs are shown (the module docstring; KINDS)
    kind: ClassVar[str]                   # one of KINDS
    title: ClassVar[str]                  # the task in words, lower case: the overlay's column, predict's plot
    table_title: ClassVar[str]            # the comparison tables' heading: the task and its metric in words
    names: ClassVar[tuple[str, ...]]      # each of the `width` outputs as figures name it: axes, classes, labels
    item: ClassVar[str]                   # what one of `names` is, in the report's words ("F1 per AU")
    bounds: ClassVar[tuple[float, float]]  # the outputs' range: an axis's ends (dimensional: symmetric about
    #                                       0, the plane's centre), a probability's (0, 1)
    threshold: ClassVar[float | None] = None  # multilabel: a label is on at or above it (the overlay, the report)
    panel_width: ClassVar[int]            # the overlay's column for the task, px at its 240-px design height

    def __init__(self, options: TaskOptions | None = None) -> None:
        self.options = options if options is not None else self.Options()

    # ---- annotation files -------------------------------------------------------------------

    def parse_line(self, parts: list[str]) -> list[float]:
        """One annotation line's values (split at commas); ValueError when it is not one."""
        raise NotImplementedError

    def read_annotation(self, path: Path) -> np.ndarray:
        """An annotation file -> float32 (frames, values), invalid frames kept as `invalid`.
        InputError naming the file and line for a missing file, a wrong header or a bad line."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: annotation file not found")
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        header = ",".join(self.columns)
        if not lines or lines[0].strip().replace(" ", "").lower() != header.lower():
            got = lines[0][:60] if lines else "an empty file"
            raise InputError(f"{path}: line 1: expected header {header!r}, got {got!r}")
        rows = []
        for number, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            try:
                rows.append(self.parse_line([p.strip() for p in line.split(",")]))
            except ValueError as exc:
                raise InputError(f"{path}: line {number}: {exc} (got {line[:80]!r})") from None
        return np.asarray(rows, dtype=np.float32).reshape(-1, self.values)

    def format_annotation(self, labels: np.ndarray) -> str:
        """(frames, values) labels -> the text of an annotation file."""
        raise NotImplementedError

    def write_annotation(self, path: Path, labels: np.ndarray) -> None:
        """Writes an annotation file (header + one line per frame)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.format_annotation(labels), encoding="utf-8")

    def valid(self, labels: np.ndarray) -> np.ndarray:
        """(frames,) bool: True where no value of the frame is the invalid marker."""
        return (np.asarray(labels) != self.invalid).all(axis=-1)

    def well_formed(self, labels: np.ndarray) -> np.ndarray:
        """(frames,) bool: the frame's values are ones its annotation file may hold (`jmt cache
        verify`): valid values, or the invalid marker."""
        raise NotImplementedError

    def missing(self, n: int) -> np.ndarray:
        """Labels of n frames without any valid label."""
        return np.full((n, self.values), self.invalid, np.float32)

    # ---- model and loss ---------------------------------------------------------------------

    def head(self, d: int, dropout: float) -> nn.Module:
        """The output head: (B, T, d) -> (B, T, width)."""
        import torch.nn as nn

        return nn.Sequential(nn.Linear(d, 128), nn.ReLU(), nn.Dropout(dropout), nn.Linear(128, self.width))

    def loss_state(self, labels: np.ndarray) -> dict[str, torch.Tensor]:
        """What the loss needs from the training split's valid labels (frames, k); {} by default."""
        return {}

    def loss(self, pred: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor,
             state: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The loss over the valid frames of a batch: pred (B, T, width), labels (B, T, k),
        valid (B, T); None when the batch has too few valid frames for it."""
        raise NotImplementedError

    # ---- evaluation ---------------------------------------------------------------------------

    def activate(self, pred: np.ndarray) -> np.ndarray:
        """One video's raw head outputs (n, width) -> the task's outputs (n, width) float32: the
        output nonlinearity (va: none; expr: softmax; au: sigmoid). Training's validation scores these."""
        return np.asarray(pred, np.float32)

    def postprocess(self, outputs: np.ndarray) -> np.ndarray:
        """One video's outputs (n, width) -> what `jmt evaluate` scores as `post` and writes: the
        task's explicit, reported post-processing options (va: clipping, smoothing); none by default."""
        return np.asarray(outputs, np.float32)

    def clipped(self, outputs: np.ndarray) -> np.ndarray:
        """Outputs (..., width) clipped to `bounds` where the task's options say so (va's `clip`):
        what `postprocess`, `jmt live`'s lines and `jmt export`'s int8 bound (default options) use;
        unchanged by default."""
        return outputs

    @classmethod
    def describe_options(cls, options: dict) -> str:
        """The reported post-processing options (a params `tasks.<name>` section as a dict) in
        words for the comparison's paragraph; "" when the task has none."""
        return ""

    def score(self, pred: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Metrics over the valid frames of a split concatenated: pred (N, width) activated
        outputs (or post-processed), labels (N, values), both already restricted to valid frames."""
        out = self.from_sums_all(self.sums(pred, labels))
        out["frames"] = int(len(labels))
        return out

    def sums(self, pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Additive statistics of the metric over frames (valid ones, activated outputs):
        the sums over videos give the split's metric exactly (`from_sums`)."""
        raise NotImplementedError

    def from_sums(self, sums: np.ndarray) -> np.ndarray:
        """The main metric from summed statistics (..., *S) -> (...); NaN where undefined."""
        raise NotImplementedError

    def from_sums_all(self, sums: np.ndarray) -> dict[str, float]:
        """Every metric of `metrics` from one split's summed statistics."""
        raise NotImplementedError

    def decisions(self, pred: np.ndarray) -> np.ndarray:
        """Outputs (n, width) -> the values of the submission file (n, columns)."""
        return pred

    def submission_rows(self, pred: np.ndarray) -> list[str]:
        """The submission values of each frame as text (after `image_location,`)."""
        raise NotImplementedError

    def table(self, outputs: np.ndarray, labels: np.ndarray | None = None) -> dict[str, list[str]]:
        """Per-frame CSV columns (`jmt predict`, `jmt evaluate`'s per-video files): column name ->
        each frame's text; the outputs, then (given labels) `label_<column>` with the invalid
        marker where there is none."""
        out = {name: [f"{v:.4f}" for v in outputs[:, k]] for k, name in enumerate(self.outputs)}
        if labels is not None:
            out.update(self.label_table(labels))
        return out

    def label_table(self, labels: np.ndarray) -> dict[str, list[str]]:
        """The labels' CSV columns: `label_<column>` per label value."""
        names = self.columns if self.values == len(self.columns) else (self.name,)
        return {f"label_{n.lower()}": [self.label_format.format(v) for v in labels[:, k]] for k, n in enumerate(names)}


def build_task(name: str, options: object | None = None) -> Task:
    """A registered task with its options: the task's Options, or a params section with its
    fields (`params.tasks.<name>`), or None for the defaults."""
    cls = TASKS.get(name)
    if options is not None and not isinstance(options, cls.Options):
        options = cls.Options(**options.model_dump())
    return cls(options)


def tasks_of(names: list[str] | tuple[str, ...], options: object | None = None) -> dict[str, Task]:
    """name -> task, in the order given, with each one's options from a params `tasks` section."""
    return {n: build_task(n, getattr(options, n, None) if options is not None else None) for n in names}


def folders_of(task: str) -> tuple[str, ...]:
    """The Aff-Wild2 annotation folder names of a task."""
    return TASKS.get(task).folders


def _register_all() -> None:
    """Imports every module of this package: each registers its task, so adding a task is
    adding one file here."""
    import importlib
    import pkgutil

    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{module}")


_register_all()
