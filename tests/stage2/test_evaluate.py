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


def test_postprocess_clip_and_smoothing():
    pred = np.array([[2.0, 0.0], [-3.0, 1.0], [0.0, 0.0], [0.5, 1.0]], np.float32)
    assert postprocess(pred, EvaluateParams(clip=False)).tolist() == pred.tolist()
    clipped = postprocess(pred, EvaluateParams(clip=True))
    assert clipped.max() <= 1 and clipped.min() >= -1
    smooth = postprocess(pred, EvaluateParams(clip=False, smooth_valence=1, smooth_arousal=2))
    np.testing.assert_allclose(smooth[:, 0], pred[:, 0])
    np.testing.assert_allclose(smooth[:, 1], [0.0, 0.5, 0.5, 0.5])


def test_checkpoint_from_other_backbones_is_refused(trained, tmp_path):
    ckpt = torch.load(trained.path(trained.train.out), weights_only=False)
    ckpt["cache"]["visual_backbone"] = "timm:resnet18"
    torch.save(ckpt, tmp_path / "other.pt")
    with pytest.raises(JmtError, match="trained on visual_backbone = 'timm:resnet18' but .* has 'fer_xception'"):
        evaluate_model(trained, checkpoint=tmp_path / "other.pt", write=False)
    ckpt = torch.load(trained.path(trained.train.out), weights_only=False)
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
