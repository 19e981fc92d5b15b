"""Heads learn: on a small synthetic cache (embeddings and labels) where valence is a known
function of the visual embeddings and arousal of the audio ones (or, with three streams, of the
third one), a short real training run (`train_model`) reaches a clear validation CCC on each
axis a head can see, and stays near 0 on an axis whose only source it never reads. The CCC is
recomputed in numpy from the trained model's predictions.

A head that outputs constants, ignores a stream or swaps them fails here.
"""

import numpy as np
import pytest
import torch

from pipeline import cache
from pipeline.stage2.checkpoints import load as load_checkpoint
from pipeline.stage2.data import load_entries, split_entries
from pipeline.stage2.protocol import labels_of
from pipeline.stage2.train import train_model
from pipeline.stage2.windows import predict_split
from pipeline.tasks import tasks_of

from ..reference import split_ccc_np
from ..stage1.helpers import params_at

pytestmark = pytest.mark.usefixtures("one_thread")

N = 64  # frames per entry
# stream -> width, in the cache's order; which stream valence and arousal come from
TWO = ({"visual": 6, "audio": 8}, "visual", "audio")
# three streams: arousal from the third one, the second carries nothing
THREE = ({"visual": 6, "audio": 8, "prosody": 5}, "visual", "prosody")


def write_synthetic_cache(root, streams, valence, arousal, seed=0, *, train=4, validation=4):
    """embed- and labels-stage files: random embeddings; valence = the first feature of the
    `valence` stream after L2 normalisation (what every head sees), arousal = the same for the
    `arousal` stream. A few frames are unlabelled (-5) and a few have no face: the head's
    'missing' vector takes their place. Frames are independent, so an axis a head cannot see
    scores about 0 (4 x 61 frames)."""
    rng = np.random.default_rng(seed)
    names = [("train", i) for i in range(train)] + [("validation", i) for i in range(validation)]
    meta = [{"name": s, "backbone": "synthetic", "input": "crops", "weights_sha256": "none", "weights": "none",
             "dim": d} for s, d in streams.items()]
    for split, i in names:
        name = f"{split}_{i}"
        x = {s: rng.normal(size=(N, d)) for s, d in streams.items()}
        labels = np.stack([x[valence][:, 0] / np.linalg.norm(x[valence], axis=1),
                           x[arousal][:, 0] / np.linalg.norm(x[arousal], axis=1)], 1).astype(np.float32)
        labels[5:8] = -5
        masks = {s: np.ones(N, bool) for s in streams}
        masks["visual"][40:42] = False
        attrs = {"video": f"{name}.mp4", "fps": 10.0, "n_frames": N, "side": None, "streams": meta}
        with cache.write_entry(root / "embeddings", name, stage="embed", config={"synthetic": seed},
                               attrs=attrs) as f:
            for s in streams:
                f.create_dataset(cache.stream_key(s, "features"), data=x[s].astype(np.float16), **cache.FEATURES)
                f.create_dataset(cache.stream_key(s, "mask"), data=masks[s])
            f.create_dataset("timestamps", data=np.arange(N) / 10.0)
        tasks = [{"task": "va", "split": split, "annotation": None, "rows_minus_frames": 0, "valid_frames": N - 3}]
        with cache.write_entry(root / "labels", name, stage="labels", config={"synthetic": seed},
                               attrs={"video": f"{name}.mp4", "side": None, "fps": 10.0, "n_frames": N,
                                      "tasks": tasks}) as f:
            f.create_dataset(cache.label_key("va"), data=labels)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """n streams -> the root of a synthetic cache (embeddings/, labels/)."""
    out = {}
    for n, spec in ((2, TWO), (3, THREE)):
        out[n] = tmp_path_factory.mktemp(f"synthetic{n}")
        write_synthetic_cache(out[n], *spec)
    return out


def learned(root, tmp_path, head):
    """Trains `head` briefly; returns the numpy CCC of its best checkpoint on validation.

    lr 0.003: at 0.01, `jmt` on three streams learnt valence from seeds 2 and 3 but not 0 and 1
    (CCC 0.04, 0.005), and which seeds fail moves with the CPU's last bits (it passed on another
    machine); at 0.003 every case below passed with seeds 0-4, the lowest learnable-axis CCC 0.795."""
    params = params_at(tmp_path, tmp_path / "no-corpus", embed={"out": str(root / "embeddings")},
                       labels={"out": str(root / "labels")},
                       model={"fusion": head, "d_model": 16, "dropout": 0.0, "temporal_dropout": 0.0},
                       train={"epochs": 10, "window": 16, "hop": 8, "batch_size": 4, "lr": 0.003,
                              "warmup_epochs": 1, "patience": 10, "out": str(tmp_path / "model.pt"),
                              "live_dir": str(tmp_path / "live")})
    train_model(params, quiet=True)
    model, _ = load_checkpoint(tmp_path / "model.pt", root / "embeddings")
    entries = split_entries(load_entries(root / "embeddings", root / "labels", ["va"], preload_max_mb=100),
                            ["va"]).validation["va"]
    assert len(entries) == 4
    preds = predict_split(model, entries, 16, 8, torch.device("cpu"), tasks_of(["va"]))
    labels = labels_of(entries, "va")
    return split_ccc_np({n: p["va"] for n, p in preds.items()}, {n: y for n, (y, _) in labels.items()},
                        {n: m for n, (_, m) in labels.items()})


# (streams, head, valence learnable, arousal learnable): with two streams valence comes from
# the visual stream only, arousal from the audio stream only; with three, arousal from prosody
CASES = [(2, "jmt", True, True), (2, "mt", True, True), (2, "concat", True, True), (2, "late", True, True),
         (2, "jca", True, True), (2, "only:audio", False, True), (2, "only:visual", True, False),
         (3, "jmt", True, True), (3, "only:audio", False, False)]


@pytest.mark.parametrize(("n", "head", "valence", "arousal"), CASES)
def test_head_learns_what_its_streams_carry(synthetic, tmp_path, n, head, valence, arousal):
    got = learned(synthetic[n], tmp_path, head)
    for axis, learnable in (("valence", valence), ("arousal", arousal)):
        if learnable:
            assert got[f"ccc_{axis}"] > 0.7, (n, head, axis, got)
        else:
            assert abs(got[f"ccc_{axis}"]) < 0.25, (n, head, axis, got)
