"""The lazy window path: pread at the features' offsets, the h5py fallback for chunked caches,
masks and labels from memory, sampled feature statistics, the DataLoader, streamed prediction."""

import os

import h5py
import numpy as np
import pytest
import torch

from pipeline import cache
from pipeline.errors import InputError
from pipeline.stage2 import data
from pipeline.stage2.data import (WindowDataset, feature_stats, load_split, predict_entry, window_loader,
                                  window_starts)
from pipeline.stage2.heads import build_head
from pipeline.stage2.protocol import availability_of, labels_of

from ..embeddings import write_embeddings

LENGTHS = {"a": 300, "b": 41, "c": 10}   # longer than, about, and shorter than a window of 16


@pytest.fixture
def folder(tmp_path):
    for i, (name, n) in enumerate(LENGTHS.items()):
        write_embeddings(tmp_path, name, seed=i, n=n)
    write_embeddings(tmp_path, "v", seed=9, n=120, split="validation")
    return tmp_path


def _batches(entries, window=16, hop=8):
    ds = WindowDataset(entries, window, hop)
    return [ds[k] for k in range(len(ds))]


def test_lazy_reads_give_the_preloaded_windows(folder, tmp_path_factory):
    preloaded, lazy = (load_split(folder, "train", preload_max_mb=m) for m in (100, 0))
    assert all(e.arrays is not None for e in preloaded) and all(e.arrays is None for e in lazy)
    assert all(e.spans["visual"] is not None for e in lazy)        # contiguous: read by pread
    old = tmp_path_factory.mktemp("old")                             # the layout before cache.FEATURES
    for i, (name, n) in enumerate(LENGTHS.items()):
        write_embeddings(old, name, seed=i, n=n, features={"chunks": (min(n, 1024), 1), "compression": "gzip"})
    chunked = load_split(old, "train", preload_max_mb=0)
    assert all(e.spans["visual"] is None for e in chunked)          # read through h5py
    for other in (lazy, chunked):
        for x, y in zip(_batches(preloaded), _batches(other), strict=True):
            assert x.keys() == y.keys()
            for k in x:
                assert x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]), k
    assert _batches(lazy)[0]["visual"].dtype == torch.float32


def test_masks_and_labels_need_no_feature_read(folder, monkeypatch):
    lazy = load_split(folder, "train", preload_max_mb=0)

    def no_reads(*args):
        raise AssertionError("a feature was read")

    monkeypatch.setattr(data, "_pread_rows", no_reads)
    labels, avail = labels_of(lazy), availability_of(lazy)
    with h5py.File(folder / "a.h5") as f:
        assert np.array_equal(labels["a"][0], f["labels"][...])
        assert np.array_equal(avail["no_face"]["a"], ~f["visual_mask"][...])


def test_a_file_replaced_after_loading_is_refused(folder):
    lazy = load_split(folder, "train", preload_max_mb=0)
    write_embeddings(folder, "a", seed=5, n=300)                    # embed ran again meanwhile
    with pytest.raises(InputError, match="a.h5: the file changed since the cache was loaded"):
        lazy[0].read(0, 16)


def test_feature_stats_exact_when_small_sampled_when_large(folder, monkeypatch):
    entries = load_split(folder, "train", preload_max_mb=0)
    frames = np.concatenate([e.read(0, e.n)["audio"][e.read(0, e.n)["audio_mask"]] for e in entries]).astype(np.float64)
    mean, std = feature_stats(entries, "audio")
    np.testing.assert_allclose(mean, frames.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, frames.std(0), rtol=1e-5)
    read = []
    real = data.Entry.read
    monkeypatch.setattr(data.Entry, "read", lambda self, a, b, f=data.FIELDS: read.append(min(b, self.n) - a)
                        or real(self, a, b, f))
    m, s = feature_stats(entries, "audio", max_frames=64)           # blocks of 256: one per entry here
    assert sum(read) <= 256 + LENGTHS["b"] + LENGTHS["c"] < sum(LENGTHS.values())
    assert np.abs(m - mean).max() < 0.3 and np.abs(s - std).max() < 0.3   # unit-variance features


def test_loader_order_depends_only_on_the_generator(folder):
    entries = load_split(folder, "train", preload_max_mb=0)
    ds = WindowDataset(entries, 16, 8)
    cpu = torch.device("cpu")
    runs = [[b["labels"] for b in window_loader(ds, batch_size=4, generator=torch.Generator().manual_seed(3),
                                                device=cpu, workers=w)] for w in (0, 1)]
    assert len(runs[0]) == len(ds) // 4
    assert all(torch.equal(x, y) for x, y in zip(*runs, strict=True))


def test_loader_workers_follow_the_cores(folder, monkeypatch):
    lazy = load_split(folder, "train", preload_max_mb=0)
    preloaded = load_split(folder, "train", preload_max_mb=100)
    for cores, want in ((2, 0), (4, 2), (16, 8), (64, 8)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, c=cores: set(range(c)))
        assert data.loader_workers(lazy) == want
        assert data.loader_workers(preloaded) == 0


def test_prediction_streams_batches_of_windows(folder, monkeypatch):
    torch.manual_seed(0)
    model = build_head("jmt", audio_dim=4, visual_dim=6, d_model=8).eval()
    entry = load_split(folder, "train", preload_max_mb=0)[0]           # "a", 300 frames
    one = predict_entry(model, entry, 16, 8, torch.device("cpu"), batch=1)
    spans = []
    real = data.Entry.read
    monkeypatch.setattr(data.Entry, "read", lambda self, a, b, f=data.FIELDS: spans.append(b - a) or real(self, a, b, f))
    batched = predict_entry(model, entry, 16, 8, torch.device("cpu"), batch=5)
    np.testing.assert_allclose(batched, one, atol=1e-5)
    assert max(spans) == 16 and len(spans) == len(window_starts(300, 16, 8))   # window by window, never the whole entry
    short = load_split(folder, "train", preload_max_mb=0)[2]           # "c": 10 frames, one padded window
    assert predict_entry(model, short, 16, 8, torch.device("cpu")).shape == (10, 2)
