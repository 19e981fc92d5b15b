"""A trained model, ready to apply: `from_checkpoint(path)` reads a `jmt train` checkpoint (never
executing it) once and returns `Trained`: the checkpoint as stage2/checkpoints.py types it (the
validated params, the head, the window, the stream widths and provenance, the tasks, its checks)
with what applying it adds: the inference hop and the model itself, the torch head or, with
`runtime="onnx"`, its `jmt export` graph in onnxruntime (checked to come from this checkpoint).
What predict, live and export need from a checkpoint; none of them looks inside its contents.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import InputError, JmtError
from pipeline.stage2 import checkpoints
from pipeline.stage2.windows import inference_hop

if TYPE_CHECKING:
    from pipeline.infer.runtime import OnnxModel

RUNTIMES = ("torch", "onnx")


@dataclass(frozen=True, eq=False)
class Trained(checkpoints.Checkpoint):
    """A checkpoint (`checkpoints.Checkpoint`) with the runtime that applies its model
    (`from_checkpoint`)."""

    runtime: str = "torch"            # what `model` runs in: torch, or onnx (onnxruntime)
    onnx: Path | None = None          # runtime onnx: the graph (default: the checkpoint's path with .onnx)
    spinning: bool = True             # runtime onnx: OnnxModel's

    @cached_property
    def model(self) -> Any:
        """The model, built on first use (after the caller's checks): the torch head, or with
        runtime onnx the graph in onnxruntime (OnnxModel), which must come from this checkpoint."""
        if self.runtime == "torch":
            return self.build()
        return _onnx_model(self.path, self.sha256, self.onnx, self.spinning)

    @property
    def hop(self) -> int:
        """The hop between prediction windows (windows.inference_hop)."""
        return inference_hop(self.window)


def _onnx_model(path: Path, sha: str, onnx: Path | None, spinning: bool) -> OnnxModel:
    """The graph at `onnx` (default: the checkpoint's path with .onnx) in onnxruntime; JmtError
    unless it was exported from the checkpoint whose sha256 is `sha`."""
    from pipeline.infer.runtime import OnnxModel

    model = OnnxModel(onnx or path.with_suffix(".onnx"), spinning=spinning)
    if model.meta.get("checkpoint_sha256") != sha:
        raise JmtError(f"{model.path} was not exported from {path} (another sha256); "
                       f"run `jmt export --checkpoint {path} --out {model.path}`")
    return model


def from_checkpoint(path: Path, runtime: str = "torch", onnx: Path | None = None, *,
                    spinning: bool = True) -> Trained:
    """Reads the checkpoint at `path` (JmtError naming it when it is missing, crafted or
    incomplete). Its model is built on first use of `.model`: the torch head, or (`runtime`
    onnx) the graph at `onnx` (default: the checkpoint's path with .onnx), which must have been
    exported from this checkpoint (its recorded sha256); `spinning`: OnnxModel's (False: its
    threads sleep between calls, for live)."""
    if runtime not in RUNTIMES:
        raise InputError(f"--runtime {runtime}: torch or onnx")
    return Trained.read(path, runtime=runtime, onnx=None if onnx is None else Path(onnx), spinning=spinning)
