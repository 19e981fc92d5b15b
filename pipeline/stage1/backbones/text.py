"""Text backbones: features of the words heard in the `window_s` seconds before each frame ends.

Both read an entry's transcript (`transcripts.Words`) and each frame's span [first, last) of its
words (`transcripts.frame_spans`, over `window_s` seconds: 4.0 by default, the `WordsBackbone`
base's, or the constructor's `window_s`). A span's text is its words joined with single spaces,
case kept. Frames share spans (a word stays in the window for `window_s` seconds), so each
distinct span is computed once per call and its row copied to every frame that has it. A frame
with no word gets the features of an empty text (its mask is off anyway).

- `text_lexicon` (no weights; 16 values, `TextLexicon.features`):
  VADER (Hutto & Gilbert 2014; pip `vaderSentiment`, MIT, lexicon in the wheel): `compound`,
  `pos`, `neg`, `neu` of `SentimentIntensityAnalyzer.polarity_scores(text)`; for the empty text
  VADER gives 0.0 for all four. NRC Emotion Lexicon (EmoLex, Mohammad & Turney 2013, as bundled
  by pip `nrclex`: 6,468 words with at least one association): for each of its 10 categories, the
  number of the span's words associated with it / the number of words (0 for no word). A word is
  looked up lower-cased with the punctuation around it stripped, without lemmatisation
  (`NRCLex.load_raw_text` lemmatises with TextBlob, which needs NLTK corpora that no wheel ships:
  we read the lexicon file and never import TextBlob or NLTK). Then the word count and the
  speaking rate, word count / `window_s` (words per second of the window, also for a window
  that starts before the video).
  Licence: the NRC Emotion Lexicon is free for non-commercial research and educational use only
  (its terms, http://saifmohammad.com/WebPages/NRC-Emotion-Lexicon.htm: commercial use needs a
  licence from the National Research Council Canada; cite Mohammad & Turney, Computational
  Intelligence 29(3), 2013); nrclex's own code is MIT but its bundled lexicon keeps those terms
  ("for research purposes only", its README): never the default backbone. Some of its entries
  label neutral words with emotions (Zad et al. 2021, "Correcting Bias in the NRC Emotion Lexicon").
- `sentence`: a sentence-transformers model (pip `sentence-transformers`, Apache-2.0), one
  embedding per span's text, batched; the empty text -> zeros. Weights: `checkpoint: DIR`, a local
  model directory in sentence-transformers' saved layout (`modules.json`) or a plain transformers
  model directory (then mean pooling over tokens, sentence-transformers' fallback); `pretrained:
  true` loads `SENTENCE_MODEL` (or `sentence:<hub id>`) through the Hugging Face cache, downloading
  it when online; with HF_HUB_OFFLINE set only the cache is read, and a model not there is a
  JmtError. The model is a submodule (its parameters are in `state_dict`, so `weights_sha256`
  covers them), beside a buffer hashing its tokenizer and pooling configuration.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from pipeline.config import BackboneParams
from pipeline.errors import JmtError
from pipeline.stage1.backbones import BACKBONES, WordsBackbone

VADER = ("compound", "pos", "neg", "neu")
NRC = ("anger", "anticipation", "disgust", "fear", "joy", "negative", "positive", "sadness",
       "surprise", "trust")
FEATURES = [*(f"vader_{k}" for k in VADER), *(f"nrc_{k}" for k in NRC), "word_count", "speaking_rate"]
SENTENCE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"   # 384-d, Apache-2.0, 22.7M parameters
PINS = {"vaderSentiment": "vaderSentiment==3.3.2", "nrclex": "nrclex==4.1.0",
        "sentence_transformers": "sentence-transformers==6.2.0"}


def _missing(backbone: str, module: str) -> JmtError:
    return JmtError(f"{backbone} needs the {PINS[module].split('==')[0]} package: pip install {PINS[module]}")


def distinct_spans(spans, m: int) -> tuple[np.ndarray, np.ndarray]:
    """spans (n, 2) [first, last) into a transcript of m words -> the distinct spans (k, 2), every
    empty one as (0, 0), and each frame's row among them (n,)."""
    spans = np.asarray(spans.cpu() if torch.is_tensor(spans) else spans, dtype=np.int64).reshape(-1, 2)
    if len(spans) and (spans.min() < 0 or spans.max() > m):
        raise JmtError(f"word spans must lie within the transcript's {m} words, "
                       f"got [{spans.min()}, {spans.max()}]")
    spans = np.where((spans[:, 1] > spans[:, 0])[:, None], spans, 0)
    uniq, inverse = np.unique(spans, axis=0, return_inverse=True)    # (k, 2), (n,)
    return uniq, inverse.reshape(-1)


def span_texts(words, uniq: np.ndarray) -> list[str]:
    """Each distinct span's words joined with single spaces ("" for an empty one)."""
    return [" ".join(words.text[a:b]) for a, b in uniq]


class TextLexicon(WordsBackbone):
    """VADER sentiment, NRC emotion fractions, word count and speaking rate per frame's span
    (module docstring); 16 values, no weights."""

    features = FEATURES
    dim = len(FEATURES)
    options = ("window_s",)

    def __init__(self, window_s: float = WordsBackbone.window_s) -> None:
        super().__init__()
        if not window_s > 0:
            raise JmtError(f"text_lexicon: window_s must be > 0, got {window_s}")
        self.window_s = float(window_s)
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError:
            raise _missing("text_lexicon", "vaderSentiment") from None
        self.vader = SentimentIntensityAnalyzer()
        self.lexicon = nrc_lexicon()

    def nrc_counts(self, tokens) -> np.ndarray:
        """(10,) how many of `tokens` the NRC lexicon associates with each category (NRC order)."""
        counts = np.zeros(len(NRC), np.float64)
        for token in tokens:
            for category in self.lexicon.get(token.strip(string.punctuation).lower(), ()):
                counts[NRC.index(category)] += 1
        return counts

    def row(self, tokens: tuple[str, ...]) -> np.ndarray:
        """One span's 16 features (FEATURES order)."""
        scores = self.vader.polarity_scores(" ".join(tokens))
        n = len(tokens)
        nrc = self.nrc_counts(tokens) / n if n else np.zeros(len(NRC))
        return np.array([*(scores[k] for k in VADER), *nrc, n, n / self.window_s], np.float32)

    def forward(self, words, spans) -> np.ndarray:
        uniq, inverse = distinct_spans(spans, len(words))
        rows = np.stack([self.row(words.text[a:b]) for a, b in uniq]) if len(uniq) else \
            np.zeros((0, self.dim), np.float32)                                   # (k, 16)
        return rows[inverse]                                                       # (n, 16)


def nrc_lexicon() -> dict[str, tuple[str, ...]]:
    """word -> its NRC categories, from the JSON file the nrclex wheel ships (no TextBlob/NLTK)."""
    from importlib import resources

    try:
        source = resources.files("nrclex.data").joinpath("nrc_en.json")
        with source.open("r", encoding="utf-8") as f:
            raw = json.load(f)
    except ModuleNotFoundError:
        raise _missing("text_lexicon", "nrclex") from None
    except (OSError, ValueError) as exc:
        raise JmtError(f"text_lexicon: cannot read nrclex's lexicon ({type(exc).__name__}: {exc}); "
                       f"reinstall with pip install {PINS['nrclex']}") from None
    unknown = {c for cats in raw.values() for c in cats} - set(NRC)
    if unknown:
        raise JmtError(f"text_lexicon: nrclex's lexicon has categories {sorted(unknown)} beyond the 10 of "
                       f"NRC EmoLex; pin {PINS['nrclex']}")
    return {w.lower(): tuple(cats) for w, cats in raw.items()}


@BACKBONES.register("text_lexicon")
def text_lexicon(params: BackboneParams, root: Path) -> TextLexicon:
    """VADER sentiment + NRC EmoLex emotion fractions + word count and rate (NRC: research and
    non-commercial use only; no weights)."""
    if params.pretrained or params.checkpoint or params.allow_random:
        raise JmtError("text_lexicon has no weights: leave pretrained/checkpoint/allow_random unset")
    return TextLexicon(params.window_s or WordsBackbone.window_s)


class SentenceEncoder(WordsBackbone):
    """A sentence-transformers model's embedding of each frame's span (module docstring)."""

    options = ("window_s",)

    def __init__(self, model: nn.Module, *, window_s: float = WordsBackbone.window_s,
                 batch_size: int = 64) -> None:
        super().__init__()
        self.model = model                        # a SentenceTransformer (nn.Sequential): in state_dict
        self.window_s = float(window_s)
        self.batch_size = batch_size
        dim = model.get_embedding_dimension()
        self.dim = int(dim if dim is not None else len(self._encode(["a"])[0]))
        # what else the numbers depend on, so that weights_sha256 sees it too
        digest = hashlib.sha256(preprocessing_identity(model).encode()).digest()
        self.register_buffer("preprocessing_sha256", torch.tensor(list(digest), dtype=torch.uint8))

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                show_progress_bar=False)
        return np.asarray(out, np.float32).reshape(len(texts), -1)

    def forward(self, words, spans) -> np.ndarray:
        uniq, inverse = distinct_spans(spans, len(words))
        rows = np.zeros((len(uniq), self.dim), np.float32)                        # (k, D)
        full = np.flatnonzero(uniq[:, 1] > uniq[:, 0])
        if len(full):
            rows[full] = self._encode(span_texts(words, uniq[full]))
        return rows[inverse]                                                       # (n, D)


def preprocessing_identity(model: nn.Module) -> str:
    """The tokenizer (vocabulary, normaliser, special tokens), max length and every module's own
    configuration, as canonical JSON."""
    tok = getattr(model, "tokenizer", None)
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        tokenizer = json.loads(backend.to_str())
        tokenizer.pop("truncation", None)     # the call's state, not the tokenizer's
        tokenizer.pop("padding", None)
    else:
        tokenizer = sorted(tok.get_vocab().items()) if hasattr(tok, "get_vocab") else repr(tok)
    modules = [[type(m).__name__, m.get_config_dict() if hasattr(m, "get_config_dict") else None]
               for m in model]
    return json.dumps({"tokenizer": tokenizer, "max_seq_length": getattr(model, "max_seq_length", None),
                       "modules": modules}, sort_keys=True, default=str)


def _offline() -> bool:
    """The project's offline switch (HF_HUB_OFFLINE, as for the other downloads)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def load_sentence_model(source: str, *, local: bool, what: str) -> nn.Module:
    """A SentenceTransformer on the CPU from a local directory or a hub id (`local`: never the
    network); JmtError naming `what` when it cannot be loaded."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise _missing("sentence", "sentence_transformers") from None
    try:
        return SentenceTransformer(source, device="cpu", local_files_only=local, trust_remote_code=False)
    except Exception as exc:  # offline and not cached, hub unreachable, not a model directory...
        raise JmtError(f"cannot load {what} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
                       f"{'' if Path(source).is_dir() else '; ' + _how_to_get(source)}") from None


def _how_to_get(model_id: str) -> str:
    return (f"on a machine online run SentenceTransformer({model_id!r}).save(DIR), copy DIR here "
            "and set checkpoint: DIR")


@BACKBONES.register("sentence")
def sentence(params: BackboneParams, root: Path, model_id: str = "") -> SentenceEncoder:
    """`sentence` / `sentence:<hub id>`: a sentence-transformers model, from `checkpoint: DIR` or
    `pretrained: true` (SENTENCE_MODEL unless named; the hub cache when offline)."""
    name = f"sentence:{model_id}" if model_id else "sentence"
    if params.allow_random:
        raise JmtError(f"{name} takes no random weights: set checkpoint: DIR or pretrained: true")
    if params.pretrained and params.checkpoint:
        raise JmtError(f"{name}: set pretrained: true or checkpoint: DIR, not both")
    if params.checkpoint:
        if model_id:
            raise JmtError(f"{name}: a hub id goes with pretrained: true; with checkpoint: DIR use `sentence`")
        path = root / params.checkpoint
        if not path.is_dir() or not ((path / "modules.json").is_file() or (path / "config.json").is_file()):
            raise JmtError(f"{path}: not a model directory (sentence-transformers' saved layout with "
                           "modules.json, or a transformers model with config.json)")
        model = load_sentence_model(str(path), local=True, what=f"{name} from {path}")
    elif params.pretrained:
        model_id = model_id or SENTENCE_MODEL
        if _offline():   # only the cache: huggingface_hub reads HF_HUB_OFFLINE once, at its import
            model = load_sentence_model(model_id, local=True,
                                        what=f"{model_id}: offline (HF_HUB_OFFLINE) and not in the hub cache")
        else:
            model = load_sentence_model(model_id, local=False, what=f"pretrained {model_id}")
    else:
        raise JmtError(f"{name} needs a model: pretrained: true (downloads {model_id or SENTENCE_MODEL} "
                       f"when online) or checkpoint: DIR ({_how_to_get(model_id or SENTENCE_MODEL)})")
    return SentenceEncoder(model, window_s=params.window_s or WordsBackbone.window_s)
