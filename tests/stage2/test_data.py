"""Stage-2 data: entries over the embeddings and labels caches, the split rule over tasks, the
lazy window path (pread at the features' offsets, the h5py fallback for chunked caches, masks
and labels from memory), where a window's padding goes, sampled feature statistics, the
DataLoader and streamed prediction."""

import os
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from pipeline import cache
from pipeline.corpus.entries import CorpusEntry
from pipeline.corpus.entries import Label
from pipeline.errors import InputError
from pipeline.stage2 import data
from pipeline.stage2.data import (WindowDataset, check_complete, feature_stats, load_entries, read_window,
                                  split_entries, stream_widths, window_loader)
from pipeline.stage2.heads import build_head
from pipeline.stage2.protocol import availability_of, labels_of
from pipeline.stage2.windows import predict_entry, window_starts

from ..embeddings import STREAMS, write_entry

pytestmark = pytest.mark.usefixtures("one_thread")

LENGTHS = {"a": 300, "b": 41, "c": 10}   # longer than, about, and shorter than a window of 16
FEATURES, MASK = cache.stream_key("visual", "features"), cache.stream_key("visual", "mask")


@pytest.fixture
def root(tmp_path):
    """Both caches: three training entries of va, one validation entry."""
    for i, (name, n) in enumerate(LENGTHS.items()):
        write_entry(tmp_path, name, seed=i, n=n)
    write_entry(tmp_path, "v", seed=9, n=120, split="validation")
    return tmp_path


def train_entries(root, preload_max_mb, embeddings=None):
    entries = load_entries(embeddings or root / "embeddings", root / "labels", ["va"], preload_max_mb=preload_max_mb)
    return split_entries(entries, ["va"]).train


def _batches(entries, window=16, hop=8):
    ds = WindowDataset(entries, window, hop)
    return [ds[k] for k in range(len(ds))]


def test_entries_know_their_streams_tasks_and_splits(root):
    entries = load_entries(root / "embeddings", root / "labels", ["va", "expr"])
    assert [e.name for e in entries] == ["a", "b", "c", "v"]
    a = entries[0]
    assert a.streams == list(STREAMS) and a.tasks == ["va", "expr"] and a.splits == {"va": "train"}
    assert a.widths == STREAMS and stream_widths(entries) == STREAMS
    x = a.read(0, a.n)
    assert set(x) == {"streams/visual/features", "streams/audio/features", "streams/visual/mask",
                      "streams/audio/mask", "labels/va", "labels/expr", "valid/va", "valid/expr"}
    assert not x["valid/expr"].any() and (x["labels/expr"] == -1).all()   # a task the entry lacks: no valid frame
    assert not x["valid/va"][:5].any() and x["valid/va"][5:].all()       # write_labels: 5 invalid frames first
    assert load_entries(root / "embeddings", None, ["va"])[0].splits == {}   # jmt predict: no labels


def test_lazy_reads_give_the_preloaded_windows(root, tmp_path_factory):
    preloaded, lazy = train_entries(root, 100), train_entries(root, 0)
    assert all(e.arrays is not None for e in preloaded) and all(e.arrays is None for e in lazy)
    assert all(e.spans[FEATURES] is not None for e in lazy)        # contiguous: read by pread
    old = tmp_path_factory.mktemp("old")                            # the layout before cache.FEATURES
    for i, (name, n) in enumerate(LENGTHS.items()):
        write_entry(old, name, seed=i, n=n, features={"chunks": (min(n, 1024), 1), "compression": "gzip"})
    chunked = train_entries(old, 0)
    assert all(e.spans[FEATURES] is None for e in chunked)         # read through h5py
    for other in (lazy, chunked):
        for x, y in zip(_batches(preloaded), _batches(other), strict=True):
            assert x.keys() == y.keys() == {"streams", "masks", "labels", "valid"}
            for part in x:
                assert x[part].keys() == y[part].keys()
                for k in x[part]:
                    assert x[part][k].dtype == y[part][k].dtype and torch.equal(x[part][k], y[part][k]), (part, k)
    assert _batches(lazy)[0]["streams"]["visual"].dtype == torch.float32


def test_masks_and_labels_need_no_feature_read(root, monkeypatch):
    lazy = train_entries(root, 0)

    def no_reads(*args):
        raise AssertionError("a feature was read")

    monkeypatch.setattr(data, "_pread_rows", no_reads)
    monkeypatch.setattr(data, "_handle", no_reads)
    labels, avail = labels_of(lazy, "va"), availability_of(lazy)
    with h5py.File(root / "labels/a.h5") as f:
        assert np.array_equal(labels["a"][0], f["labels/va"][...])
    with h5py.File(root / "embeddings/a.h5") as f:
        assert np.array_equal(avail["no_visual"]["a"], ~f[MASK][...])
        both = f[MASK][...] & f[cache.stream_key("audio", "mask")][...]
        assert np.array_equal(avail["all_streams"]["a"], both)


def test_a_file_replaced_after_loading_is_refused(root):
    lazy = train_entries(root, 0)
    write_entry(root, "a", seed=5, n=300)                           # embed ran again meanwhile
    with pytest.raises(InputError, match="a.h5: the file changed since the cache was loaded"):
        lazy[0].read(0, 16)


def test_feature_stats_exact_when_small_sampled_when_large(root, monkeypatch):
    entries = train_entries(root, 0)
    fk, mk = cache.stream_key("audio", "features"), cache.stream_key("audio", "mask")
    frames = np.concatenate([e.read(0, e.n)[fk][e.read(0, e.n)[mk]] for e in entries]).astype(np.float64)
    mean, std = feature_stats(entries, "audio")
    np.testing.assert_allclose(mean, frames.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, frames.std(0), rtol=1e-5)
    read = []
    real = data.CachedEntry.read
    monkeypatch.setattr(data.CachedEntry, "read", lambda self, a, b, f=None: read.append(min(b, self.n) - a)
                        or real(self, a, b, f))
    m, s = feature_stats(entries, "audio", max_frames=64)           # blocks of 256: one per entry here
    assert sum(read) <= 256 + LENGTHS["b"] + LENGTHS["c"] < sum(LENGTHS.values())
    assert np.abs(m - mean).max() < 0.3 and np.abs(s - std).max() < 0.3   # unit-variance features


def test_loader_order_depends_only_on_the_generator(root):
    ds = WindowDataset(train_entries(root, 0), 16, 8)
    cpu = torch.device("cpu")
    runs = [[b["labels"]["va"] for b in window_loader(ds, batch_size=4, generator=torch.Generator().manual_seed(3),
                                                      device=cpu, workers=w)] for w in (0, 1)]
    assert len(runs[0]) == len(ds) // 4
    assert all(torch.equal(x, y) for x, y in zip(*runs, strict=True))
    other = [b["labels"]["va"] for b in window_loader(ds, batch_size=4, generator=torch.Generator().manual_seed(4),
                                                      device=cpu, workers=0)]
    assert not all(torch.equal(x, y) for x, y in zip(runs[0], other, strict=True))


def test_loader_workers_follow_the_cores(root, monkeypatch):
    lazy, preloaded = train_entries(root, 0), train_entries(root, 100)
    for cores, want in ((2, 0), (4, 2), (16, 8), (64, 8)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, c=cores: set(range(c)))
        assert data.loader_workers(lazy) == want
        assert data.loader_workers(preloaded) == 0


def test_prediction_streams_batches_of_windows(root, monkeypatch):
    torch.manual_seed(0)
    model = build_head("jmt", streams=STREAMS, tasks=["va", "au"], d_model=8).eval()
    entry = train_entries(root, 0)[0]                                # "a", 300 frames
    assert entry.name == "a"
    one = predict_entry(model, entry, 16, 8, torch.device("cpu"), batch=1)
    spans = []
    real = data.CachedEntry.read
    monkeypatch.setattr(data.CachedEntry, "read", lambda self, a, b, f=None: spans.append(b - a) or real(self, a, b, f))
    batched = predict_entry(model, entry, 16, 8, torch.device("cpu"), batch=5)
    assert list(batched) == ["va", "au"]
    for t in batched:
        np.testing.assert_allclose(batched[t], one[t], atol=1e-5)
    assert max(spans) == 16 and len(spans) == len(window_starts(300, 16, 8))   # window by window, never the whole entry
    short = train_entries(root, 0)[2]                                 # "c": 10 frames, one padded window
    out = predict_entry(model, short, 16, 8, torch.device("cpu"))
    assert out["va"].shape == (10, 2) and out["au"].shape == (10, 12)


# ---- where the padding goes, which frames a prediction averages ---------------------------

class Positions(torch.nn.Module):
    """A stand-in head: each frame's output is its position in the window, and the visual
    stream's first feature where visual is present (NaN where absent, so a prediction that
    averaged a padded or masked frame would show it). Records the masks it is given."""

    tasks = ["va"]

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, streams, masks):
        self.seen.append({s: m.clone() for s, m in masks.items()})
        x = streams["visual"]
        b, t, _ = x.shape
        position = torch.arange(t, dtype=torch.float32).expand(b, t)
        feature = torch.where(masks["visual"], x[..., 0], torch.nan)
        return {"va": torch.stack([position, feature], -1)}           # (B, T, 2)


def test_a_short_video_is_padded_at_the_end(root):
    short = train_entries(root, 100)[2]                              # "c": 10 frames
    assert short.n == 10
    w = read_window(short, 0, 16)
    full = short.read(0, 10)
    for s in STREAMS:
        np.testing.assert_array_equal(w["streams"][s][:10].numpy(),
                                      full[cache.stream_key(s, "features")].astype(np.float32))
        assert torch.equal(w["masks"][s][:10], torch.as_tensor(full[cache.stream_key(s, "mask")]))
        assert not w["masks"][s][10:].any() and not w["streams"][s][10:].any()
    assert torch.equal(w["valid"]["va"][:10], torch.as_tensor(full["valid/va"])) and w["valid"]["va"][5:10].all()
    assert not w["valid"]["va"][10:].any()
    model = Positions()
    out = predict_entry(model, short, 16, 8, torch.device("cpu"))["va"]
    np.testing.assert_array_equal(out[:, 0], np.arange(10))           # frame f sat at position f: padding after it
    assert not model.seen[0]["visual"][0, 10:].any() and not model.seen[0]["audio"][0, 10:].any()


def test_the_last_window_ends_at_the_last_frame_and_every_frame_is_averaged(root):
    entry = train_entries(root, 100)[1]                              # "b": 41 frames
    assert entry.n == 41
    model = Positions()
    out = predict_entry(model, entry, 16, 8, torch.device("cpu"), batch=2)["va"]
    starts = [0, 8, 16, 24, 25]                                      # hop 8, then one window ending at frame 40
    want = [np.mean([f - s for s in starts if s <= f < s + 16]) for f in range(41)]
    np.testing.assert_allclose(out[:, 0], want, rtol=0, atol=1e-6)
    assert out[40, 0] == 15                                          # frame 40: the last position of the last window
    assert sum(len(m["visual"]) for m in model.seen) == len(starts)
    x = entry.read(0, 41)
    present = x[MASK]
    np.testing.assert_allclose(out[present, 1], x[FEATURES][present, 0].astype(np.float32), rtol=1e-6)
    assert np.isnan(out[~present, 1]).all() and (~present).any()


# ---- the split rule ------------------------------------------------------------------------

SPLITS = {"both_train": {"va": "train", "expr": "train"},
          "va_train_expr_val": {"va": "train", "expr": "validation"},
          "va_train_expr_test": {"va": "train", "expr": "test"},
          "expr_only": {"expr": "train"},
          "va_val": {"va": "validation"},
          "expr_val": {"expr": "validation", "va": "test"},
          "au_only": {"au": "train"}}


@pytest.fixture
def multi(tmp_path):
    for i, (name, splits) in enumerate(SPLITS.items()):
        write_entry(tmp_path, name, seed=i, n=20, splits=splits)
    return tmp_path


def names(entries):
    return [e.name for e in entries]


def test_an_entry_a_scored_task_evaluates_is_never_trained_on(multi):
    both = split_entries(load_entries(multi / "embeddings", multi / "labels", ["va", "expr"]), ["va", "expr"])
    assert names(both.train) == ["both_train", "expr_only"]
    assert both.left_out == [
        {"entry": "va_train_expr_test", "why": "train for va but test for expr: never trained on an entry a "
                                              "scored task evaluates"},
        {"entry": "va_train_expr_val", "why": "train for va but validation for expr: never trained on an entry "
                                             "a scored task evaluates"}]
    va = split_entries(load_entries(multi / "embeddings", multi / "labels", ["va"]), ["va"])
    assert names(va.train) == ["both_train", "va_train_expr_test", "va_train_expr_val"] and va.left_out == []
    assert names(va.validation["va"]) == ["va_val"] and names(va.test["va"]) == ["expr_val"]
    au = split_entries(load_entries(multi / "embeddings", multi / "labels", ["au"]), ["au"])
    assert names(au.train) == ["au_only"] and au.validation == {"au": []}


def test_each_task_is_validated_and_tested_on_its_own_split(multi):
    splits = split_entries(load_entries(multi / "embeddings", multi / "labels", ["va", "expr"]), ["va", "expr"])
    assert {t: names(e) for t, e in splits.validation.items()} == {"va": ["va_val"],
                                                                   "expr": ["expr_val", "va_train_expr_val"]}
    assert {t: names(e) for t, e in splits.test.items()} == {"va": ["expr_val"], "expr": ["va_train_expr_test"]}
    assert names(splits.union("validation")) == ["expr_val", "va_train_expr_val", "va_val"]
    assert {t: names(e) for t, e in splits.of("train").items()} == {"va": ["both_train", "expr_only"],
                                                                     "expr": ["both_train", "expr_only"]}
    assert splits.of("test") is splits.test


def test_check_complete_names_the_missing_entries(multi):
    entries = load_entries(multi / "embeddings", multi / "labels", ["va", "expr"])

    def corpus(*more):
        listed = {**SPLITS, **{m: {"va": "train"} for m in more}, "au_missing": {"au": "train"}}
        return SimpleNamespace(entries=[CorpusEntry(n, multi / f"{n}.mp4", labels={t: Label(s, None) for t, s in
                                                                                 sp.items()})
                                        for n, sp in listed.items()])

    check_complete(entries, corpus(), ["va", "expr"])                # au_missing: not a task of the run
    check_complete(entries, None, ["va", "expr"])                    # no corpus at hand: nothing to check
    with pytest.raises(InputError, match=r"the caches lack 1 entry of the corpus \(gone\)"):
        check_complete(entries, corpus("gone"), ["va", "expr"])
    with pytest.raises(InputError, match=r"lack 2 entries of the corpus \(gone, lost\)"):
        check_complete(entries, corpus("lost", "gone"), ["va"])
    with pytest.raises(InputError, match=r"lack 1 entry of the corpus \(au_missing\)"):
        check_complete(entries, corpus(), ["au"])
