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
"""

from __future__ import annotations

import copy
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def read(path: Path) -> dict[str, Any]:
    """A checkpoint's contents, loaded without running any code from the file; JmtError (one
    line, naming the file) for a missing, crafted, corrupt or incomplete file."""
    path = Path(path)
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


def params_of(ckpt: dict) -> Params:
    """A checkpoint's params, validated, with relative paths (a backbone's weights file) taken
    from the working folder: the folder of the params it was trained with is not recorded."""
    from pipeline.config import parse_params

    return parse_params(copy.deepcopy(ckpt["params"]), source="checkpoint params", root=Path.cwd())


def check_cache(ckpt: dict, path: Path, cache_folder: Path) -> None:
    """The cache must hold the streams the model was trained on: the same names in the same
    order, from the same backbones and weights, of the same widths."""
    want = ckpt["cache"].get("streams")
    if not isinstance(want, list):
        raise JmtError(f"{path}: a checkpoint of an older jmt (no streams recorded); retrain it")
    have = provenance(cache_folder)["streams"]
    if [[s.get(k) for k in MATCH] for s in want] != [[s.get(k) for k in MATCH] for s in have]:
        same = [s["name"] for s in want] == [s["name"] for s in have] and all(
            s.get(k) == h.get(k) for s, h in zip(want, have) for k in ("backbone", "dim"))
        what = "other backbone weights" if same else f"the streams {_streams(have)}"
        raise JmtError(f"{path} was trained on the streams {_streams(want)} but {cache_folder} has "
                       f"{what}; re-embed with the checkpoint's streams or use a matching checkpoint")


def build(ckpt: dict, path: Path) -> torch.nn.Module:
    """The model a checkpoint describes, with its weights."""
    name = ckpt["head"]["name"]
    try:
        model = build_head(name, **ckpt["head"]["kwargs"])
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:
        raise JmtError(f"{path}: arguments or weights do not fit head {name!r} "
                       f"({str(exc).splitlines()[0]})") from None
    return model


def load(path: Path, cache_folder: Path) -> tuple[torch.nn.Module, dict]:
    """Reads a checkpoint, checks it against the cache and rebuilds the model: (model, contents)."""
    ckpt = read(path)
    check_cache(ckpt, Path(path), cache_folder)
    return build(ckpt, Path(path)), ckpt
