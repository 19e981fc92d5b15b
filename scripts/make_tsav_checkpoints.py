"""Writes weight files in the key layouts the TSAV / JMT authors published, with RANDOM values.

jmt ships no weights, and the authors' files cannot be fetched here (no internet). These files
have exactly the names, shapes and nesting of the published ones (from the authors' code: see
pipeline/stage1/backbones/tsav.py), so `jmt embed` with `checkpoint:` runs the real loading path:
the same params work unchanged with the real files. Their embeddings carry no learned meaning.

    python scripts/make_tsav_checkpoints.py --out data/weights            # --layout jmt (default)
    python scripts/make_tsav_checkpoints.py --out data/weights --layout kuhnke
    python scripts/make_tsav_checkpoints.py --out data/weights --layout torchvision

Layouts and files written:
- jmt: the JMT authors' two files (PoloWlg/Joint-Multimodal-Transformer-6th-ABAW, main.py loads
  them into their VideoModel / AudioModel with the classifier removed):
  `vision_TSAV_Sub4_544k.pt` (`r2plus1d.*`, 4-channel stem), `audio_TSAV_Sub4_544k.pt` (`resnet.*`).
- kuhnke: Kuhnke et al.'s whole model (kuhnkeF/ABAW2020TNT, tsav.py TwoStreamAuralVisualModel),
  `{"state_dict": ...}` in `TSAV_Sub4_544k.pth.tar`: `video_model.r2plus1d.*`, `audio_model.resnet.*`
  and the joint classifier `fc.1.*`; the same file serves both streams.
- torchvision: torchvision's own `r2plus1d_18` and `resnet18` state dicts (3-channel conv1,
  classifiers included): `r2plus1d_18.pth`, `resnet18.pth`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn as nn
import torchvision

LAYOUTS = {"jmt": ("vision_TSAV_Sub4_544k.pt", "audio_TSAV_Sub4_544k.pt"),
           "kuhnke": ("TSAV_Sub4_544k.pth.tar", "TSAV_Sub4_544k.pth.tar"),
           "torchvision": ("r2plus1d_18.pth", "resnet18.pth")}
CLASSES = 17   # TSAV's outputs: 2 VA + 7 expressions + 8 AUs


def video_model(stem_channels: int) -> nn.Module:
    """torchvision's R(2+1)D-18 with TSAV's stem width and no classifier."""
    net = torchvision.models.video.r2plus1d_18(weights=None)
    old = net.stem[0]
    net.stem[0] = nn.Conv3d(stem_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
    return net


def audio_model() -> nn.Module:
    """torchvision's ResNet-18 with TSAV's one-channel conv1."""
    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net


def prefixed(net: nn.Module, prefix: str, drop_fc: bool) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in net.state_dict().items() if not (drop_fc and k.startswith("fc."))}


def layout_states(layout: str) -> dict[str, dict]:
    """File name -> what torch.save writes, for one layout (random values, seeded by the caller)."""
    vision_file, audio_file = LAYOUTS[layout]
    if layout == "jmt":   # VideoModel(num_channels=4) / AudioModel with fc = Dummy (no classifier keys)
        return {vision_file: prefixed(video_model(4), "r2plus1d.", drop_fc=True),
                audio_file: prefixed(audio_model(), "resnet.", drop_fc=True)}
    if layout == "kuhnke":
        state = {**prefixed(video_model(4), "video_model.r2plus1d.", drop_fc=True),
                 **prefixed(audio_model(), "audio_model.resnet.", drop_fc=True),
                 "fc.1.weight": torch.randn(CLASSES, 1024) * 0.02, "fc.1.bias": torch.zeros(CLASSES)}
        return {vision_file: {"state_dict": state}}
    return {vision_file: torchvision.models.video.r2plus1d_18(weights=None).state_dict(),
            audio_file: torchvision.models.resnet18(weights=None).state_dict()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the files")
    ap.add_argument("--layout", choices=sorted(LAYOUTS), default="jmt")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, state in layout_states(args.layout).items():
        torch.save(state, args.out / name)
        print(f"{args.out / name}: {args.layout} layout, RANDOM values (seed {args.seed})")


if __name__ == "__main__":
    main()
