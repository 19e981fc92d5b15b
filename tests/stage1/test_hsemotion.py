"""`hsemotion:<model>` backbones and the safe reader of whole pickled models (offline).

Their published file is `torch.save(model)` of a timm model whose classifier was replaced:
the tests make such files in a tmp dir (same format) and check that they load without running
code from the file, to the same numbers as the saved model."""

import builtins
import copy
import os
import zipfile
import zlib
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
from PIL import Image

import pipeline.stage1.backbones.hsemotion  # noqa: F401  (registers `hsemotion`)
from pipeline.config import BackboneParams
from pipeline.errors import JmtError
from pipeline.stage1.backbones import build_backbone, input_of, weights_sha256
from pipeline.stage1.backbones.hsemotion import MODELS, HSEmotionModel
from pipeline.stage1.backbones.safe_pickle import read_weights


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These batch-1/2 CPU forwards gain little from a second thread, and while another process
    keeps a core busy two threads oversubscribe the two cores and run ~5x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _published(spec: HSEmotionModel) -> nn.Module:
    """A model in their layout: random timm weights, their classifier, non-trivial BN stats."""
    torch.manual_seed(zlib.crc32(spec.file.encode()))   # stable across runs
    model = timm.create_model(spec.arch, pretrained=False)
    n, width = len(spec.outputs), model.num_features
    if spec.head == "head.fc":
        model.head.fc = nn.Linear(width, n)
    elif n == 10:                                     # MTL: classifier = Linear(1280, 10)
        model.classifier = nn.Linear(width, n)
    else:                                             # classifier = Sequential(Linear(1280, n))
        model.classifier = nn.Sequential(nn.Linear(width, n))
    for name, buf in model.named_buffers():           # loading must carry the BN statistics too
        if name.endswith("running_mean"):
            buf.normal_(0, 0.1)
        elif name.endswith("running_var"):
            buf.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """name -> (their model, dir with `<name>.pt` (whole pickle) and `<name>_state.pt`)."""
    root = tmp_path_factory.mktemp("hsemotion")

    @cache
    def get(name: str) -> tuple[nn.Module, Path]:
        model = _published(MODELS[name])
        torch.save(model, root / f"{name}.pt")
        torch.save(model.state_dict(), root / f"{name}_state.pt")
        return model, root

    return get


def _crops(n: int = 2) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).integers(0, 256, (n, 112, 112, 3), dtype=np.uint8))


def _theirs(model: nn.Module, spec: HSEmotionModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Their library's numbers: `extract_features` (the model with its classifier replaced by
    Identity), then the saved classifier applied to those features."""
    headless = copy.deepcopy(model)
    if spec.head == "head.fc":
        head, headless.head.fc = model.head.fc, nn.Identity()
    else:
        head, headless.classifier = model.classifier, nn.Identity()
    feats = headless(x)
    return feats, head(feats)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_their_pickled_model_loads_to_the_same_numbers(name, store):
    spec = MODELS[name]
    model, root = store(name)
    net = build_backbone(BackboneParams(name=f"hsemotion:{name}", checkpoint=f"{name}.pt", append_outputs=True), root)
    assert input_of(net) == "crops" and not net.training
    assert not any(p.requires_grad for p in net.parameters())
    width = model.num_features
    assert net.dim == width + len(spec.outputs) and net.output_names == spec.outputs
    crops = _crops(1 if spec.size > 224 else 2)                   # B2 at 260 px is slow on CPU
    with torch.no_grad():
        out = net(crops)
        x = net.preprocess(crops)
        feats, logits = _theirs(model, spec, x)
    assert x.shape[-2:] == (spec.size, spec.size)
    assert out.shape == (len(crops), net.dim)
    assert torch.equal(out[:, :width], feats) and torch.equal(out[:, width:], logits)

    # the same weights from a plain state dict; without append_outputs: the features only
    plain = build_backbone(BackboneParams(name=f"hsemotion:{name}", checkpoint=f"{name}_state.pt"), root)
    assert plain.dim == width and plain.output_names == ()
    assert weights_sha256(plain) == weights_sha256(net)


def test_the_reader_finds_every_tensor_and_the_module_classes(store):
    model, root = store("enet_b0_8_best_afew")
    weights = read_weights(root / "enet_b0_8_best_afew.pt")
    expected = model.state_dict()
    assert weights.kind == "module" and weights.state.keys() == expected.keys()
    assert all(torch.equal(weights.state[k], v) for k, v in expected.items())
    assert weights.classes[""] == "timm.models.efficientnet.EfficientNet"
    assert weights.class_name("conv_stem") == "Conv2dSame"       # the tf_ variant, as theirs
    assert weights.classes["classifier"] == "torch.nn.modules.container.Sequential"


def test_non_persistent_buffers_are_left_out(tmp_path):
    net = nn.Sequential(nn.Linear(2, 3))
    net[0].register_buffer("scratch", torch.ones(3), persistent=False)
    net[0].register_buffer("kept", torch.arange(3.0))
    torch.save(net, tmp_path / "m.pt")
    weights = read_weights(tmp_path / "m.pt")
    assert set(weights.state) == {"0.weight", "0.bias", "0.kept"}
    assert torch.equal(weights.state["0.kept"], torch.arange(3.0))


def test_a_module_inside_a_checkpoint_dict(tmp_path):
    net = nn.Sequential(nn.Linear(2, 3))
    torch.save({"model": net, "epoch": 3}, tmp_path / "ckpt.pt")
    weights = read_weights(tmp_path / "ckpt.pt")
    assert weights.kind == "module" and weights.class_name() == "Sequential"
    assert torch.equal(weights.state["0.weight"], net[0].weight.detach())


def test_big_endian_files_are_byte_swapped(tmp_path):
    net = nn.Linear(3, 2).double()
    torch.save(net, tmp_path / "little.pt")
    with zipfile.ZipFile(tmp_path / "little.pt") as src, zipfile.ZipFile(tmp_path / "big.pt", "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in info.filename:
                data = np.frombuffer(data, "<f8").astype(">f8").tobytes()
            dst.writestr(info.filename, data)
    weights = read_weights(tmp_path / "big.pt")
    assert torch.equal(weights.state["weight"], net.weight.detach())
    assert torch.equal(weights.state["bias"], net.bias.detach())


# ---- malicious files: nothing in them runs ------------------------------------------------


class Shell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Exec:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)


def test_the_payloads_are_live_under_an_unsafe_load(tmp_path):
    """The control: torch.load(weights_only=False) runs them, so the tests below mean something."""
    for payload in (Shell, Exec):
        marker = tmp_path / f"{payload.__name__}.ran"
        torch.save({"x": payload(marker)}, tmp_path / "evil.pt")
        torch.load(tmp_path / "evil.pt", weights_only=False)
        assert marker.exists()


@pytest.mark.parametrize("payload", [Shell, Exec])
def test_a_payload_in_a_pickled_model_stays_inert(payload, store, tmp_path):
    model, _ = store("enet_b0_8_va_mtl")
    evil = copy.deepcopy(model)
    marker = tmp_path / "pwned"
    evil.note = payload(marker)                  # a plain attribute: pickled with the module
    torch.save(evil, tmp_path / "evil_attr.pt")
    net = build_backbone(BackboneParams(name="hsemotion:enet_b0_8_va_mtl", checkpoint="evil_attr.pt"), tmp_path)
    assert not marker.exists()
    assert torch.equal(net.model.conv_stem.weight, model.conv_stem.weight)

    evil._modules["extra"] = payload(marker)     # where a submodule should be
    torch.save(evil, tmp_path / "evil_module.pt")
    with pytest.raises(JmtError, match=r"evil_module.pt: extra is a (posix|os|builtins)\.\w+, not a torch module"):
        read_weights(tmp_path / "evil_module.pt")
    assert not marker.exists()


@pytest.mark.parametrize("payload", [Shell, Exec])
def test_a_payload_beside_a_state_dict_or_alone_is_refused(payload, store, tmp_path):
    model, _ = store("enet_b0_8_va_mtl")
    marker = tmp_path / "pwned"
    torch.save({"state_dict": model.state_dict(), "evil": payload(marker)}, tmp_path / "beside.pt")
    with pytest.raises(JmtError, match=r"beside.pt: not a plain weights state dict"):
        build_backbone(BackboneParams(name="hsemotion:enet_b0_8_va_mtl", checkpoint="beside.pt"), tmp_path)
    torch.save(payload(marker), tmp_path / "alone.pt")
    with pytest.raises(JmtError, match=r"alone.pt: the pickled object is a (posix|os|builtins)\.\w+, "
                                       "not a torch module"):
        build_backbone(BackboneParams(name="hsemotion:enet_b0_8_va_mtl", checkpoint="alone.pt"), tmp_path)
    assert not marker.exists()


# ---- bad files: clear errors that name the file ---------------------------------------------


def test_legacy_and_foreign_files(store, tmp_path):
    model, _ = store("enet_b0_8_va_mtl")
    torch.save(model, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    params = BackboneParams(name="hsemotion:enet_b0_8_va_mtl", checkpoint="legacy.pt")
    with pytest.raises(JmtError, match=r"legacy.pt: not a zip-format torch file.*Re-save it"):
        build_backbone(params, tmp_path)
    (tmp_path / "legacy.pt").write_bytes(b"\x00not a torch file at all")
    with pytest.raises(JmtError, match=r"legacy.pt: not a zip-format torch file"):
        build_backbone(params, tmp_path)
    # a legacy-format STATE DICT is fine (torch's weights-only loader reads it)
    torch.save(model.state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    net = build_backbone(params, tmp_path)
    assert torch.equal(net.model.classifier.weight, model.classifier.weight)


def test_a_damaged_archive(store, tmp_path):
    _, root = store("enet_b0_8_va_mtl")
    with zipfile.ZipFile(root / "enet_b0_8_va_mtl.pt") as src:
        names = src.namelist()
        victim = next(n for n in names if "/data/" in n)
        with zipfile.ZipFile(tmp_path / "no_storage.pt", "w") as dst:
            for n in names:
                if n != victim:
                    dst.writestr(n, src.read(n))
        with zipfile.ZipFile(tmp_path / "no_pickle.pt", "w") as dst:
            for n in names:
                if not n.endswith("data.pkl"):
                    dst.writestr(n, src.read(n))
    with pytest.raises(JmtError, match=rf"no_storage.pt: a tensor's storage {victim} is missing"):
        read_weights(tmp_path / "no_storage.pt")
    with pytest.raises(JmtError, match=r"no_pickle.pt: a zip file without <archive>/data.pkl"):
        read_weights(tmp_path / "no_pickle.pt")
    with pytest.raises(JmtError, match=r"nope.pt: weights file not found"):
        read_weights(tmp_path / "nope.pt")


def test_weights_that_do_not_fit_name_the_file_and_the_key(store, tmp_path):
    model, root = store("enet_b0_8_best_afew")                    # 8 outputs
    with pytest.raises(JmtError, match=r"enet_b0_8_best_afew.pt: does not fit the hsemotion:enet_b0_8_va_mtl "
                                       r".*'classifier.weight' has shape \(8, 1280\), the .* needs \(10, 1280\)"):
        build_backbone(BackboneParams(name="hsemotion:enet_b0_8_va_mtl", checkpoint="enet_b0_8_best_afew.pt"), root)
    state = model.state_dict()
    del state["bn2.running_var"]
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(JmtError, match=r"partial.pt: does not fit .*missing 'bn2.running_var'"):
        build_backbone(BackboneParams(name="hsemotion:enet_b0_8_best_afew", checkpoint="partial.pt"), tmp_path)
    state = model.state_dict() | {"extra.weight": torch.zeros(1)}
    torch.save(state, tmp_path / "extra.pt")
    with pytest.raises(JmtError, match=r"extra.pt: does not fit .*unexpected 'extra.weight'"):
        build_backbone(BackboneParams(name="hsemotion:enet_b0_8_best_afew", checkpoint="extra.pt"), tmp_path)
    torch.save(nn.Sequential(nn.Linear(2, 2)), tmp_path / "other.pt")   # another network entirely
    with pytest.raises(JmtError, match=r"other.pt: holds a torch.nn.modules.container.Sequential, "
                                       r"but hsemotion:enet_b0_8_best_afew is a timm EfficientNet"):
        build_backbone(BackboneParams(name="hsemotion:enet_b0_8_best_afew", checkpoint="other.pt"), tmp_path)


# ---- params ---------------------------------------------------------------------------------


def test_names_weights_and_options():
    with pytest.raises(JmtError, match=r"unknown HSEmotion model 'enet_b9'; supported: "
                                       r"hsemotion:enet_b0_8_best_afew, .*hsemotion:mobilevit_va_mtl"):
        build_backbone(BackboneParams(name="hsemotion:enet_b9", allow_random=True), Path("."))
    with pytest.raises(JmtError, match=r"mbf_va_mtl is a MobileFaceNet .*not a timm architecture"):
        build_backbone(BackboneParams(name="hsemotion:mbf_va_mtl", allow_random=True), Path("."))
    with pytest.raises(JmtError, match=r"unknown HSEmotion model ''"):
        build_backbone(BackboneParams(name="hsemotion", allow_random=True), Path("."))
    with pytest.raises(JmtError, match=r"needs weights: checkpoint: PATH \(their enet_b0_8_va_mtl.pt"):
        build_backbone(BackboneParams(name="hsemotion:enet_b0_8_va_mtl"), Path("."))
    with pytest.warns(UserWarning, match=r"'hsemotion:enet_b0_8_va_mtl' has RANDOM weights"):
        net = build_backbone(BackboneParams(name="hsemotion:enet_b0_8_va_mtl", allow_random=True), Path("."))
    assert net.dim == 1280
    with pytest.raises(JmtError, match=r"has no layers to pick"), pytest.warns(UserWarning):
        build_backbone(BackboneParams(name="hsemotion:enet_b0_8_va_mtl", allow_random=True, layer=2), Path("."))
    with pytest.raises(JmtError, match=r"does not take `reduction`"), pytest.warns(UserWarning):
        build_backbone(BackboneParams(name="hsemotion:enet_b0_8_va_mtl", allow_random=True, reduction="max"),
              Path("."))


def test_pretrained_uses_torch_hubs_cache_and_fails_clearly_offline(store, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    params = BackboneParams(name="hsemotion:enet_b0_8_va_mtl", pretrained=True)
    url = "https://github.com/sb-ai-lab/EmotiEffLib/blob/main/models/affectnet_emotions/enet_b0_8_va_mtl.pt"
    with pytest.raises(JmtError, match=rf"offline \(HF_HUB_OFFLINE\).*download {url}\?raw=true elsewhere"):
        build_backbone(params, Path("."))
    model, root = store("enet_b0_8_va_mtl")
    cached = tmp_path / "hub" / "checkpoints" / "hsemotion" / "enet_b0_8_va_mtl.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes((root / "enet_b0_8_va_mtl.pt").read_bytes())
    net = build_backbone(params, Path("."))
    assert torch.equal(net.model.classifier.bias, model.classifier.bias)


def test_preprocessing_follows_theirs():
    """Their pipeline: PIL resize (bilinear) of the RGB crop, /255, ImageNet normalisation."""
    with pytest.warns(UserWarning):
        net = build_backbone(BackboneParams(name="hsemotion:enet_b0_8_va_mtl", allow_random=True), Path("."))
    crops = _crops(1)
    img = Image.fromarray(crops[0].numpy()).resize((224, 224), Image.BILINEAR)
    theirs = (torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255.0
              - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    ours = net.preprocess(crops)[0]
    assert ours.shape == theirs.shape == (3, 224, 224)
    # PIL rounds its result to uint8: they agree to within one uint8 level (1/255/std)
    assert (ours - theirs).abs().max() <= 1 / 255 / 0.224 + 1e-4
