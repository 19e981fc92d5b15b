"""Backbones over each video frame's log-mel window (B, W, n_mels): logmel_stats, vggish."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.config import BackboneParams
from pipeline.errors import JmtError
from pipeline.stage1.backbones import BACKBONES, load_checkpoint, random_weights_warning


class LogMelStats(nn.Module):
    """Per-band statistics of the window: mean (level, timbre), standard deviation and mean
    absolute frame-to-frame change (syllable rhythm), and the same three for the band-summed
    energy. No weights: real signal, offline. Output 3 * n_mels + 3."""

    input = "logmel"

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        x = logmel.float()                                   # (B, W, M)
        delta = (x[:, 1:] - x[:, :-1]).abs()                 # (B, W-1, M)
        energy = torch.logsumexp(x, dim=2, keepdim=True)     # (B, W, 1) log of summed power
        e_delta = (energy[:, 1:] - energy[:, :-1]).abs()
        return torch.cat([x.mean(1), x.std(1), delta.mean(1),
                          energy.mean(1), energy.std(1), e_delta.mean(1)], dim=1)


@BACKBONES.register("logmel_stats")
def logmel_stats(params: BackboneParams, root: Path) -> nn.Module:
    """Log-mel statistics (no weights)."""
    if params.pretrained or params.checkpoint or params.allow_random:
        raise JmtError("logmel_stats has no weights: leave pretrained/checkpoint/allow_random unset")
    return LogMelStats()


class VGGish(nn.Module):
    """The VGGish architecture (Hershey et al. 2017) as laid out by the torchvggish port, so its
    state dict (vggish-*.pth) loads with `checkpoint:`. Input: the last 96 frames of the window;
    VGGish was trained on log(mel + 0.01) of 64 bands, 125-7500 Hz, 25 ms windows, 10 ms hop:
    set the audio params to match when using its real weights. Output 128-d."""

    input = "logmel"
    frames = 96

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for cout, pool in [(64, True), (128, True), (256, False), (256, True), (512, False), (512, True)]:
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(2, 2))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(nn.Linear(512 * 4 * 6, 4096), nn.ReLU(True),
                                        nn.Linear(4096, 4096), nn.ReLU(True),
                                        nn.Linear(4096, 128), nn.ReLU(True))

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        x = logmel.float()[:, -self.frames:]                            # (B, <=96, 64)
        if x.shape[1] < self.frames:
            x = F.pad(x, (0, 0, self.frames - x.shape[1], 0), value=float(x.min()))
        if x.shape[2] != 64:
            raise JmtError(f"vggish needs 64 mel bands (audio.n_mels), got {x.shape[2]}")
        x = torch.log(torch.exp(x) + 0.01)       # our log(mel + 1e-6) -> VGGish's log offset
        x = self.features(x.unsqueeze(1))                               # (B, 512, 6, 4)
        x = x.permute(0, 2, 3, 1).reshape(len(x), -1)  # TF's (H, W, C) flattening order
        return self.embeddings(x)                                       # (B, 128)


@BACKBONES.register("vggish")
def vggish(params: BackboneParams, root: Path) -> nn.Module:
    """VGGish: `checkpoint:` a torchvggish state dict, or random with allow_random."""
    model = VGGish()
    if params.pretrained:
        raise JmtError("vggish: no hub download here; download torchvggish's vggish-*.pth "
                       "yourself and set checkpoint: PATH")
    if params.checkpoint:
        load_checkpoint(model, root / params.checkpoint, kind="vggish")
    elif params.allow_random:
        random_weights_warning("audio backbone", "vggish")
    else:
        raise JmtError("vggish needs weights: checkpoint: PATH (torchvggish state dict) "
                       "or allow_random: true")
    return model
