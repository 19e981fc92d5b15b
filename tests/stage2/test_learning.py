"""Heads learn: on a small synthetic embeddings cache where valence is a known function of the
visual embeddings and arousal of the audio ones, a short real training run (`train_model`)
reaches a clear validation CCC on each axis a head can see, and stays near 0 on an axis whose
only source it never reads. The CCC is recomputed in numpy from the trained model's predictions.

A head that outputs constants, ignores a stream or swaps them fails here.
"""

import numpy as np
import pytest
import torch

from pipeline import cache
from pipeline.stage2.data import load_split
from pipeline.stage2.checkpoints import load as load_checkpoint
from pipeline.stage2.protocol import labels_of, predict_split
from pipeline.stage2.train import train_model

from ..reference import split_ccc_np
from ..stage1.helpers import params_at

DA, DV, N = 8, 6, 64  # audio / visual widths, frames per entry


def write_synthetic_cache(folder, seed=0, *, train=4, validation=4):
    """embed-stage files: random embeddings; valence = the first visual feature after L2
    normalisation (what every head sees), arousal = the same for audio. A few frames are
    unlabelled (-5) and a few have no face: the head's 'missing' vector takes their place.
    Frames are independent, so an axis a head cannot see scores about 0 (4 x 61 frames)."""
    rng = np.random.default_rng(seed)
    names = [("train", i) for i in range(train)] + [("validation", i) for i in range(validation)]
    for split, i in names:
        audio, visual = rng.normal(size=(N, DA)), rng.normal(size=(N, DV))
        labels = np.stack([visual[:, 0] / np.linalg.norm(visual, axis=1),
                           audio[:, 0] / np.linalg.norm(audio, axis=1)], 1).astype(np.float32)
        label_mask = np.ones(N, bool)
        label_mask[5:8] = False
        labels[~label_mask] = -5
        visual_mask = np.ones(N, bool)
        visual_mask[40:42] = False
        with cache.write_entry(folder, f"{split}_{i}", stage="embed", config={"synthetic": seed},
                               attrs={"split": split, "n_frames": N, "fps": 10.0,
                                      "visual_backbone": "synthetic", "audio_backbone": "synthetic",
                                      "visual_dim": DV, "audio_dim": DA}) as f:
            f["audio"], f["visual"] = audio.astype(np.float16), visual.astype(np.float16)
            f["audio_mask"], f["visual_mask"] = np.ones(N, bool), visual_mask
            f["labels"], f["label_mask"] = labels, label_mask
            f["timestamps"] = np.arange(N) / 10.0


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic") / "embeddings"
    write_synthetic_cache(folder)
    return folder


@pytest.fixture
def one_thread():
    """d_model 16 gains nothing from a second thread, and two threads on a busy 2-core machine
    spin against each other (measured here under load: one jmt run 298 s with two threads,
    14 s with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def learned(synthetic, tmp_path, head):
    """Trains `head` briefly; returns the numpy CCC of its best checkpoint on validation."""
    params = params_at(tmp_path, tmp_path / "no-corpus", embed={"out": str(synthetic)},
                       model={"fusion": head, "d_model": 16, "dropout": 0.0, "temporal_dropout": 0.0},
                       train={"epochs": 10, "window": 16, "hop": 8, "batch_size": 4, "lr": 0.01,
                              "warmup_epochs": 1, "patience": 10, "out": str(tmp_path / "model.pt"),
                              "live_dir": str(tmp_path / "live")})
    train_model(params, quiet=True)
    model, _ = load_checkpoint(tmp_path / "model.pt", synthetic)
    entries = load_split(synthetic, "validation", preload_max_mb=100)
    preds = predict_split(model, entries, 16, 8, torch.device("cpu"))
    labels = labels_of(entries)
    return split_ccc_np(preds, {n: y for n, (y, _) in labels.items()}, {n: m for n, (_, m) in labels.items()})


# (head, valence learnable, arousal learnable): valence comes from the visual stream only,
# arousal from the audio stream only.
CASES = [("jmt", True, True), ("mt", True, True), ("concat", True, True), ("late", True, True),
         ("jca", True, True), ("audio_only", False, True), ("visual_only", True, False)]


@pytest.mark.parametrize(("head", "valence", "arousal"), CASES)
def test_head_learns_what_its_streams_carry(synthetic, tmp_path, one_thread, head, valence, arousal):
    got = learned(synthetic, tmp_path, head)
    for axis, learnable in (("valence", valence), ("arousal", arousal)):
        if learnable:
            assert got[f"ccc_{axis}"] > 0.7, (head, axis, got)
        else:
            assert abs(got[f"ccc_{axis}"]) < 0.25, (head, axis, got)
