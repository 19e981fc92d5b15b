"""Torch device choice: CUDA when present unless the params say otherwise."""

from __future__ import annotations

import torch

from pipeline.errors import JmtError


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available else cpu; 'cpu', 'cuda', 'cuda:1' as given (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise JmtError(f"device {name!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    return device
