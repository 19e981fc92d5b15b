"""Self-supervised speech models (wav2vec 2.0, HuBERT, WavLM) through torchaudio's builders.

One generic factory, registered per name (`SSL_MODELS`): the architecture is built offline
from the torchaudio bundle's own parameters, so its state dict is the torchaudio format.
Weights: `checkpoint: PATH` (a local state dict of torchaudio's Wav2Vec2Model), or
`pretrained: true` (the bundle's file from download.pytorch.org through torch hub's cache;
a clear error when offline: HF_HUB_OFFLINE set and the file not cached, or the download
failing), or `allow_random: true` (loud warning).

Per video frame: the mean of one transformer layer's output (`layer`, 1..num_layers, default
the last) over the 50 Hz feature rows whose centre lies in the frame's window. Row j sees
samples [320 j, 320 j + 400) (the CNN encoder's stride and receptive field), centre
320 j + 200, so the rows are aligned to the video timestamps through the windows.

The model runs once over the track, in chunks: chunk k produces rows [k C, (k + 1) C) of a
grid anchored at sample 0 (C = `chunk_rows`, 20 s), from audio that adds `context_rows`
(2 s) of context on each side; chunks and context are clipped to the span the windows and
the track cover (zeros where that runs outside the track), and chunks no window needs are
skipped. Memory stays bounded (one chunk plus the rows still needed by pending windows), and
the overhead is 2 x 2 s per 20 s. The rule a test can check: a frame's features depend only
on the audio of the chunks its window's rows fall in, plus their context, not on which other
frames are asked for. Within a chunk the transformer attends to everything (and the base
models' group norm normalises over the whole chunk), so a sound anywhere in a chunk moves
the features of every frame of that chunk a little: contextual features, as the models were
trained to give.

The JMT authors' WavLM features (create_wavlm_audio_feat.py in
PoloWlg/Joint-Multimodal-Transformer-6th-ABAW) arrive already pooled, one row per video
frame in `<video>.wavlmpooled` CSV files, of which their script keeps the first 512 columns
and saves one .npy per frame; the pooling itself is not in their repository. Here the
pooling is explicit: the frame's 1 s window ending at the frame's end, as for log-mel.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchaudio

from pipeline.config import BackboneParams
from pipeline.errors import JmtError
from pipeline.stage1.backbones import BACKBONES, WaveformBackbone, load_checkpoint, random_weights_warning
from pipeline.stage1.backbones.frames import padded_slice, row_range

STRIDE, FIELD = 320, 400        # the CNN feature encoder: 20 ms hop, 25 ms receptive field
SSL_MODELS = {                  # registry name -> torchaudio.pipelines bundle
    "wav2vec2_base": "WAV2VEC2_BASE", "wav2vec2_large": "WAV2VEC2_LARGE",
    "wav2vec2_large_lv60k": "WAV2VEC2_LARGE_LV60K",
    "hubert_base": "HUBERT_BASE", "hubert_large": "HUBERT_LARGE",
    "wavlm_base": "WAVLM_BASE", "wavlm_base_plus": "WAVLM_BASE_PLUS", "wavlm_large": "WAVLM_LARGE",
}


class SSLBackbone(WaveformBackbone):
    """A torchaudio Wav2Vec2Model (any family) -> one layer's output, mean-pooled per window."""

    def __init__(self, model: nn.Module, *, layer: int, normalize_waveform: bool,
                 chunk_rows: int = 1000, context_rows: int = 100) -> None:
        super().__init__()
        self.model = model
        self.num_layers = len(model.encoder.transformer.layers)
        if not 1 <= layer <= self.num_layers:
            raise JmtError(f"layer {layer} is out of range: this model has layers 1..{self.num_layers}")
        self.layer = layer
        self.normalize_waveform = normalize_waveform   # the large models' bundles layer-norm the input
        self.chunk_rows, self.context_rows = chunk_rows, context_rows
        self.dim = model.encoder.feature_projection.projection.out_features

    def rows(self, wave: torch.Tensor, j0: int, j1: int, lo: int, hi: int) -> torch.Tensor:
        """Rows [j0, j1) of the chosen layer, run with context clipped to rows [lo, hi) -> (j1 - j0, D)."""
        a, b = max(j0 - self.context_rows, lo), min(j1 + self.context_rows, hi)
        seg = padded_slice(wave, a * STRIDE, (b - 1) * STRIDE + FIELD)         # yields rows a..b-1
        if self.normalize_waveform:
            seg = F.layer_norm(seg, seg.shape)
        feats, _ = self.model.extract_features(seg[None], num_layers=self.layer)
        return feats[self.layer - 1][0, j0 - a: j1 - a]                         # (j1 - j0, D)

    def forward(self, wave: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        win = np.asarray(windows.cpu() if torch.is_tensor(windows) else windows, np.int64)
        out = torch.zeros(len(win), self.dim, device=wave.device)
        if len(win) == 0:
            return out
        lo, hi = row_range(win, STRIDE, FIELD // 2)
        hi = np.maximum(hi, lo + 1)                                   # a window always owns a row
        span = (min(int(lo.min()), 0), max(int(hi.max()), (len(wave) - FIELD) // STRIDE + 1))  # windows + track
        c = self.chunk_rows
        cells = np.unique(np.stack([lo // c, (hi - 1) // c], 1), axis=0)   # first, last chunk per window
        chunks = sorted({int(k) for k0, k1 in cells for k in range(k0, k1 + 1)})  # the chunks needed
        order = np.argsort(hi, kind="stable")
        done = 0
        buf, buf_start = None, 0                                      # rows [buf_start, buf_start + len(buf))
        for k in chunks:
            j0, j1 = max(k * c, span[0]), min((k + 1) * c, span[1])
            new = self.rows(wave, j0, j1, *span).double()
            if buf is not None and buf_start + len(buf) == j0:
                buf = torch.cat([buf, new])
            else:                                                     # first chunk, or after skipped ones
                buf, buf_start = new, j0
            ready = order[done:][hi[order[done:]] <= j1]              # windows whose rows are all there
            if len(ready):
                cs = F.pad(torch.cumsum(buf, 0), (0, 0, 1, 0))       # (rows + 1, D)
                a = torch.as_tensor(lo[ready] - buf_start, device=buf.device)
                b = torch.as_tensor(hi[ready] - buf_start, device=buf.device)
                out[torch.as_tensor(ready, device=out.device)] = ((cs[b] - cs[a]) / (b - a)[:, None]).to(out)
                done += len(ready)
            if done < len(order):                                     # keep only rows still needed
                keep = min(max(int(lo[order[done:]].min()) - buf_start, 0), len(buf))
                buf, buf_start = buf[keep:], buf_start + keep
        return out


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def pretrained_state(name: str, bundle) -> dict:
    """The bundle's state dict via torch hub's cache; JmtError when offline or unreachable."""
    url = f"https://download.pytorch.org/torchaudio/models/{bundle._path}"
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(bundle._path).name
    advice = f"download {url} elsewhere and set checkpoint: PATH"
    if _offline() and not cached.is_file():
        raise JmtError(f"cannot get pretrained weights for {name}: offline (HF_HUB_OFFLINE) and "
                       f"not in torch hub's cache ({cached}); {advice}")
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False)
    except Exception as exc:  # no network, proxy, truncated file...
        raise JmtError(f"cannot get pretrained weights for {name} ({type(exc).__name__}: "
                       f"{str(exc)[:200]}); {advice}") from None


def build_ssl(name: str, params: BackboneParams, root: Path, **arch) -> SSLBackbone:
    """Builds `name` (a key of SSL_MODELS) with its weights; `arch` overrides the bundle's
    architecture parameters (e.g. a tiny model in tests)."""
    bundle = getattr(torchaudio.pipelines, SSL_MODELS[name])
    spec = {**bundle._params, **arch}
    model = (torchaudio.models.wavlm_model if bundle._model_type == "WavLM"
             else torchaudio.models.wav2vec2_model)(**spec)
    if params.pretrained:
        model.load_state_dict(pretrained_state(name, bundle), strict=True)
    elif params.checkpoint:
        load_checkpoint(model, root / params.checkpoint, kind=name)
    elif params.allow_random:
        random_weights_warning("audio backbone", name)
    else:
        raise JmtError(f"{name} needs weights: pretrained: true (online), checkpoint: PATH "
                       "(a torchaudio state dict), or allow_random: true")
    layer = params.layer or spec["encoder_num_layers"]
    return SSLBackbone(model, layer=layer, normalize_waveform=bool(bundle._normalize_waveform))


def _register(name: str) -> None:
    def factory(params: BackboneParams, root: Path) -> SSLBackbone:
        return build_ssl(name, params, root)

    factory.__doc__ = f"{name}: torchaudio's {SSL_MODELS[name]} architecture; one layer mean-pooled per frame."
    BACKBONES.add(name, factory)


for _name in SSL_MODELS:
    _register(_name)
