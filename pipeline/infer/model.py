"""A trained model, ready to apply: `from_checkpoint(path)` reads a `jmt train` checkpoint (never
executing it: checkpoints.read) once and returns `Trained`, what predict, live, export and
evaluate need from it, typed: the validated params, the head, the window and inference hop, the
stream widths, the tasks, the cache's provenance and the model itself (the torch head, or with
`runtime="onnx"` its `jmt export` graph in onnxruntime, checked to come from this checkpoint).

This is the only place outside stage2/checkpoints.py that looks inside a checkpoint's contents.
"""

from __future__ import annotations

import copy
import csv
import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pipeline.errors import InputError, JmtError
from pipeline.stage2 import checkpoints
from pipeline.stage2.windows import inference_hop

if TYPE_CHECKING:
    from pipeline.config import Params
    from pipeline.infer.runtime import OnnxModel

RUNTIMES = ("torch", "onnx")


@dataclass
class Trained:
    """A checkpoint, read and typed (`from_checkpoint`)."""

    path: Path
    sha256: str                       # of the checkpoint file: an export or a prediction names its model by it
    head: str                         # the head's registry name
    window: int                       # train.window: the frames the model sees at once
    widths: dict[str, int]            # stream -> embedding width, in the head's order
    streams: list[dict]               # the provenance of each stream of the cache it learned from
    runtime: str = "torch"            # what `model` runs in: torch, or onnx (onnxruntime)
    onnx: Path | None = None          # runtime onnx: the graph (default: the checkpoint's path with .onnx)
    spinning: bool = True             # runtime onnx: OnnxModel's
    _contents: dict = field(default_factory=dict, repr=False)   # the checkpoint as read

    @cached_property
    def params(self) -> Params:
        """The params it was trained with, validated (relative paths: the working folder)."""
        return checkpoints.params_of(self._contents)

    @cached_property
    def model(self) -> Any:
        """The model, built on first use (after the caller's checks): the torch head, or with
        runtime onnx the graph in onnxruntime (OnnxModel), which must come from this checkpoint."""
        if self.runtime == "torch":
            return checkpoints.build(self._contents, self.path)
        return _onnx_model(self.path, self.sha256, self.onnx, self.spinning)

    @property
    def hop(self) -> int:
        """The hop between prediction windows (windows.inference_hop)."""
        return inference_hop(self.window)

    @property
    def tasks(self) -> list[str]:
        """The tasks the model predicts, in its output order."""
        return list(self.model.tasks)

    def check_cache(self, folder: Path) -> None:
        """The embeddings cache at `folder` holds the streams the model was trained on (names,
        order, backbones, weights, widths); JmtError naming both otherwise."""
        checkpoints.check_cache(self._contents, self.path, Path(folder))

    def check_backbones(self, built: dict[str, tuple[str, str]]) -> None:
        """The backbones built here (stream -> (backbone, weights' sha256), in stream order) are
        the ones the model was trained on; JmtError otherwise (live, which has no cache)."""
        want = [[s["name"], s["backbone"], s["weights_sha256"]] for s in self.streams]
        have = [[name, backbone, sha] for name, (backbone, sha) in built.items()]
        if want != have:
            raise JmtError(f"{self.path}: trained on the streams {want}, but its params build {have} here; "
                           "are the backbone weight files the same?")

    def stage1_params(self, work: Path, videos: dict[str, Path], *, on_error: str = "fail",
                      engine: str | None = None, threads: int = 1) -> Params:
        """The model's stage-1 params pointed at a manifest of `videos` (entry name -> file) and a
        cache under `work`: `engine` (local | ray) overrides the checkpoint's run.engine;
        `threads`: torch's threads per stage-1 unit (run.<stage>.cpus)."""
        from pipeline.config import parse_params

        data = copy.deepcopy(self._contents["params"])   # the checkpoint's own dict stays as read
        work = Path(work).resolve()   # every path below is absolute: the params' root is `work` itself
        manifest = work / "videos.csv"
        with open(manifest, "w", newline="") as f:  # csv quotes a path holding commas or quotes
            csv.writer(f).writerows([["video", "annotation", "split", "name"],
                                     *([str(v.resolve()), "", "test", name] for name, v in videos.items())])
        data["corpus"] = {**data["corpus"], "layout": "manifest", "manifest": str(manifest)}
        for stage in ("faces", "audio", "embed"):
            data[stage] = {**data[stage], "out": str(work / stage), "on_error": on_error}
        data["run"] = {**data["run"], **({"engine": engine} if engine is not None else {}),
                       **{stage: {**data["run"][stage], "cpus": threads} for stage in ("faces", "audio", "embed")}}
        # a backbone's weights file was relative to the training params' folder, which the checkpoint
        # does not record: taken from the working folder (run from there); its hash is checked after
        data["embed"]["streams"] = {name: {**bp, "checkpoint": str(Path(bp["checkpoint"]).resolve())}
                                    if bp.get("checkpoint") else bp for name, bp in data["embed"]["streams"].items()}
        return parse_params(data, source="checkpoint params", root=work)

    def torch_model(self) -> torch.nn.Module:
        """A fresh torch head with the checkpoint's weights (an export traces this one)."""
        return checkpoints.build(self._contents, self.path)


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
    path = Path(path)
    if runtime not in RUNTIMES:
        raise InputError(f"--runtime {runtime}: torch or onnx")
    contents = checkpoints.read(path)   # read, never executed
    head = contents["head"]
    return Trained(path=path, sha256=hashlib.sha256(path.read_bytes()).hexdigest(), head=head["name"],
                   window=int(contents["params"]["train"]["window"]),
                   widths={s: int(d) for s, d in head["kwargs"]["streams"].items()},
                   streams=list(contents["cache"].get("streams") or []), runtime=runtime,
                   onnx=None if onnx is None else Path(onnx), spinning=spinning, _contents=contents)
