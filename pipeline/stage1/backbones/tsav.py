"""The JMT authors' two feature extractors (TSAV, Kuhnke et al., ABAW 2020): R(2+1)D-18 on face
clips and a one-channel ResNet-18 on log-mel spectrograms, reading the published weight files.

Facts from the authors' code (PoloWlg/Joint-Multimodal-Transformer-6th-ABAW: models/tsav.py,
models/video_resnet.py, datasets/dataset_new.py, main.py, config_file.json) and Kuhnke's
(kuhnkeF/ABAW2020TNT: tsav.py):

- Visual: torchvision's R(2+1)D-18 (same key layout as their video_resnet.py) on 8 face crops
  at 112 x 112, /255 then normalised with mean (0.43216, 0.394666, 0.37645) and std (0.22803,
  0.22145, 0.216989); the clip is 8 of the last 32 frames (`pipeline.stage1.clips`). Features:
  layer4's 512 x 1 x 7 x 7 map (their `spatial_fts`) reduced by max (`reduction: max`, the
  default here and their class default; their "OUR_AFFWILD2" weights were trained with it),
  mean (`avg`) or flattened to 25,088 and projected to 512 (`flatten`, their config_file.json's
  choice). Their flatten projection (`vision_r2d1_fc`) is trained with the fusion head; a frozen
  cache cannot do that, so here it is read from the checkpoint when the file has it, and is
  otherwise a fixed Gaussian random projection (seed 0, variance 1/25,088) that stage 2's own
  input projection learns on top of. Their TSAV weights have a 4-channel stem (RGB + a face
  mask channel); their main.py keeps the first 3 input channels of `stem.0.weight`, as here.
- Audio: torchvision's ResNet-18 with conv1 replaced by a one-channel conv (from ImageNet
  weights: the mean of the 3 channels), fc removed, on a 64-band mel spectrogram of the
  45,599 samples (1.034 s at 44.1 kHz; their clip length, shorter audio zero-padded in front)
  ending at the frame: n_fft 1024, window 882 (20 ms), hop 441 (10 ms), Hann, power 2, centred
  frames (104 of them), then `AmplitudeToDB('power', top_db=80)` per window and
  (x + 14.8) / 19.895.
  The cache's waveform (16 kHz by default) is resampled to 44.1 kHz here rather than decoded
  again: one audio cache serves every backbone, and a 16 kHz track has nothing above 8 kHz to
  give the upper bands anyway. To hear those bands as the authors did, set
  `audio.sample_rate: 44100` (the audio stage decodes at that rate; its VAD resamples itself).

Checkpoint layouts read by `checkpoint:` (a `module.` prefix from DataParallel is dropped;
classifier heads (`fc.*`) are ignored: only the features are used):

| file | keys |
|---|---|
| JMT authors' `vision_TSAV_Sub4_544k.pt` (their VideoModel) | `r2plus1d.stem.0.weight` (45, 4, 1, 7, 7), `r2plus1d.layer1...` |
| JMT authors' `audio_TSAV_Sub4_544k.pt` (their AudioModel) | `resnet.conv1.weight` (64, 1, 7, 7), `resnet.layer1...` |
| Kuhnke's whole TSAV model (`TSAV_Sub4_544k.pth.tar`, under `state_dict`) | `video_model.r2plus1d.*`, `audio_model.resnet.*`, `fc.1.*` |
| the JMT authors' whole TwoStreamAuralVisualModel | `vision_r2d1.r2plus1d.*`, `vision_r2d1_fc.*`, `audio_resnet18.resnet.*` |
| torchvision `r2plus1d_18` (Kinetics-400) / `resnet18` (ImageNet) state dicts | `stem.0.weight` ... / `conv1.weight` (64, 3, 7, 7) ... |
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchaudio
import torchvision

from pipeline.config import BackboneParams
from pipeline.errors import JmtError
from pipeline.stage1.backbones import (BACKBONES, WaveformBackbone, load_state, random_weights_warning,
                                       read_state_dict)
from pipeline.stage1.backbones.frames import padded_slice

CLIP_MEAN = (0.43216, 0.394666, 0.37645)
CLIP_STD = (0.22803, 0.22145, 0.216989)
CLIP_SIZE, CLIP_FRAMES, CLIP_STRIDE = 112, 8, 4
MEL = {"sample_rate": 44100, "n_fft": 1024, "win_length": 882, "hop_length": 441, "n_mels": 64,
       "power": 2.0}
DB_TOP, MEL_MEAN, MEL_STD = 80.0, -14.8, 19.895
AUDIO_SAMPLES = 45599                # 1.034 s at 44.1 kHz: the authors' per-frame audio clip
CLIPS_PER_PASS = 16                  # clips per forward pass (bounds the activations' memory)
WINDOWS_PER_PASS = 64                # audio windows per forward pass


def published_part(path: Path, kind: str, network: str, anchor: str, prefixes: tuple[str, ...]
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], str]:
    """A published file's state, the network's part of it (under the first prefix p for which
    p + anchor is a key; p may be '') without the prefix and without the classifier (`fc.*`, not
    used), and the prefix found."""
    state = read_state_dict(path, kind)
    prefix = next((p for p in prefixes if p + anchor in state), None)
    if prefix is None:
        raise JmtError(f"{path}: no {network} weights in it (no key ending in {anchor!r}; "
                       f"first keys: {', '.join(list(state)[:3])})")
    part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and not k[len(prefix):].startswith("fc.")}
    return state, part, prefix


def _weights_source(params: BackboneParams, name: str) -> None:
    if sum(map(bool, (params.pretrained, params.checkpoint, params.allow_random))) != 1:
        raise JmtError(f"{name} needs exactly one weights source: checkpoint: PATH (the published "
                       "files, see docs), pretrained: true (online) or allow_random: true")


class R2Plus1D(nn.Module):
    """R(2+1)D-18 over face clips -> 512-d (module docstring). Input uint8 (B, K, S, S, 3)."""

    input = "clips"
    options = ("reduction", "clip", "clip_stride")
    dim = 512

    def __init__(self, reduction: str = "max", clip: int = CLIP_FRAMES, clip_stride: int = CLIP_STRIDE) -> None:
        super().__init__()
        self.reduction, self.clip, self.clip_stride = reduction, clip, clip_stride
        self.net = torchvision.models.video.r2plus1d_18(weights=None)
        del self.net.fc                               # features only: layer4's map
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1, 1))
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1, 1))
        self.projection: nn.Linear | None = None
        if reduction == "flatten":
            t = clip
            for _ in range(3):                        # layers 2-4 halve time (kernel 3, stride 2, pad 1)
                t = (t + 1) // 2
            width = 512 * t * (CLIP_SIZE // 16) ** 2  # 25,088 for 8 frames at 112 x 112
            self.projection = nn.Linear(width, 512)
            g = torch.Generator().manual_seed(0)      # fixed: the same projection on every machine
            with torch.no_grad():
                self.projection.weight.copy_(torch.randn(512, width, generator=g) / np.sqrt(width))
                self.projection.bias.zero_()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised clips (B, 3, K, 112, 112) -> layer4's map (B, 512, T', 7, 7)."""
        net = self.net
        return net.layer4(net.layer3(net.layer2(net.layer1(net.stem(x)))))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        out = []
        for part in clips.split(CLIPS_PER_PASS):
            x = part.float().div(255.0).permute(0, 4, 1, 2, 3)            # (b, 3, K, S, S)
            if x.shape[-1] != CLIP_SIZE:
                b, c, k, s, _ = x.shape
                x = F.interpolate(x.transpose(1, 2).reshape(b * k, c, s, s), size=(CLIP_SIZE, CLIP_SIZE),
                                  mode="bilinear", antialias=True, align_corners=False)
                x = x.reshape(b, k, c, CLIP_SIZE, CLIP_SIZE).transpose(1, 2)
            fmap = self.features((x - self.mean) / self.std).flatten(2)   # (b, 512, T' * 7 * 7)
            if self.reduction == "max":
                out.append(fmap.amax(2))
            elif self.reduction == "avg":
                out.append(fmap.mean(2))
            else:
                out.append(self.projection(fmap.flatten(1)))
        return torch.cat(out) if out else clips.new_zeros((0, self.dim), dtype=torch.float32)

    def load_published(self, path: Path) -> None:
        """A TSAV / JMT / torchvision file (module docstring) -> these weights."""
        state, net, prefix = published_part(path, "r2plus1d_18", "R(2+1)D-18", "stem.0.weight",
                                            ("vision_r2d1.r2plus1d.", "video_model.r2plus1d.", "r2plus1d.", ""))
        stem = net["stem.0.weight"]
        if stem.ndim == 5 and stem.shape[1] == 4:     # TSAV: RGB + face-mask channel; keep RGB
            net["stem.0.weight"] = stem[:, :3].clone()
        load_state(self.net, net, path, "r2plus1d_18")
        if self.projection is not None and prefix == "vision_r2d1.r2plus1d.":
            fc = {k.removeprefix("vision_r2d1_fc."): v for k, v in state.items() if k.startswith("vision_r2d1_fc.")}
            if fc:  # their trained flatten projection
                load_state(self.projection, fc, path, "flatten projection (vision_r2d1_fc)")


@BACKBONES.register("r2plus1d_18")
def r2plus1d_18(params: BackboneParams, root: Path) -> nn.Module:
    """R(2+1)D-18 on face clips: TSAV / torchvision checkpoint, Kinetics-400 online, or random."""
    _weights_source(params, "r2plus1d_18")
    model = R2Plus1D(params.reduction or "max", params.clip or CLIP_FRAMES, params.clip_stride or CLIP_STRIDE)
    if params.checkpoint:
        model.load_published(root / params.checkpoint)
    elif params.pretrained:
        try:
            tv = torchvision.models.video.R2Plus1D_18_Weights.KINETICS400_V1.get_state_dict(progress=False)
        except Exception as exc:
            raise JmtError(f"cannot download torchvision's R(2+1)D-18 Kinetics-400 weights ({type(exc).__name__}:"
                           f" {str(exc)[:160]}); offline? use checkpoint: PATH") from None
        load_state(model.net, {k: v for k, v in tv.items() if not k.startswith("fc.")}, Path("torchvision"),
                  "r2plus1d_18")
    else:
        random_weights_warning("visual backbone", "r2plus1d_18")
    return model


class ResNet18LogMel(WaveformBackbone):
    """One-channel ResNet-18 on each frame's 64-band log-mel of the 1.034 s ending at the frame
    (module docstring) -> 512-d."""

    sample_rate = MEL["sample_rate"]
    dim = 512

    def __init__(self) -> None:
        super().__init__()
        self.net = torchvision.models.resnet18(weights=None)
        self.net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.net.fc = nn.Identity()
        self.mel = torchaudio.transforms.MelSpectrogram(**MEL, window_fn=torch.hann_window)
        self.to_db = torchaudio.transforms.AmplitudeToDB("power", top_db=DB_TOP)

    def spectrogram(self, segments: torch.Tensor) -> torch.Tensor:
        """Waveform segments (b, 45599) at 44.1 kHz -> normalised log-mel (b, 1, 64, 104)."""
        spec = self.mel(segments).unsqueeze(1)           # (b, 1, 64, 104) power
        return (self.to_db(spec) - MEL_MEAN) / MEL_STD   # top_db clamps each window by its own max

    def forward(self, wave: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        ends = windows[:, 1].tolist()                    # only the end counts: the window is 45,599 samples
        out = []
        for i in range(0, len(ends), WINDOWS_PER_PASS):
            seg = torch.stack([padded_slice(wave, e - AUDIO_SAMPLES, e) for e in ends[i:i + WINDOWS_PER_PASS]])
            out.append(self.net(self.spectrogram(seg.float())))
        return torch.cat(out) if out else wave.new_zeros((0, self.dim))

    def load_published(self, path: Path) -> None:
        """A TSAV / JMT / torchvision resnet18 file (module docstring) -> these weights."""
        _, net, _ = published_part(path, "resnet18_logmel", "ResNet-18", "conv1.weight",
                                   ("audio_resnet18.resnet.", "audio_model.resnet.", "resnet.", ""))
        conv1 = net["conv1.weight"]
        if conv1.ndim == 4 and conv1.shape[1] == 3:      # an RGB ResNet-18: the mean channel, as theirs
            net["conv1.weight"] = conv1.mean(dim=1, keepdim=True)
        load_state(self.net, net, path, "resnet18_logmel")


@BACKBONES.register("resnet18_logmel")
def resnet18_logmel(params: BackboneParams, root: Path) -> nn.Module:
    """One-channel ResNet-18 on log-mel: TSAV / torchvision checkpoint, ImageNet online, or random."""
    _weights_source(params, "resnet18_logmel")
    model = ResNet18LogMel()
    if params.checkpoint:
        model.load_published(root / params.checkpoint)
    elif params.pretrained:
        try:
            tv = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
        except Exception as exc:
            raise JmtError(f"cannot download torchvision's ResNet-18 ImageNet weights ({type(exc).__name__}: "
                           f"{str(exc)[:160]}); offline? use checkpoint: PATH") from None
        tv = {k: v for k, v in tv.items() if not k.startswith("fc.")}
        tv["conv1.weight"] = tv["conv1.weight"].mean(dim=1, keepdim=True)
        load_state(model.net, tv, Path("torchvision"), "resnet18_logmel")
    else:
        random_weights_warning("audio backbone", "resnet18_logmel")
    return model
