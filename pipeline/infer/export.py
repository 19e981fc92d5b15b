"""`jmt export --checkpoint CKPT --out model.onnx [--int8] [--backbones]`: a fusion head as an
ONNX graph that onnxruntime runs, and `OnnxModel`, which runs it where the torch model ran.

The graph has two inputs per stream, in the head's stream order, `<stream>` float32
(batch, time, D) and `<stream>_mask` bool (batch, time), and one output per task, named after it
(`va`, `expr`, `au`), float32 (batch, time, width): the raw outputs the torch head returns,
before the task's activation. `batch` and `time` are dynamic: the graph is traced at one window
and runs at any. Every export is checked against torch at the traced shape and at two others
before it is kept. The model's metadata_props record the head, the streams with their widths,
the tasks, the training window, the opset and the checkpoint's sha256 (`jmt predict --runtime
onnx` refuses a graph exported from another checkpoint).

The exporter is torch's dynamo one (`torch.onnx.export(dynamo=True)`, opset 18): the legacy
TorchScript exporter baked the traced window into nn.MultiheadAttention's reshapes (`jmt` failed
at another T). Two graph changes live here, not in the heads: the TCN's weight_norm
parametrizations are folded into plain weights on a copy rebuilt from the head's spec (the same
values, computed once instead of per call), and Gemms are rewritten before quantisation
(`gemm_to_matmul`: onnxruntime's own rewrite corrupts a Linear used twice).

`--int8`: `<out stem>.int8.onnx`, onnxruntime's dynamic quantisation (`INT8_OPS`): the weights
of every MatMul/Gemm with a constant weight (input projections, attention in/out projections,
FFNs, the joint and aggregation Linears, output heads) stored int8 per tensor, their inputs
quantised to uint8 per call; the TCN's convolutions, the attention's activation x activation
products, layer norms, softmax, recurrent layers and everything else stay float32.
docs/onnx.md gives its cost. Before it is written its error is measured on the cache's real
features (`int8_error`: up to INT8_WINDOWS prediction windows, the task's activated outputs) and
an error above the bound (INT8_BOUND, `--int8-bound`) refuses the graph unless `--force`; the
measured error is recorded in its metadata (`int8_error`).

`--backbones`: each stream's frozen stage-1 backbone and the audio front end (log-mel) as
graphs of their own, each checked against torch; what cannot be exported is reported with why
(export_stage1.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import torch.nn as nn
import typer

from pipeline.console import console
from pipeline.errors import InputError, JmtError
from pipeline.infer.graphs import INT8_OPS, OPSET, export_head, quantize_int8, sample_inputs, set_metadata
from pipeline.infer.model import Trained, from_checkpoint, inference_hop
from pipeline.infer.runtime import OnnxModel

__all__ = ["INT8_BOUND", "INT8_OPS", "PARITY_ATOL", "Exported", "Int8Error", "export_checkpoint", "int8_error",
           "parity", "write_int8"]

PARITY_ATOL = 1e-4              # max |torch - onnxruntime| an fp32 export must stay under
# max |torch - int8| an int8 graph must stay under, on activated outputs (va clipped to its range
# [-1, 1], expr and au probabilities): 2.5 % of va's range, 5 points of a probability; the
# make compare-va heads measured 0.003-0.016 (docs/onnx.md says why this value)
INT8_BOUND = 0.05
INT8_WINDOWS = 256              # cache windows the int8 error is measured on, spread over the cache
INT8_ON = "activated outputs: va clipped to [-1, 1], expr softmax, au sigmoid"


def activated(task: str, raw: np.ndarray) -> np.ndarray:
    """Raw outputs (n, width) -> what the int8 bound is on (INT8_ON): the task's activation, then
    its clipping with the default options (`Task.clipped`: va clipped to [-1, 1], its labels'
    range, as `jmt predict` clips it; expr and au probabilities). A logit's error means nothing
    by itself: far from 0 it barely moves a probability."""
    from pipeline.tasks import build_task

    spec = build_task(task)
    return spec.clipped(spec.activate(raw))


@dataclass
class Int8Error:
    """An int8 graph's measured error against torch on the cache's features (`int8_error`)."""

    max_abs: float                      # max |torch - int8| on INT8_ON, over every task and frame
    task: str                           # where it occurs: the task and the output's name
    output: str
    per_task: dict[str, float]          # task -> its max, on INT8_ON
    raw_max_abs: float                  # the same on the raw outputs (logits; va unclipped)
    windows: int                        # the windows and frames (of the cache's entries) it ran on
    frames: int
    bound: float = INT8_BOUND
    forced: bool = False                # written with --force although above the bound

    @property
    def within(self) -> bool:
        return self.max_abs <= self.bound

    def where(self) -> str:
        return f"{self.task} `{self.output}`"

    def to_meta(self) -> str:
        """The graph's `int8_error` metadata (JSON; no local path: the graph may travel)."""
        return json.dumps({"max_abs": self.max_abs, "task": self.task, "output": self.output, "on": INT8_ON,
                           "bound": self.bound, "forced": self.forced, "per_task": self.per_task,
                           "raw_max_abs": self.raw_max_abs, "windows": self.windows, "frames": self.frames})


def cache_windows(folder: Path, tasks: list[str], window: int, limit: int = INT8_WINDOWS) -> list[tuple]:
    """(entry, start) of up to `limit` prediction windows (hop window / 2, as `jmt predict`) of
    the embeddings cache at `folder`, evenly spread over all of its windows (every entry of a
    small cache; a sample of a large one, read lazily)."""
    from pipeline.stage2.data import load_entries
    from pipeline.stage2.windows import window_starts

    entries = load_entries(folder, None, tasks)
    pairs = [(e, s) for e in entries if e.n > 0 for s in window_starts(e.n, window, inference_hop(window))]
    if not pairs:
        raise InputError(f"{folder}: no frames in the cache; the int8 error cannot be measured")
    if len(pairs) > limit:
        pairs = [pairs[i] for i in np.unique(np.linspace(0, len(pairs) - 1, limit).round().astype(int))]
    return pairs


def int8_error(model: nn.Module, int8_model: OnnxModel, folder: Path, window: int, *,
               bound: float = INT8_BOUND, batch: int = 32) -> Int8Error:
    """Max |torch - int8| of every task's outputs on the real features (and masks) of the cache
    at `folder` (`cache_windows`), raw and activated (`activated`); padding past an entry's
    end is left out. Run `batch` windows a call, as `jmt predict` does: the dynamic
    quantisation scales each call's activations by their own range, so what is batched
    together moves the error a little."""
    from pipeline.stage2.data import read_window
    from pipeline.tasks import TASKS

    pairs = cache_windows(folder, list(model.tasks), window)
    worst = {t: np.zeros(TASKS.get(t).width) for t in model.tasks}   # per output column, activated
    raw_max, frames = 0.0, 0
    for i in range(0, len(pairs), batch):
        group = pairs[i:i + batch]
        items = [read_window(e, s, window) for e, s in group]
        x = {part: {k: torch.stack([it[part][k] for it in items]) for k in items[0][part]}
             for part in ("streams", "masks")}                                   # (b, window, ...)
        inside = torch.stack([torch.arange(window) < e.n - s for e, s in group])   # (b, window): not padding
        frames += int(inside.sum())
        with torch.no_grad():
            ref = model(x["streams"], x["masks"])
        got = int8_model(x["streams"], x["masks"])
        for t in model.tasks:
            a, b = ref[t][inside].numpy(), got[t][inside].numpy()          # (frames, width)
            raw_max = max(raw_max, float(np.abs(a - b).max()))
            worst[t] = np.maximum(worst[t], np.abs(activated(t, a) - activated(t, b)).max(axis=0))
    task = max(model.tasks, key=lambda t: worst[t].max())
    output = TASKS.get(task).outputs[int(worst[task].argmax())]
    return Int8Error(float(worst[task].max()), task, output, {t: float(w.max()) for t, w in worst.items()},
                     raw_max, len(pairs), frames, bound)


def parity(model: nn.Module, onnx_model: OnnxModel, widths: dict[str, int],
           shapes: list[tuple[int, int]]) -> dict[str, float]:
    """Max |torch - onnxruntime| over every task's outputs, per (batch, time) shape, on random
    features with absent frames: {"BxT": max abs difference}."""
    out = {}
    for i, (b, t) in enumerate(shapes):
        streams, masks = sample_inputs(widths, b, t, seed=i + 1)
        with torch.no_grad():
            ref = model(streams, masks)
        got = onnx_model(streams, masks)
        out[f"{b}x{t}"] = max(float((ref[k] - got[k]).abs().max()) for k in model.tasks)
    return out


# ---- the command -------------------------------------------------------------------------------

@dataclass
class Exported:
    onnx: Path
    parity: dict[str, float]            # "BxT" -> max |torch - onnxruntime|, fp32
    int8: Path | None = None
    int8_error: Int8Error | None = None  # measured on the cache's features (`int8_error`)
    stage1: list[dict] = field(default_factory=list)


def int8_cache(trained: Trained, cache_folder: Path | None) -> Path:
    """The embeddings cache the int8 error is measured on: `cache_folder`, else the one the
    checkpoint was trained on (its params' embed.out); checked to hold the checkpoint's streams."""
    folder = Path(cache_folder) if cache_folder else trained.params.path(trained.params.embed.out)
    if not folder.is_dir():
        raise InputError(f"{folder}: no embeddings cache here; --int8 measures its error on a cache's features: "
                         f"pass --cache <embeddings folder> with the checkpoint's streams")
    trained.check_cache(folder)
    return folder


def write_int8(model: nn.Module, out: Path, folder: Path, window: int, *, bound: float = INT8_BOUND,
               force: bool = False) -> tuple[Path, Int8Error]:
    """Quantises the fp32 graph `out` into `<stem>.int8.onnx`, measures its error on the cache at
    `folder` first (`int8_error`) and writes it only when the error is within `bound` or `force`
    is set, with the error in its metadata; JmtError (nothing written) otherwise."""
    import tempfile

    import onnx

    dst = out.with_name(f"{out.stem}.int8.onnx")
    with tempfile.TemporaryDirectory(prefix="jmt-int8-") as tmp:
        trial = Path(tmp) / dst.name             # measured before it is written where it would be used
        quantize_int8(out, trial)
        err = int8_error(model, OnnxModel(trial, threads=1), folder, window, bound=bound)
        if not err.within and not force:
            raise JmtError(f"{dst}: not written: max |torch - int8| {err.max_abs:.3g} at {err.where()} ({INT8_ON}; "
                           f"{err.windows} windows of {folder}) is above the bound {bound:g}; "
                           f"`--force` writes it anyway")
        err.forced = not err.within
        proto = onnx.load(str(trial))
    set_metadata(proto, {"int8_error": err.to_meta()})
    onnx.save(proto, str(dst))
    return dst, err


def export_checkpoint(checkpoint: Path, out: Path, *, int8: bool = False, backbones: bool = False,
                      cache: Path | None = None, int8_bound: float = INT8_BOUND, force: bool = False) -> Exported:
    """Exports a checkpoint's head to `out` (and `<stem>.int8.onnx`, the stage-1 graphs when
    asked); an fp32 graph that differs from torch by more than PARITY_ATOL is an error, and so
    is an int8 graph whose error on the cache's features (`cache`: default the checkpoint's)
    is above `int8_bound`, unless `force`."""
    checkpoint, out = Path(checkpoint), Path(out)
    if out.suffix != ".onnx":
        raise InputError(f"--out {out}: name it <something>.onnx")
    if not int8_bound > 0:
        raise InputError(f"--int8-bound {int8_bound}: must be above 0")
    trained = from_checkpoint(checkpoint)          # read, never executed
    model = trained.model.eval()
    folder = int8_cache(trained, cache) if int8 else None   # before any export: fail fast
    widths, window = trained.widths, trained.window
    meta = {"head": trained.head, "streams": json.dumps(widths), "tasks": json.dumps(list(model.tasks)),
            "window": str(window), "opset": str(OPSET), "torch": torch.__version__,
            "checkpoint_sha256": trained.sha256}
    export_head(model, out, widths, window, meta)
    shapes = [(2, window), (1, 37), (3, window // 2 + 5)]
    result = Exported(out, parity(model, OnnxModel(out, threads=1), widths, shapes))
    worst = max(result.parity.values())
    if worst > PARITY_ATOL:
        raise JmtError(f"{out}: onnxruntime differs from torch by {worst:.2e} (> {PARITY_ATOL:g}); not usable")
    if folder is not None:
        result.int8, result.int8_error = write_int8(model, out, folder, window, bound=int8_bound, force=force)
    if backbones:
        from pipeline.infer.export_stage1 import export_stage1

        result.stage1 = export_stage1(trained.params, out)
    return result


def command(
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint from `jmt train`.")] = Path("models/model.pt"),
    out: Annotated[Path, typer.Option(help="The ONNX file to write.")] = Path("models/model.onnx"),
    int8: Annotated[bool, typer.Option("--int8", help="Also write <stem>.int8.onnx: dynamic int8 "
                                                      "quantisation of the MatMul/Gemm weights, kept only if its "
                                                      "error on the cache's features is within --int8-bound.")
                    ] = False,
    cache: Annotated[Path | None, typer.Option(help="With --int8: the embeddings cache whose features the int8 "
                                                    "error is measured on (default: the checkpoint's).")] = None,
    int8_bound: Annotated[float, typer.Option("--int8-bound", help="With --int8: the largest max |torch - int8| "
                                                                   "accepted on the activated outputs (va clipped "
                                                                   "to [-1, 1], expr and au probabilities).")
                          ] = INT8_BOUND,
    force: Annotated[bool, typer.Option("--force", help="With --int8: write the int8 graph even when its error is "
                                                        "above the bound (with a warning).")] = False,
    backbones: Annotated[bool, typer.Option("--backbones", help="Also try each stream's stage-1 backbone and the "
                                                                "log-mel front end as graphs of their own.")
                         ] = False,
) -> None:
    """Export a checkpoint's fusion head to ONNX for onnxruntime: inputs <stream> (batch, time, D)
    and <stream>_mask per stream, one raw output per task, dynamic batch and time; checked
    against torch before it is kept. Run it with `jmt predict --runtime onnx`."""
    if not int8 and (force or cache is not None or int8_bound != INT8_BOUND):
        raise InputError("--force, --cache and --int8-bound apply to --int8 only")
    r = export_checkpoint(checkpoint, out, int8=int8, backbones=backbones, cache=cache, int8_bound=int8_bound,
                          force=force)
    diffs = ", ".join(f"{k} {v:.1e}" for k, v in r.parity.items())
    console.print(f"[green]export[/] {checkpoint} -> {r.onnx} ({r.onnx.stat().st_size / 1e6:.2f} MB; "
                  f"max |torch - onnxruntime| at batch x time {diffs})", highlight=False)
    if r.int8 and r.int8_error:
        e = r.int8_error
        console.print(f"[green]export[/] int8 -> {r.int8} ({r.int8.stat().st_size / 1e6:.2f} MB; max |torch - int8| "
                      f"{e.max_abs:.2e} at {e.where()}, bound {e.bound:g}, on {e.frames} frames of the cache's "
                      f"features; raw outputs {e.raw_max_abs:.2e})", highlight=False)
        if e.forced:
            console.print(f"[bold yellow]warning:[/] {r.int8} written with --force: its max |torch - int8| "
                          f"{e.max_abs:.3g} at {e.where()} is above the bound {e.bound:g}: its outputs may differ "
                          f"from the checkpoint's by that much", highlight=False, soft_wrap=True)
    for g in r.stage1:
        if g["path"]:
            console.print(f"[green]export[/] {g['name']} -> {g['path']} (max |torch - onnxruntime| "
                          f"{g['max_abs_diff']:.1e})", highlight=False)
        else:
            console.print(f"[yellow]not exported[/] {g['name']}: {g['why']}", highlight=False, soft_wrap=True)
