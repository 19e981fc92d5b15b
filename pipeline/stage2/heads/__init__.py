"""Fusion heads behind one registry and one contract, with streams and tasks as data.

Every head maps the cached per-frame embeddings of N named streams to every task's outputs:

    forward(streams: {name: (B, T, D_name)}, masks: {name: (B, T) bool}) -> {task: (B, T, width)}

Masks are True where a stream is present (a face was found; the frame is voiced). The streams
and their widths come from the cache (`streams={name: D}`, in the cache's order: the order of
`embed.streams`), the tasks from `train.tasks` (pipeline/tasks: each gives its output width and
head). Each head's docstring states its rule for N streams as equations; `min_streams` says
the smallest N it takes (the cross-attention heads need a pair). Constructors take
keyword-only arguments; `build_head` is the one place that builds a head by name (`only:<stream>`
names a unimodal reference) and records (name, kwargs) on the module so checkpoints rebuild it.
Every module of this package is imported (`_register_all`), so a new head is one new file
(docs/pipeline.md, "Adding a fusion head").

Two orders, both fixed: every concatenation and pairing of streams follows `self.streams` (the
cache's order; JMT's authors' order at N = 2 is visual, audio), while per-stream modules are
built and run in stream-name order (`per_stream`), which fixes a seed's random draws (initial
weights, dropout) whatever order params list the streams in.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from pipeline.registry import Registry
from pipeline.stage2.layers import TEMPORAL, ModalityInput
from pipeline.tasks import TASKS

HEADS: Registry = Registry("fusion head")


class TaskHeads(nn.ModuleDict):
    """One output head per task (the task's own: pipeline/tasks): (B, T, d) -> {task: (B, T, width)}."""

    def __init__(self, d: int, tasks: list[str], dropout: float) -> None:
        super().__init__({t: TASKS.get(t)().head(d, dropout) for t in tasks})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {t: head(x) for t, head in self.items()}


class FusionHead(nn.Module):
    """Base: one input per stream (standardise, L2 norm, projection to d_model, a learned
    'missing' vector where masked), the temporal encoder factory and the task heads.
    Subclasses build their fusion in __init__ and define forward."""

    min_streams = 1

    def __init__(self, *, streams: dict[str, int], tasks: list[str] | tuple[str, ...] = ("va",), d_model: int = 512,
                 temporal: str = "tcn", heads: int = 1, layers: int = 1, dropout: float = 0.0,
                 temporal_dropout: float = 0.1) -> None:
        """streams: name -> cached embedding width, in the cache's order; tasks: task names
        (outputs); d_model: stream width; temporal: a TEMPORAL registry name applied per stream;
        heads/layers: attention heads and encoder layers; dropout: in attention/FFN/output
        heads; temporal_dropout: in the temporal encoder."""
        super().__init__()
        if len(streams) < self.min_streams:
            raise ValueError(f"{type(self).__name__} needs at least {self.min_streams} streams, got "
                             f"{len(streams)} ({', '.join(streams) or 'none'})")
        if not tasks:
            raise ValueError("a head needs at least one task")
        self.streams, self.tasks = list(streams), list(tasks)
        self.d, self.heads, self.layers, self.dropout = d_model, heads, layers, dropout
        self._temporal, self._temporal_dropout = TEMPORAL.get(temporal), temporal_dropout
        for t in self.tasks:
            TASKS.get(t)  # an unknown task lists the known ones
        self.inputs = self.per_stream(lambda s: ModalityInput(streams[s], d_model))

    def per_stream(self, build: Callable[[str], nn.Module]) -> nn.ModuleDict:
        """A module per stream, built in stream-name order (see the module docstring)."""
        return nn.ModuleDict({s: build(s) for s in sorted(self.streams)})

    def embed(self, streams: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each stream's input module: {name: (B, T, d)}, in stream-name order."""
        return {s: module(streams[s], masks[s]) for s, module in self.inputs.items()}

    def task_heads(self, d: int) -> TaskHeads:
        """The output heads of this head's tasks over a fused (B, T, d) sequence."""
        return TaskHeads(d, self.tasks, self.dropout)

    def set_input_stats(self, stats: dict[str, tuple]) -> None:
        """Per-feature (mean, std) of each stream, from the training split (model.standardize)."""
        for s, (mean, std) in stats.items():
            self.inputs[s].mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
            self.inputs[s].std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def temporal_encoder(self, d_in: int | None = None) -> nn.Module:
        """A fresh temporal encoder (d_in -> d_model) of the configured kind."""
        return self._temporal(d_in or self.d, self.d, dropout=self._temporal_dropout)


def build_head(name: str, **kwargs) -> FusionHead:
    """Builds a registered head (`only:<stream>`: the unimodal reference on that stream); the
    module remembers how (`spec`) for checkpoints."""
    key, _, arg = name.partition(":")
    cls = HEADS.get(key)
    head = cls(stream=arg, **kwargs) if arg else cls(**kwargs)
    head.spec = {"name": name, "kwargs": dict(kwargs)}
    return head


def head_names(names: list[str], streams: list[str]) -> list[str]:
    """Expands `only:*` into `only:<stream>` for every stream (in order); checks each name."""
    out: list[str] = []
    for name in names:
        key, _, arg = name.partition(":")
        HEADS.get(key)
        if key == "only" and arg == "*":
            out += [f"only:{s}" for s in streams if f"only:{s}" not in names]
        else:
            if key == "only" and arg not in streams:
                raise ValueError(f"head {name!r}: no stream {arg!r} in the cache (streams: {', '.join(streams)})")
            out.append(name)
    return out


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _register_all() -> None:
    """Imports every module of this package: each registers its head, so adding a head is
    adding one file here (as pipeline/tasks does for tasks)."""
    import importlib
    import pkgutil

    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{module}")


_register_all()
