"""Checkpoints: the one module that saves, reads and checks the model files of stage 2.

A checkpoint describes itself (as nanoGPT's do): the head's registry name and constructor
arguments, its weights, the resolved params, the provenance of the cache it learned from
(backbones, their weights' hashes, widths, the cache fingerprint), package versions, the epoch
and its validation scores. `jmt evaluate`, `jmt predict` and `jmt compare` rebuild the model
from the file alone.

Checkpoints are files from others (shared, downloaded): loading one must never run code from it.
They hold only tensors and plain data (dicts, lists, strings, numbers), so they are read with
`torch.load(weights_only=True)`, whose unpickler refuses anything else: a crafted pickle that
would call a function while loading is refused with a one-line error before it can run. A file
without the expected keys gets a one-line error naming the file and what is missing.

`read` gives the file typed, as a `Checkpoint` (head, its arguments, window, stream widths and
provenance, tasks, validated params, sha256), with what is done with one: check it against a
cache or against the backbones built here, rebuild its model, point its stage 1 at other videos.
No module outside this one looks inside a checkpoint's contents (pipeline/infer/model.py adds the
runtime that applies the model).
"""

from __future__ import annotations

import copy
import csv
import hashlib
import os
import pickle
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from pipeline import cache
from pipeline.errors import InputError, JmtError
from pipeline.stage2.heads import build_head

if TYPE_CHECKING:   # the params loader needs pydantic, which bench/scale_gpu.py's machines may lack
    from pipeline.config import Params

# key -> the type its value must have; evaluate/predict/compare need all of them
REQUIRED: dict[str, type] = {"head": dict, "state_dict": dict, "params": dict, "cache": dict}
# what a cache a checkpoint is used on must share, stream by stream, with the one it was trained on
MATCH = ("name", "backbone", "weights_sha256", "dim")


def provenance(folder: Path) -> dict:
    """What made an embeddings cache (read from its first entry): its streams in order (name,
    backbone, what it reads, weights' hash and source, width), the face detector, the crop size
    and the audio sample rate."""
    names = cache.entries(folder)
    if not names:
        raise InputError(f"{folder}: no embedding files; run `jmt embed` first")
    with cache.open_entry(cache.entry_path(folder, names[0])) as f:
        cache.check_schema(f, "embed")
        a = cache.attrs_of(f)
    return {"streams": a["streams"], **{k: a.get(k) for k in ("detector", "crop_size", "sample_rate")}}


def _streams(streams: list[dict]) -> str:
    return ", ".join(f"{s['name']} ({s['backbone']}, {s['dim']}-d)" for s in streams)


def save(path: Path, *, model: torch.nn.Module, params: dict, cache_provenance: dict, versions: dict,
         epoch: int, validation: dict) -> None:
    """Writes a checkpoint (plain data and tensors only), atomically: a reader never sees half
    a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({"head": model.spec, "state_dict": model.state_dict(), "params": params,
                "cache": cache_provenance, "versions": versions, "epoch": epoch, "validation": validation}, tmp)
    os.replace(tmp, path)


def _read_contents(path: Path) -> dict[str, Any]:
    """A checkpoint's contents, loaded without running any code from the file; JmtError (one
    line, naming the file) for a missing, crafted, corrupt or incomplete file."""
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found; run `jmt train` first")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        lines = [line.strip() for line in str(exc).splitlines()]
        code = [line for line in lines if "GLOBAL" in line or "Unsupported global" in line]
        if code:  # the pickle asks for a function or class to import and call: code
            why = code[0]
            raise JmtError(f"{path}: refused: the file holds objects that would run code when loaded "
                           f"({why[:160]}); a jmt checkpoint holds only tensors and plain data") from None
        why = next((line for line in lines if "Unsupported" in line), first)
        raise JmtError(f"{path}: not a readable checkpoint ({why[:160]})") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, ImportError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise JmtError(f"{path}: not a readable checkpoint ({first[:160]})") from None
    if not isinstance(ckpt, dict):
        raise JmtError(f"{path}: not a jmt checkpoint (holds a {type(ckpt).__name__}, not a dict)")
    missing = [k for k, kind in REQUIRED.items() if not isinstance(ckpt.get(k), kind)]
    if missing:
        raise JmtError(f"{path}: not a jmt checkpoint: missing {', '.join(missing)} "
                       f"(a `jmt train` checkpoint has {', '.join(REQUIRED)})")
    head = ckpt["head"]
    if not isinstance(head.get("name"), str) or not isinstance(head.get("kwargs"), dict):
        raise JmtError(f"{path}: not a jmt checkpoint: 'head' lacks its name or kwargs")
    train = ckpt["params"].get("train")
    if not isinstance(train, dict) or not isinstance(train.get("window"), int):
        raise JmtError(f"{path}: not a jmt checkpoint: params lack train.window")
    return ckpt


_C = TypeVar("_C", bound="Checkpoint")


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A checkpoint, read and typed (`read`): what evaluate, compare, predict, live and export need
    from the file. The one place that looks inside a checkpoint's contents."""

    path: Path
    head: str                         # the head's registry name
    head_kwargs: dict[str, Any]       # its constructor arguments (heads.build_head)
    window: int                       # train.window: the frames the model sees at once
    widths: dict[str, int]            # stream -> embedding width, in the head's order
    streams: list[dict] | None        # each stream's provenance in the cache it learned from (None: an older jmt's)
    _contents: dict[str, Any] = field(repr=False)   # the file as read: plain data and tensors

    @classmethod
    def read(cls: type[_C], path: Path, **more: Any) -> _C:
        """The checkpoint at `path`, read (never executed: `torch.load(weights_only=True)`) and
        typed; `more`: a subclass's own fields. JmtError naming the file when it is missing,
        crafted, corrupt or incomplete."""
        path = Path(path)
        contents = _read_contents(path)
        head = contents["head"]
        return cls(path=path, head=head["name"], head_kwargs=head["kwargs"],
                   window=int(contents["params"]["train"]["window"]),
                   widths={s: int(d) for s, d in head["kwargs"]["streams"].items()},
                   streams=contents["cache"].get("streams"), _contents=contents, **more)

    @cached_property
    def sha256(self) -> str:
        """sha256 of the file: an export or a prediction names its model by it."""
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    @cached_property
    def tasks(self) -> list[str]:
        """The tasks the model predicts, in its output order (the head's arguments; a checkpoint
        that does not record them: those of the head it builds)."""
        if "tasks" in self.head_kwargs:
            return list(self.head_kwargs["tasks"])
        return list(self.build().tasks)

    @cached_property
    def params(self) -> Params:
        """The params it was trained with, validated, with relative paths (a backbone's weights
        file) taken from the working folder: the folder of the params it was trained with is not
        recorded."""
        from pipeline.config import parse_params

        return parse_params(copy.deepcopy(self._contents["params"]), source="checkpoint params", root=Path.cwd())

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

    def check_cache(self, folder: Path) -> None:
        """The embeddings cache at `folder` holds the streams the model was trained on: the same
        names in the same order, from the same backbones and weights, of the same widths;
        JmtError naming both otherwise."""
        want, folder = self.streams, Path(folder)
        if not isinstance(want, list):
            raise JmtError(f"{self.path}: a checkpoint of an older jmt (no streams recorded); retrain it")
        have = provenance(folder)["streams"]
        if [[s.get(k) for k in MATCH] for s in want] != [[s.get(k) for k in MATCH] for s in have]:
            same = [s["name"] for s in want] == [s["name"] for s in have] and all(
                s.get(k) == h.get(k) for s, h in zip(want, have) for k in ("backbone", "dim"))
            what = "other backbone weights" if same else f"the streams {_streams(have)}"
            raise JmtError(f"{self.path} was trained on the streams {_streams(want)} but {folder} has "
                           f"{what}; re-embed with the checkpoint's streams or use a matching checkpoint")

    def check_backbones(self, built: dict[str, tuple[str, str]]) -> None:
        """The backbones built here (stream -> (backbone, weights' sha256), in stream order) are
        the ones the model was trained on; JmtError otherwise (live, which has no cache)."""
        want = [[s["name"], s["backbone"], s["weights_sha256"]] for s in self.streams or []]
        have = [[name, backbone, sha] for name, (backbone, sha) in built.items()]
        if want != have:
            raise JmtError(f"{self.path}: trained on the streams {want}, but its params build {have} here; "
                           "are the backbone weight files the same?")

    def build(self) -> torch.nn.Module:
        """A fresh torch model as the checkpoint describes it, with its weights."""
        try:
            model = build_head(self.head, **self.head_kwargs)
            model.load_state_dict(self._contents["state_dict"])
        except (RuntimeError, TypeError, ValueError, KeyError) as exc:
            raise JmtError(f"{self.path}: arguments or weights do not fit head {self.head!r} "
                           f"({str(exc).splitlines()[0]})") from None
        return model


def read(path: Path) -> Checkpoint:
    """The checkpoint at `path`, read without running any code from the file, typed
    (`Checkpoint.read`)."""
    return Checkpoint.read(path)


def load(path: Path, cache_folder: Path) -> tuple[torch.nn.Module, Checkpoint]:
    """Reads a checkpoint, checks it against the cache and rebuilds the model: (model, checkpoint)."""
    ckpt = read(path)
    ckpt.check_cache(cache_folder)
    return ckpt.build(), ckpt
