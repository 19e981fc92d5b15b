"""The text backbones (`words` input): `text_lexicon` (VADER + NRC EmoLex + word count and rate)
and `sentence` (a sentence-transformers model).

Expected lexicon values are worked by hand from the NRC entries of the words (asserted below, so
a changed lexicon shows here first) and from VADER's own `polarity_scores`. The sentence model is
a tiny random BERT with a 20-word WordPiece vocabulary, written to tmp_path: nothing is downloaded.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import BackboneParams
from pipeline.errors import JmtError
from pipeline.stage1.backbones import build_backbone, input_of, weights_sha256
from pipeline.stage1.backbones.text import FEATURES, NRC, SENTENCE_MODEL, TextLexicon, nrc_lexicon
from pipeline.stage1.transcripts import Words

REPO = Path(__file__).resolve().parents[2]
LOVE = ("I", "love", "this", "wonderful", "day")
HATE = ("I", "hate", "this", "terrible", "awful", "day")


def words(*text: str) -> Words:
    start = 0.5 * np.arange(len(text), dtype=np.float64)
    return Words(text=tuple(text), start=start, end=start + 0.4,
                 confidence=np.ones(len(text), np.float32))


def col(name: str) -> int:
    return FEATURES.index(name)


@pytest.fixture(scope="module")
def lexicon() -> TextLexicon:
    return build_backbone(BackboneParams(name="text_lexicon"), Path("."))


def test_features_name_every_column(lexicon):
    assert lexicon.features == [
        "vader_compound", "vader_pos", "vader_neg", "vader_neu",
        "nrc_anger", "nrc_anticipation", "nrc_disgust", "nrc_fear", "nrc_joy", "nrc_negative",
        "nrc_positive", "nrc_sadness", "nrc_surprise", "nrc_trust", "word_count", "speaking_rate"]
    assert lexicon.dim == len(lexicon.features) == 16
    assert input_of(lexicon) == "words" and lexicon.window_s == 4.0
    assert not lexicon.training and list(lexicon.parameters()) == []


def test_the_nrc_entries_the_expected_values_use():
    lex = nrc_lexicon()
    assert lex["love"] == ("joy", "positive")
    assert lex["wonderful"] == ("joy", "positive", "surprise", "trust")
    for w in ("hate", "terrible", "awful"):
        assert lex[w] == ("anger", "disgust", "fear", "negative", "sadness")
    assert all(w not in lex for w in ("i", "this", "day"))
    assert len(lex) == 6468 and {c for cats in lex.values() for c in cats} == set(NRC)


def test_a_positive_sentence(lexicon):
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    out = lexicon(words(*LOVE), np.array([[0, 5]]))
    assert out.shape == (1, 16) and out.dtype == np.float32
    ref = SentimentIntensityAnalyzer().polarity_scores("I love this wonderful day")
    for k in ("compound", "pos", "neg", "neu"):
        assert out[0, col(f"vader_{k}")] == pytest.approx(ref[k], abs=1e-6)
    assert out[0, col("vader_compound")] > 0.5
    # love: joy, positive; wonderful: joy, positive, surprise, trust; I, this, day: none
    want = {"joy": 2 / 5, "positive": 2 / 5, "surprise": 1 / 5, "trust": 1 / 5}
    for c in NRC:
        assert out[0, col(f"nrc_{c}")] == pytest.approx(want.get(c, 0.0), abs=1e-7), c
    assert out[0, col("word_count")] == 5
    assert out[0, col("speaking_rate")] == pytest.approx(5 / 4.0)


def test_a_negative_sentence(lexicon):
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    out = lexicon(words(*HATE), np.array([[0, 6]]))
    ref = SentimentIntensityAnalyzer().polarity_scores(" ".join(HATE))
    assert out[0, col("vader_compound")] == pytest.approx(ref["compound"], abs=1e-6)
    assert out[0, col("vader_compound")] < -0.5
    # hate, terrible, awful: anger, disgust, fear, negative, sadness each; 3 of 6 words
    for c in NRC:
        want = 3 / 6 if c in ("anger", "disgust", "fear", "negative", "sadness") else 0.0
        assert out[0, col(f"nrc_{c}")] == pytest.approx(want, abs=1e-7), c
    assert out[0, col("word_count")] == 6 and out[0, col("speaking_rate")] == pytest.approx(1.5)


def test_a_sub_span_case_and_punctuation(lexicon):
    w = words("Oh,", "LOVE!", "this", "day")
    out = lexicon(w, np.array([[1, 3]]))                              # "LOVE! this"
    assert out[0, col("nrc_joy")] == pytest.approx(1 / 2)               # LOVE! -> love
    assert out[0, col("nrc_positive")] == pytest.approx(1 / 2)
    assert out[0, col("word_count")] == 2 and out[0, col("speaking_rate")] == pytest.approx(0.5)


def test_empty_spans_give_the_documented_neutral_row(lexicon):
    w = words(*LOVE)
    out = lexicon(w, np.array([[0, 0], [3, 3], [5, 5], [0, 5]]))
    assert np.array_equal(out[:3], np.zeros((3, 16), np.float32))      # VADER of "" is all 0.0
    assert out[3, col("word_count")] == 5
    empty = lexicon(words(), np.zeros((2, 2), np.int64))               # no transcript at all
    assert empty.shape == (2, 16) and not empty.any()
    assert lexicon(w, np.zeros((0, 2), np.int64)).shape == (0, 16)


def test_frames_sharing_a_span_get_one_computation_and_identical_rows(lexicon, monkeypatch):
    calls = []
    real = lexicon.vader.polarity_scores
    monkeypatch.setattr(lexicon.vader, "polarity_scores", lambda text: calls.append(text) or real(text))
    w = words(*LOVE, *HATE)
    spans = np.array([[0, 5]] * 4 + [[5, 11]] * 3 + [[0, 0], [2, 2]] + [[0, 5]] * 2)
    out = lexicon(w, spans)
    assert sorted(calls) == sorted(["", " ".join(LOVE), " ".join(HATE)])   # each distinct span once
    assert all(np.array_equal(out[i], out[0]) for i in (1, 2, 3, 9, 10))
    assert np.array_equal(out[5], out[4]) and np.array_equal(out[6], out[4])
    assert not np.array_equal(out[0], out[4])
    assert np.array_equal(out, np.stack([lexicon(w, s[None])[0] for s in spans]))


def test_the_window_sets_the_rate():
    two = TextLexicon(window_s=2.0)
    out = two(words(*LOVE), np.array([[0, 5]]))
    assert two.window_s == 2.0 and out[0, col("speaking_rate")] == pytest.approx(2.5)
    with pytest.raises(JmtError, match="window_s must be > 0"):
        TextLexicon(window_s=0)


def test_spans_outside_the_transcript_are_refused(lexicon):
    with pytest.raises(JmtError, match="within the transcript's 5 words"):
        lexicon(words(*LOVE), np.array([[0, 6]]))


def test_text_lexicon_has_no_weights():
    for opt in ({"pretrained": True}, {"checkpoint": "x.pt"}, {"allow_random": True}):
        with pytest.raises(JmtError, match="text_lexicon has no weights"):
            build_backbone(BackboneParams(name="text_lexicon", **opt), Path("."))
    with pytest.raises(JmtError, match="does not take `clip`"):
        build_backbone(BackboneParams(name="text_lexicon", clip=2), Path("."))


def test_missing_packages_name_the_pip_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "vaderSentiment", None)
    monkeypatch.setitem(sys.modules, "vaderSentiment.vaderSentiment", None)
    with pytest.raises(JmtError, match=r"pip install vaderSentiment==3\.3\.2"):
        TextLexicon()
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "nrclex", None)
    monkeypatch.setitem(sys.modules, "nrclex.data", None)
    with pytest.raises(JmtError, match=r"pip install nrclex==4\.1\.0"):
        nrc_lexicon()
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(JmtError, match=r"pip install sentence-transformers==6\.2\.0"):
        build_backbone(BackboneParams(name="sentence", pretrained=True), Path("."))


def test_importing_the_backbones_needs_no_text_package():
    code = ("import sys, pipeline.stage1.backbones as b; assert 'text_lexicon' in b.BACKBONES.names(); "
            "print(sorted(m for m in ('vaderSentiment', 'nrclex', 'textblob', 'nltk', "
            "'sentence_transformers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- sentence ---------------------------------------------------------------------------------

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "i", "love", "this", "wonderful", "day",
         "hate", "terrible", "awful", "oh", "good", "bad", "##s", "##ly", "the", "a"]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """A random 1-layer, 16-d BERT saved as a plain transformers directory and, the same weights,
    in sentence-transformers' layout (Transformer + mean Pooling)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("sentence")
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    plain = root / "plain"
    BertModel(config).save_pretrained(plain)
    BertTokenizerFast(vocab_file=str(root / "vocab.txt"), do_lower_case=True).save_pretrained(plain)
    local = {f"{k}_kwargs": {"local_files_only": True} for k in ("model", "processor", "config")}
    tr = Transformer(str(plain), **local)
    SentenceTransformer(modules=[tr, Pooling(tr.get_embedding_dimension(), "mean")], device="cpu").save(
        str(root / "st"))
    return {"plain": plain, "st": root / "st"}


@pytest.fixture
def no_network(monkeypatch) -> list:
    """Every attempt to open a connection is recorded and refused."""
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def mean_pooled(model_dir: Path, texts: list[str]) -> np.ndarray:
    """The reference: the BERT's last hidden states averaged over each text's tokens."""
    from transformers import AutoTokenizer, BertModel

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    bert = BertModel.from_pretrained(model_dir, local_files_only=True).eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = bert(**enc).last_hidden_state                                   # (B, L, 16)
    mask = enc["attention_mask"][..., None].float()                              # (B, L, 1)
    return ((hidden * mask).sum(1) / mask.sum(1)).numpy()


@pytest.mark.parametrize("layout", ["st", "plain"])
def test_sentence_from_a_local_directory(tiny_models, layout, no_network):
    from sentence_transformers import SentenceTransformer

    net = build_backbone(BackboneParams(name="sentence", checkpoint=str(tiny_models[layout])), Path("/"))
    assert input_of(net) == "words" and net.dim == 16 and net.window_s == 4.0
    w = words("Oh", "I", "love", "this", "wonderful", "day", "hate", "it")
    spans = np.array([[0, 0], [0, 3], [0, 3], [1, 6], [6, 6], [6, 8], [1, 6], [8, 8]])
    out = net(w, spans)
    assert out.shape == (8, 16) and out.dtype == np.float32 and np.isfinite(out).all()
    texts = ["Oh I love", "I love this wonderful day", "hate it"]
    ref = mean_pooled(tiny_models["plain"], texts)
    own = SentenceTransformer(str(tiny_models[layout]), device="cpu", local_files_only=True).encode(texts)
    assert np.abs(own - ref).max() < 1e-5
    for rows, i in (([1, 2], 0), ([3, 6], 1), ([5], 2)):
        assert np.abs(out[rows] - own[i]).max() < 1e-5
        assert np.abs(out[rows] - ref[i]).max() < 1e-5
    assert not out[[0, 4, 7]].any()                                              # empty spans: zeros
    assert np.abs(out[1]).sum() > 0
    assert no_network == []


def test_sentence_encodes_each_distinct_span_once_in_one_batch(tiny_models, monkeypatch):
    net = build_backbone(BackboneParams(name="sentence", checkpoint=str(tiny_models["st"])), Path("/"))
    calls = []
    real = net.model.encode
    monkeypatch.setattr(net.model, "encode", lambda texts, **kw: calls.append(list(texts)) or real(texts, **kw))
    w = words(*LOVE, *HATE)
    out = net(w, np.array([[0, 5]] * 5 + [[5, 11]] * 5 + [[0, 0]] * 2))
    assert len(calls) == 1 and sorted(calls[0]) == sorted([" ".join(LOVE), " ".join(HATE)])
    assert np.array_equal(out[:5], np.repeat(out[:1], 5, 0)) and not out[10:].any()
    net(w, np.zeros((3, 2), np.int64))                                          # all empty: no call
    assert len(calls) == 1


def test_sentence_weights_hash_covers_the_model(tiny_models):
    a = build_backbone(BackboneParams(name="sentence", checkpoint=str(tiny_models["st"])), Path("/"))
    b = build_backbone(BackboneParams(name="sentence", checkpoint=str(tiny_models["plain"])), Path("/"))
    state = a.state_dict()
    assert sum(k.endswith("word_embeddings.weight") for k in state) == 1 and "preprocessing_sha256" in state
    assert sum(p.numel() for p in a.parameters()) > 1000
    assert weights_sha256(a) == weights_sha256(b)                   # same weights, tokenizer, pooling
    with torch.no_grad():
        next(a.parameters())[0, 0] += 1.0
    assert weights_sha256(a) != weights_sha256(b)


def test_sentence_needs_a_model():
    with pytest.raises(JmtError, match=f"sentence needs a model: pretrained: true .*{SENTENCE_MODEL}.*checkpoint: DIR"):
        build_backbone(BackboneParams(name="sentence"), Path("."))
    with pytest.raises(JmtError, match="sentence takes no random weights"):
        build_backbone(BackboneParams(name="sentence", allow_random=True), Path("."))
    with pytest.raises(JmtError, match="not both"):
        build_backbone(BackboneParams(name="sentence", pretrained=True, checkpoint="m"), Path("."))


def test_sentence_checkpoint_must_be_a_model_directory(tmp_path, no_network):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.pt").write_bytes(b"")
    for ckpt in ("missing", "empty", "file.pt"):
        with pytest.raises(JmtError, match="not a model directory"):
            build_backbone(BackboneParams(name="sentence", checkpoint=ckpt), tmp_path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    with pytest.raises(JmtError, match=r"cannot load sentence from .*broken"):
        build_backbone(BackboneParams(name="sentence", checkpoint="broken"), tmp_path)
    assert no_network == []


def test_sentence_pretrained_offline_fails_fast_without_network(monkeypatch, no_network):
    from huggingface_hub import try_to_load_from_cache

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(JmtError, match=r"offline \(HF_HUB_OFFLINE\) and not in the hub cache.*checkpoint: DIR"):
        build_backbone(BackboneParams(name="sentence:jmt-tests/no-such-model", pretrained=True), Path("."))
    if not isinstance(try_to_load_from_cache(SENTENCE_MODEL, "modules.json"), str):  # not cached here
        with pytest.raises(JmtError, match=f"{SENTENCE_MODEL}: offline"):
            build_backbone(BackboneParams(name="sentence", pretrained=True), Path("."))
    assert no_network == []
