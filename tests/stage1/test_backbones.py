"""Every backbone in the registries: builds, runs, no NaN; weights handling; the FER port."""

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import BackboneParams
from pipeline.errors import JmtError
from pipeline.registry import RegistryError
from pipeline.stage1.backbones import AUDIO, VISUAL, build, weights_sha256
from pipeline.stage1.backbones.fer_xception import EMOTIONS, FerXception
from pipeline.stage1.backbones.ssl import SSL_MODELS

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "fer_reference.npz"

VISUAL_CASES = {"fer_xception": BackboneParams(name="fer_xception"),
                "timm": BackboneParams(name="timm:mobilenetv3_small_100", allow_random=True)}
AUDIO_CASES = {"logmel_stats": BackboneParams(name="logmel_stats"),
               "vggish": BackboneParams(name="vggish", allow_random=True)}
WAVEFORM_CASES = {"prosody": BackboneParams(name="prosody"), "egemaps": BackboneParams(name="egemaps")}


def test_every_registered_backbone_has_a_case():
    """The SSL models (one factory) are tested per family in test_audio_backbones.py."""
    assert set(VISUAL.names()) == set(VISUAL_CASES)
    assert set(AUDIO.names()) == set(AUDIO_CASES) | set(WAVEFORM_CASES) | set(SSL_MODELS)


@pytest.mark.parametrize("key", sorted(VISUAL_CASES))
def test_visual_backbones(key):
    net = build(VISUAL, VISUAL_CASES[key], Path("."))
    crops = torch.randint(0, 256, (3, 112, 112, 3), dtype=torch.uint8)
    with torch.no_grad():
        out = net(crops)
    assert out.ndim == 2 and out.shape[0] == 3 and torch.isfinite(out).all()
    assert not any(p.requires_grad for p in net.parameters()) and not net.training


@pytest.mark.parametrize("key", sorted(AUDIO_CASES))
def test_audio_backbones(key):
    net = build(AUDIO, AUDIO_CASES[key], Path("."))
    with torch.no_grad():
        out = net(torch.randn(3, 100, 64) - 5)
    assert out.ndim == 2 and out.shape[0] == 3 and torch.isfinite(out).all()


@pytest.mark.parametrize("key", sorted(WAVEFORM_CASES))
def test_waveform_audio_backbones(key):
    net = build(AUDIO, WAVEFORM_CASES[key], Path("."))
    wave = 0.1 * torch.randn(32000)
    windows = torch.tensor([[-16000, 0], [0, 16000], [8000, 24000], [20000, 36000]])  # before, in, past the track
    with torch.no_grad():
        out = net(wave, windows)
    assert out.shape == (4, net.dim) and torch.isfinite(out).all()


def test_fer_port_matches_the_original_keras_model():
    """Reference outputs of the original Keras model (scripts/make_fer_reference.py)."""
    ref = np.load(FIXTURE)
    net = FerXception()
    x = torch.as_tensor(ref["inputs"]).permute(0, 3, 1, 2)  # NHWC -> NCHW
    with torch.no_grad():
        features, logits = net.net(x)
    probs = torch.softmax(logits, 1).numpy()
    assert np.abs(probs - ref["probs"]).max() < 1e-4
    assert np.abs(features.numpy() - ref["features"]).max() < 1e-4
    assert [EMOTIONS[i] for i in ref["probs"].argmax(1)][:5] == ["happy"] * 5  # the smiling astronaut


def test_random_weights_need_consent_and_warn():
    with pytest.raises(JmtError, match="needs weights"):
        build(VISUAL, BackboneParams(name="timm:resnet18"), Path("."))
    with pytest.raises(JmtError, match="vggish needs weights"):
        build(AUDIO, BackboneParams(name="vggish"), Path("."))
    with pytest.warns(UserWarning, match="RANDOM weights"):
        build(VISUAL, BackboneParams(name="timm:resnet18", allow_random=True), Path("."))


def test_unknown_names():
    with pytest.raises(RegistryError, match="unknown visual backbone 'resnet'; known: fer_xception, timm"):
        build(VISUAL, BackboneParams(name="resnet"), Path("."))
    with pytest.raises(JmtError, match="timm has no model 'resnet9000'"):
        build(VISUAL, BackboneParams(name="timm:resnet9000", allow_random=True), Path("."))


def test_pretrained_offline_fails_fast_with_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(JmtError, match="cannot get pretrained weights for timm:resnet18.*checkpoint: PATH"):
        build(VISUAL, BackboneParams(name="timm:resnet18", pretrained=True), Path("."))


def test_local_checkpoints_round_trip(tmp_path):
    with pytest.warns(UserWarning):
        src = build(AUDIO, BackboneParams(name="vggish", allow_random=True), Path("."))
    torch.save({"state_dict": src.state_dict()}, tmp_path / "vggish.pth")
    loaded = build(AUDIO, BackboneParams(name="vggish", checkpoint="vggish.pth"), tmp_path)
    assert weights_sha256(loaded) == weights_sha256(src)
    timm_src = build(VISUAL, BackboneParams(name="timm:resnet18", allow_random=True), Path("."))
    torch.save(timm_src.model.state_dict(), tmp_path / "r18.pth")
    with pytest.raises(JmtError, match="r18.pth: does not fit the timm:resnet18"):
        build(VISUAL, BackboneParams(name="timm:resnet18", checkpoint="r18.pth"), tmp_path)  # no classifier
    with pytest.raises(JmtError, match="checkpoint not found"):
        build(AUDIO, BackboneParams(name="vggish", checkpoint="nope.pth"), tmp_path)
