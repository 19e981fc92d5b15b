"""`hsemotion:<model>`: HSEmotion / EmotiEffLib frame models (A. Savchenko) as crops backbones.

The publisher ships each PyTorch model as a WHOLE PICKLED MODEL (`torch.save(model)` of a timm
network whose classifier was replaced). Here the timm architecture is built offline and only
the weights are taken from their file, read by `safe_pickle` (no code from the file runs).

Facts and where they come from (read at sb-ai-lab/EmotiEffLib f1df0e8, 2025-04-04;
av-savchenko/face-emotion-recognition 207ed49, 2024-12-18; av-savchenko/hsemotion 2546ff6):

- Published PyTorch files: EmotiEffLib `models/affectnet_emotions/`: enet_b0_8_best_afew.pt,
  enet_b0_8_best_vgaf.pt, enet_b0_8_va_mtl.pt, enet_b2_7.pt, enet_b2_8.pt, mbf_va_mtl.pt,
  mobilevit_va_mtl.pt (each also as onnx/<name>.onnx); the model list of its library is
  `get_model_list()` in emotiefflib/facial_analysis.py. face-emotion-recognition's
  `models/affectnet_emotions/` also has enet_b0_7.pt and enet_b2_8_best.pt (in the README's
  results table of both repos; the EmotiEffLib links to them are broken, the files are only in
  face-emotion-recognition), plus enet_b0_8_best.pt and affectnet_7_vggface2_rexnet150.pt,
  which no library of theirs loads (not supported here: layout unknown). mobilenet_7.h5 is
  Keras only (not supported).
- Architecture: timm `tf_efficientnet_b0_ns` for the B0 models (create_model calls in
  training_and_examples/affectnet/train_emotions-pytorch.ipynb and
  train_affectnet_march2021_pytorch.ipynb; printed models there show `Conv2dSame` stems and
  BN eps 1e-3, i.e. the tf_ variant; timm >= 0.9 names the architecture `tf_efficientnet_b0`).
  B2: `tf_efficientnet_b2`, inferred (1408 features; same recipe; its creation cell is not
  in the notebooks): when the pickle says its stem is a plain `Conv2d`, `efficientnet_b2` is
  built instead (see `_arch_for`). The EfficientNet files were re-saved for timm 0.9.7 in
  2023 (face-emotion-recognition README and git log), so they are zip-format pickles.
- mobilevit_va_mtl: classifier at `head.fc` (EmotiEffLib facial_analysis.py,
  models/prepare_models_for_emotieffcpplib.py). Which MobileViT is not written anywhere in
  the repos; `mobilevitv2_150` is inferred: 768 features, and with a 10-way head and its
  BatchNorms folded it has exactly 9,821,779 parameters, the count a third-party audit of
  their ONNX file reports (EmotiEffLib model audit note found by code search; not checked
  against the .pt file itself). mbf_va_mtl is a MobileFaceNet (emotiefflib/backbones/
  mobilefacenet.py, classifier `fc`, 112 px, mean = std = 0.5), not a timm model: not
  supported.
- Classifier: the B0 8-class models were trained with `classifier = Sequential(Linear(1280,
  n))` (keys `classifier.0.*`), the MTL model with `classifier = Linear(1280, 10)` (keys
  `classifier.*`) (train_emotions-pytorch.ipynb cells 22 and 43); the libraries accept
  both (`isinstance(model.classifier, Sequential)` in hsemotion/facial_emotions.py and
  facial_analysis.py), so both are accepted here.
- Outputs: 8 classes {0 Anger, 1 Contempt, 2 Disgust, 3 Fear, 4 Happiness, 5 Neutral,
  6 Sadness, 7 Surprise}; `_7` models drop Contempt {Anger, Disgust, Fear, Happiness,
  Neutral, Sadness, Surprise}; `_mtl` models append valence then arousal (scores[:-2] are
  the expression logits; facial_analysis.py `classify_emotions`, facial_emotions.py).
- Preprocessing (facial_analysis.py `EmotiEffLibRecognizerTorch._preprocess`,
  facial_emotions.py): RGB face crop (their tests convert cv2's BGR to RGB) -> PIL ->
  `Resize((s, s))` (bilinear) -> `ToTensor()` (/255) -> `Normalize`; s = 260 for `_b2_`,
  112 for `mbf_`, else 224; mean/std = ImageNet (0.485, 0.456, 0.406) / (0.229, 0.224,
  0.225) for every model but mbf_ (0.5 / 0.5). Note: this includes mobilevit_va_mtl, whose
  timm default config would not normalise.
- Features: their `extract_features` is the model with the classifier replaced by Identity,
  i.e. timm's pooled pre-logits; the outputs are `features @ W.T + b` of that classifier.
- Download: the libraries fetch `https://github.com/<repo>/blob/main/models/affectnet_emotions/
  <file>?raw=true` (emotiefflib/utils.py, hsemotion/facial_emotions.py); no release assets,
  no published checksums.
- Licence: LICENSE of all three repos is Apache-2.0; the READMEs speak of the code only.

Here: crops uint8 (B, 112, 112, 3) RGB -> bilinear antialiased resize to s -> /255 ->
normalise -> timm features (B, F); with `append_outputs: true` the model's own outputs
(B, K) are appended: (B, F + K).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.config import BackboneParams
from pipeline.errors import JmtError
from pipeline.stage1.backbones import BACKBONES, load_state, random_weights_warning
from pipeline.stage1.backbones.safe_pickle import WeightsFile, read_weights

EXPRESSIONS_8 = ("anger", "contempt", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
EXPRESSIONS_7 = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
VA = ("valence", "arousal")
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# Crops per forward pass: at embed's batch of 128, MobileViT-v2 1.5 at 224 px peaked at 4.2 GB
# (EfficientNet-B2 at 260 px: 3.1 GB; docs/measurements.md); passes of 32 bound the activations.
CROPS_PER_PASS = 32
EMOTIEFFLIB = "sb-ai-lab/EmotiEffLib"
FER_REPO = "av-savchenko/face-emotion-recognition"


@dataclass(frozen=True)
class HSEmotionModel:
    """One published model: its file, the timm architecture and how it reads a face."""

    file: str
    arch: str                    # timm architecture it was built from
    size: int                    # input side, pixels
    outputs: tuple[str, ...]     # the model's own outputs, in order
    head: str                    # the classifier's module name
    root_class: str              # the class name of the pickled model
    repo: str = EMOTIEFFLIB      # where the file is published
    mean: tuple[float, ...] = IMAGENET[0]
    std: tuple[float, ...] = IMAGENET[1]

    @property
    def url(self) -> str:
        return f"https://github.com/{self.repo}/blob/main/models/affectnet_emotions/{self.file}?raw=true"


def _enet(file: str, b: int, outputs: tuple[str, ...], repo: str = EMOTIEFFLIB) -> HSEmotionModel:
    return HSEmotionModel(file, f"tf_efficientnet_b{b}", 224 if b == 0 else 260, outputs,
                          head="classifier", root_class="EfficientNet", repo=repo)


MODELS: dict[str, HSEmotionModel] = {
    "enet_b0_8_best_afew": _enet("enet_b0_8_best_afew.pt", 0, EXPRESSIONS_8),
    "enet_b0_8_best_vgaf": _enet("enet_b0_8_best_vgaf.pt", 0, EXPRESSIONS_8),
    "enet_b0_8_va_mtl": _enet("enet_b0_8_va_mtl.pt", 0, EXPRESSIONS_8 + VA),
    "enet_b0_7": _enet("enet_b0_7.pt", 0, EXPRESSIONS_7, repo=FER_REPO),
    "enet_b2_8": _enet("enet_b2_8.pt", 2, EXPRESSIONS_8),
    "enet_b2_8_best": _enet("enet_b2_8_best.pt", 2, EXPRESSIONS_8, repo=FER_REPO),
    "enet_b2_7": _enet("enet_b2_7.pt", 2, EXPRESSIONS_7),
    "mobilevit_va_mtl": HSEmotionModel("mobilevit_va_mtl.pt", "mobilevitv2_150", 224,
                                       EXPRESSIONS_8 + VA, head="head.fc", root_class="ByobNet"),
}
UNSUPPORTED = {
    "mbf_va_mtl": "a MobileFaceNet (emotiefflib/backbones/mobilefacenet.py), not a timm architecture",
    "mobilenet_7": "a Keras .h5 model",
}


class HSEmotionBackbone(nn.Module):
    """A HSEmotion timm model: pooled pre-logit features, optionally followed by its outputs."""

    input = "crops"
    options = ("append_outputs",)

    def __init__(self, spec: HSEmotionModel, model: nn.Module, append_outputs: bool = False) -> None:
        super().__init__()
        self.spec, self.model, self.append_outputs = spec, model, append_outputs
        self.size = (spec.size, spec.size)
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1))
        features = getattr(model, "head_hidden_size", None) or model.num_features
        self.dim = features + (len(spec.outputs) if append_outputs else 0)
        self.output_names = spec.outputs if append_outputs else ()  # the last columns, in order

    def preprocess(self, crops: torch.Tensor) -> torch.Tensor:
        """uint8 (B, S, S, 3) RGB -> float (B, 3, s, s), resized and normalised as they do."""
        x = crops.permute(0, 3, 1, 2).float() / 255.0                  # (B, 3, S, S) in [0, 1]
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", antialias=True, align_corners=False)
        return (x - self.mean) / self.std

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return torch.cat([self._features(part) for part in crops.split(CROPS_PER_PASS)])

    def _features(self, crops: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(crops)
        feats = self.model.forward_head(self.model.forward_features(x), pre_logits=True)  # (B, F)
        if not self.append_outputs:
            return feats
        return torch.cat([feats, self.model.get_classifier()(feats)], dim=1)             # (B, F + K)


def _offline() -> bool:
    """The project's offline switch (HF_HUB_OFFLINE, as for the torchaudio downloads)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def pretrained_file(name: str, spec: HSEmotionModel) -> Path:
    """Their file in torch hub's cache, downloaded from GitHub if absent; JmtError if it cannot."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / "hsemotion" / spec.file
    if cached.is_file():
        return cached
    advice = f"download {spec.url} elsewhere and set checkpoint: PATH (or place it at {cached})"
    if _offline():
        raise JmtError(f"cannot get pretrained weights for hsemotion:{name}: offline (HF_HUB_OFFLINE) "
                       f"and not in torch hub's cache; {advice}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(spec.url, str(cached), progress=False)
    except Exception as exc:  # no network, proxy, moved file...
        raise JmtError(f"cannot download hsemotion:{name} ({type(exc).__name__}: {str(exc)[:200]}); "
                       f"{advice}") from None
    return cached


def _arch_for(spec: HSEmotionModel, weights: WeightsFile) -> str:
    """The timm architecture to build: the table's, unless the pickled model says otherwise."""
    root = weights.class_name()
    if weights.kind == "module" and root != spec.root_class:
        raise JmtError(f"{weights.path}: holds a {weights.classes['']}, but hsemotion:"
                       f"{Path(spec.file).stem} is a timm {spec.root_class} ({spec.arch})")
    if spec.arch.startswith("tf_efficientnet") and weights.class_name("conv_stem") == "Conv2d":
        return spec.arch.removeprefix("tf_")  # symmetric padding, BN eps 1e-5: the non-tf variant
    return spec.arch


def _fit(model: nn.Module, spec: HSEmotionModel, weights: WeightsFile, name: str) -> None:
    """Loads the file's tensors into `model`; JmtError naming the file and the first misfit."""
    state = dict(weights.state)
    for suffix in ("weight", "bias"):  # Sequential(Linear) heads: `classifier.0.*` -> `classifier.*`
        old, new = f"{spec.head}.0.{suffix}", f"{spec.head}.{suffix}"
        if old in state and new not in state:
            state[new] = state.pop(old)
    load_state(model, state, weights.path, f"hsemotion:{name} ({spec.arch}, {len(spec.outputs)} outputs)")


@BACKBONES.register("hsemotion")
def hsemotion(params: BackboneParams, root: Path, model_name: str = "") -> nn.Module:
    """`hsemotion:<model>`: weights from `checkpoint:` (their .pt or a state dict), `pretrained:
    true` (their GitHub file through torch hub's cache), or random with `allow_random: true`."""
    import timm

    if model_name not in MODELS:
        why = f" ({model_name} is {UNSUPPORTED[model_name]})" if model_name in UNSUPPORTED else ""
        raise JmtError(f"unknown HSEmotion model {model_name!r}{why}; supported: "
                       + ", ".join(f"hsemotion:{n}" for n in MODELS))
    spec = MODELS[model_name]
    if params.pretrained:
        weights: WeightsFile | None = read_weights(pretrained_file(model_name, spec))
    elif params.checkpoint:
        weights = read_weights(root / params.checkpoint)
    elif params.allow_random:
        weights = None
        random_weights_warning("visual backbone", f"hsemotion:{model_name}")
    else:
        raise JmtError(f"hsemotion:{model_name} needs weights: checkpoint: PATH (their {spec.file}, "
                       f"from {spec.url}), pretrained: true (online), or allow_random: true")
    arch = _arch_for(spec, weights) if weights is not None else spec.arch
    model = timm.create_model(arch, pretrained=False, num_classes=len(spec.outputs))
    if weights is not None:
        _fit(model, spec, weights, model_name)
    return HSEmotionBackbone(spec, model, append_outputs=bool(params.append_outputs))
