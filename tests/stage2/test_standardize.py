"""Input standardisation (model.standardize): the statistics, where they act, and that they
travel in the checkpoint. Expected values are computed here with numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.stage2.data import CachedEntry, feature_stats, load_splits
from pipeline.stage2.heads import build_head
from pipeline.stage2.layers import ModalityInput
from pipeline.stage2.train import train_model

from .test_train import stage2_params

pytestmark = pytest.mark.usefixtures("one_thread")


def _entry(name: str, audio: np.ndarray, mask: np.ndarray) -> CachedEntry:
    n = len(audio)
    arrays = {"streams/audio/features": audio.astype(np.float16),
              "streams/visual/features": np.zeros((n, 2), np.float16),
              "streams/audio/mask": mask, "streams/visual/mask": np.ones(n, bool),
              "labels/va": np.zeros((n, 2), np.float32), "valid/va": np.ones(n, bool)}
    return CachedEntry(name=name, path=Path(name), n=n, fps=15.0, streams=["visual", "audio"], tasks=["va"],
                 splits={"va": "train"}, arrays=arrays)


def test_feature_stats_use_present_frames_of_every_entry():
    a = _entry("a", np.array([[1.0, 10.0], [3.0, 10.0], [999.0, -999.0]]), np.array([True, True, False]))
    b = _entry("b", np.array([[5.0, 10.0]]), np.array([True]))
    mean, std = feature_stats([a, b], "audio")
    # present frames: [1, 3, 5] and [10, 10, 10]; the masked frame (999) must not count
    np.testing.assert_allclose(mean, [3.0, 10.0])
    np.testing.assert_allclose(std, [np.sqrt(8 / 3), 1.0])  # a constant feature gets std 1


def test_modality_input_standardises_before_the_l2_norm():
    layer = ModalityInput(2, 2)
    with torch.no_grad():
        layer.proj.weight.copy_(torch.eye(2))
        layer.proj.bias.zero_()
        layer.mean.copy_(torch.tensor([100.0, 0.0]))
        layer.std.copy_(torch.tensor([2.0, 1.0]))
    x = torch.tensor([[[104.0, 3.0]]])                                # (1, 1, 2)
    out = layer(x, torch.tensor([[True]]))
    expected = np.array([2.0, 3.0]) / np.hypot(2.0, 3.0)             # ((104-100)/2, 3), then unit length
    np.testing.assert_allclose(out[0, 0].detach().numpy(), expected, rtol=1e-6)


def test_training_stores_the_training_split_statistics(tiny_cache, tmp_path):
    on = train_model(stage2_params(tiny_cache, tmp_path / "on"), quiet=True)
    ckpt = torch.load(on.checkpoint, weights_only=True)
    mean = ckpt["state_dict"]["inputs.audio.mean"].numpy()
    assert np.abs(mean).max() > 0  # set from the data, not the identity default
    model = build_head(ckpt["head"]["name"], **ckpt["head"]["kwargs"])
    model.load_state_dict(ckpt["state_dict"])                         # the buffers travel in the checkpoint
    torch.testing.assert_close(model.inputs["audio"].mean, ckpt["state_dict"]["inputs.audio.mean"])
    # the training split's statistics: its present frames (model.standardize)
    params = stage2_params(tiny_cache, tmp_path / "on")
    train = load_splits(params, ["va"]).train
    for s in ("visual", "audio"):
        want_mean, want_std = feature_stats(train, s)
        np.testing.assert_allclose(ckpt["state_dict"][f"inputs.{s}.mean"].numpy(), want_mean)
        np.testing.assert_allclose(ckpt["state_dict"][f"inputs.{s}.std"].numpy(), want_std)
    off = train_model(stage2_params(tiny_cache, tmp_path / "off", standardize=False), quiet=True)
    state = torch.load(off.checkpoint, weights_only=True)["state_dict"]
    assert torch.equal(state["inputs.audio.mean"], torch.zeros_like(state["inputs.audio.mean"]))
    assert torch.equal(state["inputs.visual.std"], torch.ones_like(state["inputs.visual.std"]))
