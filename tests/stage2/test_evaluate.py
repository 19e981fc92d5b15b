"""`jmt evaluate`: protocol, post-processing, files written, checkpoint checks."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import EvaluateParams
from pipeline.errors import InputError, JmtError
from pipeline.stage2.evaluate import evaluate_model, postprocess
from pipeline.stage2.protocol import score

from ..reference import ccc_np, split_ccc_np


def test_evaluate_writes_metrics_predictions_and_submission(trained):
    result = evaluate_model(trained)
    metrics = json.loads(trained.path(trained.evaluate.metrics).read_text())
    assert {"ccc_valence", "ccc_arousal", "ccc_mean"} <= set(metrics)
    assert metrics["ccc_mean"] == pytest.approx((metrics["ccc_valence"] + metrics["ccc_arousal"]) / 2)
    assert metrics["ccc_mean"] == result["validation"]["post"]["ccc_mean"]
    assert result["test"]["raw"]["frames"] > 0 and "pcc_valence" in result["test"]["raw"]
    out = trained.path(trained.evaluate.out)
    lines = (out / "submission/demo_02.txt").read_text().splitlines()
    assert lines[0] == "image_location,valence,arousal" and len(lines) == 61
    name, v, a = lines[1].split(",")
    assert name == "demo_02/00001.jpg" and -1 <= float(v) <= 1 and -1 <= float(a) <= 1
    rows = (out / "predictions/validation/demo_01.csv").read_text().splitlines()
    assert rows[0] == "frame,time,valence,arousal,label_valence,label_arousal" and len(rows) == 97


def test_score_by_hand_concatenates_videos_and_drops_invalid_frames():
    # video a: valence p = y = [-1, 1]; video b: p = [-1, 1] against a flat y = [0, 0], and a
    # third frame labelled -5 (invalid) that the prediction 1 would spoil. Concatenated valid
    # frames: p = [-1, 1, -1, 1], y = [-1, 1, 0, 0]: means 0, var p = 1, var y = 1/2,
    # cov = 1/2, CCC = 2 (1/2) / (1 + 1/2) = 2/3 (per-video CCCs 1 and 0 would average to 1/2).
    # Arousal: p = y on every valid frame, CCC 1.
    preds = {"a": np.array([[-1, 0.2], [1, 0.6]]), "b": np.array([[-1, -0.4], [1, 0.1], [1, 0.9]])}
    labels = {"a": (np.array([[-1, 0.2], [1, 0.6]]), np.array([True, True])),
              "b": (np.array([[0, -0.4], [0, 0.1], [-5, -5]]), np.array([True, True, False]))}
    got = score(preds, labels)
    assert got["ccc_valence"] == pytest.approx(2 / 3)
    assert got["ccc_arousal"] == pytest.approx(1.0)
    assert got["ccc_mean"] == pytest.approx(5 / 6) and got["frames"] == 4


def test_score_matches_the_numpy_protocol_on_random_videos():
    """Several videos of different lengths with -5 stretches: CCC of the valid frames of all
    videos concatenated; the two wrong protocols (mean of per-video CCCs; -5 frames kept) give
    clearly other numbers on these data, so the check can tell them apart."""
    rng = np.random.default_rng(3)
    preds, labels, ys, masks = {}, {}, {}, {}
    for i, n in enumerate((40, 75, 120)):
        offset = rng.normal(0, 0.4, 2)                     # per-video bias: per-video CCC differs
        y = np.clip(rng.normal(offset, 0.3, (n, 2)), -1, 1)
        p = y + rng.normal(0.1 * i, 0.25, (n, 2))
        valid = np.ones(n, bool)
        valid[rng.integers(0, n - 10):][:10] = False
        y[~valid] = -5
        p[~valid] = 3.0                                    # garbage where there is no label
        preds[f"v{i}"], labels[f"v{i}"], ys[f"v{i}"], masks[f"v{i}"] = p, (y, valid), y, valid
    got = score(preds, labels)
    expected = split_ccc_np(preds, ys, masks)
    for k in ("ccc_valence", "ccc_arousal", "ccc_mean"):
        assert got[k] == pytest.approx(expected[k], abs=1e-9), k
    assert got["frames"] == expected["frames"] == 40 + 75 + 120 - 30
    per_video = np.mean([(ccc_np(p[m, 0], y[m, 0]) + ccc_np(p[m, 1], y[m, 1])) / 2
                         for p, (y, m) in zip(preds.values(), labels.values())])
    with_invalid = np.mean([ccc_np(np.concatenate([p[:, k] for p in preds.values()]),
                                   np.concatenate([y[:, k] for y in ys.values()])) for k in (0, 1)])
    assert abs(per_video - expected["ccc_mean"]) > 0.05 and abs(with_invalid - expected["ccc_mean"]) > 0.05


def test_evaluate_numbers_recomputed_from_its_own_files(trained):
    """The written per-frame predictions (CSV, post-processed) and the cache's labels give, in
    numpy, the metrics evaluate reports; the test video has a -5 stretch that must be left out."""
    import h5py

    from pipeline import cache

    result = evaluate_model(trained)
    out, folder = trained.path(trained.evaluate.out), trained.path(trained.embed.out)
    for split in ("validation", "test"):
        preds, ys, masks = {}, {}, {}
        for path in sorted((out / "predictions" / split).glob("*.csv")):
            rows = np.loadtxt(path, delimiter=",", skiprows=1)
            preds[path.stem] = rows[:, 2:4]
            with h5py.File(cache.entry_path(folder, path.stem)) as f:
                ys[path.stem], masks[path.stem] = f["labels"][...], (f["labels"][...] != -5).all(1)
        expected = split_ccc_np(preds, ys, masks)
        got = result[split]["post"]
        assert got["frames"] == expected["frames"]
        for k in ("ccc_valence", "ccc_arousal", "ccc_mean"):
            assert got[k] == pytest.approx(expected[k], abs=2e-3), (split, k)  # CSV keeps 4 decimals
    assert result["test"]["post"]["frames"] < 60  # demo_02 (60 frames) has unlabelled frames


def test_postprocess_clip_and_smoothing():
    pred = np.array([[2.0, 0.0], [-3.0, 1.0], [0.0, 0.0], [0.5, 1.0]], np.float32)
    assert postprocess(pred, EvaluateParams(clip=False)).tolist() == pred.tolist()
    clipped = postprocess(pred, EvaluateParams(clip=True))
    assert clipped.max() <= 1 and clipped.min() >= -1
    smooth = postprocess(pred, EvaluateParams(clip=False, smooth_valence=1, smooth_arousal=2))
    np.testing.assert_allclose(smooth[:, 0], pred[:, 0])
    np.testing.assert_allclose(smooth[:, 1], [0.0, 0.5, 0.5, 0.5])


def test_checkpoint_from_other_backbones_is_refused(trained, tmp_path):
    ckpt = torch.load(trained.path(trained.train.out), weights_only=True)
    ckpt["cache"]["visual_backbone"] = "timm:resnet18"
    torch.save(ckpt, tmp_path / "other.pt")
    with pytest.raises(JmtError, match="trained on visual_backbone = 'timm:resnet18' but .* has 'fer_xception'"):
        evaluate_model(trained, checkpoint=tmp_path / "other.pt", write=False)
    ckpt = torch.load(trained.path(trained.train.out), weights_only=True)
    ckpt["head"]["name"] = "mt"
    torch.save(ckpt, tmp_path / "wronghead.pt")
    with pytest.raises(JmtError, match="do not fit head 'mt'"):
        evaluate_model(trained, checkpoint=tmp_path / "wronghead.pt", write=False)
    with pytest.raises(InputError, match="checkpoint not found"):
        evaluate_model(trained, checkpoint=tmp_path / "none.pt", write=False)


def test_cli_evaluate_and_heads(trained):
    runner = CliRunner()
    params = str(trained.root / "params.yaml")
    result = runner.invoke(app, ["evaluate", "--params", params])
    assert result.exit_code == 0 and "validation: CCC valence" in result.output
    shown = runner.invoke(app, ["evaluate", "--params", params, "--show"])
    assert shown.exit_code == 0 and shown.output.splitlines()[0] == result.output.splitlines()[0]
    result = runner.invoke(app, ["heads", "--params", params])
    assert result.exit_code == 0 and "jmt" in result.output and "visual_only" in result.output
