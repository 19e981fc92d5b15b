"""Training on a real (tiny) embeddings cache: runs, learns, is deterministic, checkpoints."""

import numpy as np
import pytest
import torch

from pipeline.errors import InputError
from pipeline.stage2.data import WindowDataset, load_split, window_starts
from pipeline.stage2.heads import build_head
from pipeline.stage2.protocol import score
from pipeline.stage2.train import ccc_loss, drop_modalities, head_kwargs, train_model

from ..stage1.helpers import params_at


def stage2_params(tiny_cache, tmp_path, **model):
    params, _ = tiny_cache
    return params_at(tmp_path, params.path(params.corpus.root),
                     embed={"out": str(params.path(params.embed.out))},
                     model={"d_model": 16, **model},
                     train={"epochs": 3, "window": 16, "hop": 8, "batch_size": 4,
                            "out": str(tmp_path / "model.pt"), "live_dir": str(tmp_path / "live")})


def test_window_starts_cover_every_frame():
    assert window_starts(10, 16, 8) == [0]
    assert window_starts(40, 16, 8) == [0, 8, 16, 24]
    assert window_starts(41, 16, 8) == [0, 8, 16, 24, 25]


def test_dataset_windows_and_padding(tiny_cache):
    params, _ = tiny_cache
    entries = load_split(params.path(params.embed.out), "train", preload_max_mb=100)
    ds = WindowDataset(entries, 16, 8)
    item = ds[0]
    assert item["visual"].shape == (16, 135) and item["labels"].shape == (16, 2)
    long = WindowDataset(entries, 100, 50)[0]        # windows longer than the 60-frame videos
    assert not long["label_mask"][60:].any() and not long["visual_mask"][60:].any()
    lazy = load_split(params.path(params.embed.out), "train", preload_max_mb=0)
    assert lazy[0].arrays is None
    torch.testing.assert_close(WindowDataset(lazy, 16, 8)[0]["visual"], item["visual"])


def test_ccc_loss_ignores_invalid_frames():
    y = torch.linspace(-1, 1, 20).reshape(1, 10, 2)
    mask = torch.ones(1, 10, dtype=torch.bool)
    assert float(ccc_loss(y, y, mask)) == pytest.approx(0.0, abs=1e-6)
    garbage = y.clone()
    garbage[0, :3] = 50
    mask[0, :3] = False
    assert float(ccc_loss(garbage, y, mask)) == pytest.approx(0.0, abs=1e-6)
    assert ccc_loss(y, y, torch.zeros(1, 10, dtype=torch.bool)) is None


def test_training_is_deterministic_and_checkpoints_rebuild(tiny_cache, tmp_path):
    params = stage2_params(tiny_cache, tmp_path / "a")
    first = train_model(params, quiet=True)
    again = train_model(stage2_params(tiny_cache, tmp_path / "b"), quiet=True)
    assert [h["train_loss"] for h in first.history] == [h["train_loss"] for h in again.history]
    assert first.best == again.best
    seed1 = stage2_params(tiny_cache, tmp_path / "c")            # another seed, one epoch is enough
    seed1 = seed1.model_copy(update={"train": seed1.train.model_copy(update={"seed": 1, "epochs": 1})})
    other = train_model(seed1, quiet=True)
    assert other.history[0]["train_loss"] != first.history[0]["train_loss"]  # other initialisation, order
    ckpt = torch.load(first.checkpoint, weights_only=True)
    assert ckpt["head"]["name"] == "jmt" and ckpt["cache"]["visual_backbone"] == "fer_xception"
    model = build_head(ckpt["head"]["name"], **ckpt["head"]["kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    assert (tmp_path / "a/live/metrics.json").is_file()


def test_training_reduces_the_loss(tiny_cache, tmp_path):
    params = stage2_params(tiny_cache, tmp_path, dropout=0.0)
    params = params.model_copy(update={"train": params.train.model_copy(update={"epochs": 12, "lr": 3e-3})})
    result = train_model(params, quiet=True)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]


def test_head_kwargs_only_pass_head_specific_options(repo_params):
    assert "aggregation" in head_kwargs(repo_params.model, 3, 4)
    other = repo_params.model.model_copy(update={"fusion": "mt"})
    assert "aggregation" not in head_kwargs(other, 3, 4) and "iterations" not in head_kwargs(other, 3, 4)


def test_scoring_errors_on_a_split_without_labels():
    preds = {"x": np.zeros((5, 2), np.float32)}
    with pytest.raises(InputError, match="validation: no valid labels"):
        score(preds, {"x": (np.full((5, 2), -5, np.float32), np.zeros(5, bool))}, "validation")


def test_missing_split_is_a_clear_error(tiny_cache, tmp_path):
    params, _ = tiny_cache
    with pytest.raises(InputError, match="no entries of split 'dev'"):
        load_split(params.path(params.embed.out), "dev", preload_max_mb=1)
    with pytest.raises(InputError, match="no embedding files; run `jmt embed` first"):
        load_split(tmp_path, "train", preload_max_mb=1)


def test_missing_video_and_nan_embeddings_are_named(tiny_cache, tmp_path):
    import shutil

    import h5py

    params, _ = tiny_cache
    folder = tmp_path / "emb"
    shutil.copytree(params.path(params.embed.out), folder)
    (folder / "demo_00_right.h5").unlink()
    with pytest.raises(InputError, match=r"lacks 1 train entry of the corpus \(demo_00_right\)"):
        load_split(folder, "train", preload_max_mb=100, expected=["demo_00_left", "demo_00_right"])
    with h5py.File(folder / "demo_00_left.h5", "r+") as f:
        f["visual"][17, 0] = np.nan
    with pytest.raises(InputError, match="demo_00_left: NaN/inf in the visual embeddings at frame 17"):
        load_split(folder, "train", preload_max_mb=100)
    lazy = load_split(folder, "train", preload_max_mb=0)
    with pytest.raises(InputError, match="demo_00_left: NaN/inf in the visual embeddings at frame 17"):
        WindowDataset(lazy, 16, 8)[1]


def test_modality_dropout_masks_one_whole_stream_per_chosen_window():
    audio = torch.ones(400, 8, dtype=torch.bool)
    visual = torch.ones(400, 8, dtype=torch.bool)
    visual[:, :2] = False                                       # frames already without a face stay so
    a, v = drop_modalities(audio, visual, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(a, audio) and torch.equal(v, visual)
    a, v = drop_modalities(audio, visual, 1.0, torch.Generator().manual_seed(0))
    lost_audio, lost_visual = ~a.any(1), ~v.any(1)
    assert torch.equal(lost_audio, ~lost_visual)                # exactly one stream per window
    assert 150 < int(lost_audio.sum()) < 250                    # audio or visual, about equally
    assert torch.equal(a[~lost_audio], audio[~lost_audio]) and torch.equal(v[lost_audio], visual[lost_audio])
    a, v = drop_modalities(audio, visual, 0.3, torch.Generator().manual_seed(1))
    dropped = int((~a.any(1) | ~v.any(1)).sum())
    assert 80 < dropped < 160                                   # about 30 % of 400
    again = drop_modalities(audio, visual, 0.3, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], a) and torch.equal(again[1], v)


def test_training_with_modality_dropout_runs_and_changes_training(tiny_cache, tmp_path):
    plain = train_model(stage2_params(tiny_cache, tmp_path / "plain"), quiet=True)
    params = stage2_params(tiny_cache, tmp_path / "md")
    params = params.model_copy(update={"train": params.train.model_copy(update={"modality_dropout": 0.5})})
    dropped = train_model(params, quiet=True)
    assert len(dropped.history) == len(plain.history)
    assert [h["train_loss"] for h in dropped.history] != [h["train_loss"] for h in plain.history]
