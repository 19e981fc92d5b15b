"""`jmt evaluate`: the official protocol per task (valid frames of a split concatenated), eval.json,
va's reported post-processing, au's validation-tuned thresholds (beside F1, never in place of
it), the files written (per-video CSVs with every task's columns, the challenge's submission
files per task) and the checks a checkpoint must pass against the cache.

Two checkpoints: `trained` (jmt, va, on the real tiny demo cache) and a concat head trained on
va + expr + au over the synthetic caches of tests/stage2/multitask.py (its comparison's run)."""

import csv
import json

import h5py
import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score
from typer.testing import CliRunner

from pipeline import cache
from pipeline.cli import app
from pipeline.errors import InputError, JmtError
from pipeline.stage2 import checkpoints
from pipeline.stage2.compare import run_folder
from pipeline.stage2.data import load_entries
from pipeline.stage2.evaluate import evaluate_model
from pipeline.stage2.protocol import score
from pipeline.stage2.windows import inference_hop, predict_entry
from pipeline.tasks import TASKS, build_task
from pipeline.tasks.au import AUS, GRID
from pipeline.tasks.expr import CLASSES
from pipeline.tasks.va import VAOptions

from ..reference import split_ccc_np
from .multitask import LEFT_OUT, N, PLAN, compared_tasks

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/stage2/conftest.py

VA = ("ccc_valence", "ccc_arousal", "ccc_mean")
SUBSETS = {"all_streams", "no_visual", "no_audio"}


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def cached_labels(params, name, task):
    """An entry's labels of one task, read straight from the labels cache file."""
    with h5py.File(cache.entry_path(params.path(params.labels.out), name)) as f:
        return f[cache.label_key(task)][...]


# ---------------------------------------------------------------- the protocol by hand

def test_score_by_hand_concatenates_videos_and_drops_invalid_frames():
    # video a: valence p = y = [-1, 1]; video b: p = [-1, 1] against a flat y = [0, 0], and a
    # third frame labelled -5 (invalid) that the prediction 1 would spoil. Concatenated valid
    # frames: p = [-1, 1, -1, 1], y = [-1, 1, 0, 0]: means 0, var p = 1, var y = 1/2,
    # cov = 1/2, CCC = 2 (1/2) / (1 + 1/2) = 2/3 (per-video CCCs 1 and 0 would average to 1/2).
    # Arousal: p = y on every valid frame, CCC 1.
    preds = {"a": np.array([[-1, 0.2], [1, 0.6]]), "b": np.array([[-1, -0.4], [1, 0.1], [1, 0.9]])}
    labels = {"a": (np.array([[-1, 0.2], [1, 0.6]]), np.array([True, True])),
              "b": (np.array([[0, -0.4], [0, 0.1], [-5, -5]]), np.array([True, True, False]))}
    got = score(preds, labels, build_task("va"))
    assert got["ccc_valence"] == pytest.approx(2 / 3)
    assert got["ccc_arousal"] == pytest.approx(1.0)
    assert got["ccc_mean"] == pytest.approx(5 / 6) and got["frames"] == 4


def test_expr_score_by_hand_concatenates_videos():
    # video a: true 0 0, predicted 0 0 (per-video macro F1 over its classes would be perfect);
    # video b: true 1 1 and an invalid frame, predicted 0 1 and (garbage) 7. Concatenated valid
    # frames: true 0 0 1 1, predicted 0 0 0 1: class 0 TP 2 FP 1 -> F1 4/5; class 1 TP 1 FN 1 ->
    # 2/3; the 6 other classes neither labelled nor predicted -> 0: macro F1 (4/5 + 2/3) / 8.
    onehot = np.eye(8, dtype=np.float32)
    preds = {"a": onehot[[0, 0]], "b": onehot[[0, 1, 7]]}
    labels = {"a": (np.array([[0.0], [0.0]]), np.array([True, True])),
              "b": (np.array([[1.0], [1.0], [-1.0]]), np.array([True, True, False]))}
    got = score(preds, labels, build_task("expr"))
    assert got["f1"] == pytest.approx((4 / 5 + 2 / 3) / 8)
    assert got["accuracy"] == pytest.approx(3 / 4) and got["frames"] == 4


def _random_split(name, rng):
    """Three videos of different lengths, each with its own bias and an invalid stretch holding
    garbage predictions; returns preds, labels (y, valid) per video."""
    task = TASKS.get(name)()
    preds, labels = {}, {}
    for i, n in enumerate((40, 75, 120)):
        if name == "va":
            y = np.clip(rng.normal(rng.normal(0, 0.4, 2), 0.3, (n, 2)), -1, 1)
            p = y + rng.normal(0.1 * i, 0.25, (n, 2))
        elif name == "expr":
            y = rng.choice(8, size=(n, 1), p=np.roll([0.5, 0.2, 0.1, 0.05, 0.05, 0.04, 0.03, 0.03], i)).astype(float)
            logits = rng.normal(size=(n, 8))
            logits[np.arange(n), y[:, 0].astype(int)] += 1.0 + i
            p = task.activate(logits)
        else:
            y = (rng.random((n, 12)) < 0.1 + 0.2 * i).astype(float)
            p = 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(0, 1.5, (n, 12)))))
        valid = np.ones(n, bool)
        valid[rng.integers(0, n - 10):][:10] = False
        y[~valid] = task.invalid
        p[~valid] = 3.0 if name == "va" else p[~valid][:, ::-1]       # garbage where there is no label
        preds[f"v{i}"], labels[f"v{i}"] = p, (y, valid)
    return preds, labels


def _reference(name, preds, labels):
    """The task's main metrics on the valid frames of the videos concatenated, written from
    the definitions: CCC with population moments (tests/reference.py), scikit-learn's F1."""
    if name == "va":
        return split_ccc_np(preds, {n: y for n, (y, _) in labels.items()}, {n: m for n, (_, m) in labels.items()})
    p = np.concatenate([preds[n][m] for n, (_, m) in labels.items()])
    y = np.concatenate([y[m] for y, m in labels.values()])
    if name == "expr":
        return {"f1": f1_score(y[:, 0], p.argmax(1), average="macro", labels=range(8), zero_division=0),
                "accuracy": float((y[:, 0] == p.argmax(1)).mean()), "frames": len(y)}
    return {"f1": float(np.mean([f1_score(y[:, k], p[:, k] >= 0.5, zero_division=0) for k in range(12)])),
            "frames": len(y)}


@pytest.mark.parametrize("name", sorted(TASKS.names()))
def test_score_matches_the_reference_protocol_on_random_videos(name):
    """Several videos of different lengths with invalid stretches: each task's metric on the valid
    frames of all videos concatenated. The per-video mean of the metric gives clearly another
    number on these data, so the check can tell the two protocols apart."""
    preds, labels = _random_split(name, np.random.default_rng(3))
    task = build_task(name)
    got, expected = score(preds, labels, task), _reference(name, preds, labels)
    for k in (*task.metrics, "frames"):
        if k in expected:
            assert got[k] == pytest.approx(expected[k], abs=1e-9), k
    assert got["frames"] == 40 + 75 + 120 - 30
    per_video = np.mean([_reference(name, {n: preds[n]}, {n: labels[n]})[task.metric] for n in labels])
    assert abs(per_video - expected[task.metric]) > 0.02


def test_scoring_a_split_without_valid_labels_is_an_error():
    preds = {"x": np.zeros((5, 2), np.float32)}
    with pytest.raises(InputError, match="validation: no valid va labels"):
        score(preds, {"x": (np.full((5, 2), -5, np.float32), np.zeros(5, bool))}, build_task("va"), "validation")


# ---------------------------------------------------------------- va on the real tiny cache

def test_evaluate_writes_eval_json_per_task(trained):
    result = evaluate_model(trained)
    stored = json.loads(trained.path(trained.evaluate.metrics).read_text())
    assert stored == json.loads(json.dumps(result))
    assert (stored["tasks"], stored["streams"], stored["head"]) == (["va"], ["visual", "audio"], "jmt")
    assert stored["postprocess"] == {"va": {"clip": True, "smooth_valence": 0, "smooth_arousal": 0}}
    for split in ("validation", "test"):
        block = stored[split]["va"]
        assert stored[split]["entries"] == block["entries"] == 1
        assert set(block) == {"raw", "post", "availability", "entries", *VA} and set(block["availability"]) == SUBSETS
        assert block["raw"]["frames"] == block["post"]["frames"] > 0 and "pcc_valence" in block["raw"]
        # the headline beside the blocks, named by its split: validation.va.ccc_mean, test.score
        post = block["post"]
        assert {k: block[k] for k in VA} == {k: post[k] for k in VA} and stored[split]["score"] == post["ccc_mean"]
        assert post["ccc_mean"] == pytest.approx((post["ccc_valence"] + post["ccc_arousal"]) / 2)
    assert not {"score", "va"} & set(stored)   # no column without its split


def test_evaluate_writes_the_va_submission_and_per_video_csvs(trained):
    evaluate_model(trained)
    out = trained.path(trained.evaluate.out)
    lines = (out / "submission/va/demo_02.txt").read_text().splitlines()
    assert lines[0] == "image_location,valence,arousal" and len(lines) == 61
    name, v, a = lines[1].split(",")
    assert name == "demo_02/00001.jpg" and -1 <= float(v) <= 1 and -1 <= float(a) <= 1
    assert lines[-1].startswith("demo_02/00060.jpg,")
    assert sorted(p.name for p in (out / "submission").rglob("*.txt")) == ["demo_02.txt"]  # test entries only
    rows = (out / "predictions/validation/demo_01.csv").read_text().splitlines()
    assert rows[0] == "frame,time,valence,arousal,label_valence,label_arousal" and len(rows) == 97


def test_evaluate_numbers_recomputed_from_its_own_files(trained):
    """The written per-frame predictions (CSV, post-processed) and the labels cache give, in
    numpy, the metrics evaluate reports; the test video has a -5 stretch that must be left out."""
    result = evaluate_model(trained)
    out = trained.path(trained.evaluate.out)
    for split in ("validation", "test"):
        preds, ys, masks = {}, {}, {}
        for path in sorted((out / "predictions" / split).glob("*.csv")):
            rows = read_csv(path)
            preds[path.stem] = np.array([[float(r["valence"]), float(r["arousal"])] for r in rows])
            ys[path.stem] = cached_labels(trained, path.stem, "va")
            masks[path.stem] = (ys[path.stem] != -5).all(1)
            assert [float(r["label_valence"]) for r in rows] == pytest.approx(ys[path.stem][:, 0], abs=1e-4)
        expected = split_ccc_np(preds, ys, masks)
        got = result[split]["va"]["post"]
        assert got["frames"] == expected["frames"]
        for k in VA:
            assert got[k] == pytest.approx(expected[k], abs=2e-3), (split, k)  # CSV keeps 4 decimals
    assert result["test"]["va"]["post"]["frames"] < 60  # demo_02 (60 frames) has unlabelled frames


def _moving_average(x, width):
    """Centred moving average, the edges repeated: frame i averages frames i - w//2 ... i - w//2 + w - 1."""
    n = len(x)
    return np.array([np.mean([x[min(max(i - width // 2 + j, 0), n - 1)] for j in range(width)]) for i in range(n)])


def test_va_clip_and_smoothing_options_are_applied_reported_and_leave_raw_alone(trained, tmp_path):
    def run(folder, **va):
        p = trained.updated(evaluate={"out": str(tmp_path / folder), "metrics": str(tmp_path / f"{folder}.json")},
                            tasks={f"va.{k}": v for k, v in va.items()})
        return evaluate_model(p)

    plain = run("plain", clip=False)
    smooth = run("smooth", clip=True, smooth_valence=5, smooth_arousal=9)
    assert smooth["postprocess"]["va"] == {"clip": True, "smooth_valence": 5, "smooth_arousal": 9}
    for split in ("validation", "test"):
        assert smooth[split]["va"]["raw"] == plain[split]["va"]["raw"]     # options touch `post` only
        assert plain[split]["va"]["post"] == plain[split]["va"]["raw"]     # no option: post = raw
        assert smooth[split]["va"]["post"]["ccc_mean"] != plain[split]["va"]["post"]["ccc_mean"]
    for path in (tmp_path / "plain/predictions").rglob("*.csv"):
        raw = np.array([[float(r["valence"]), float(r["arousal"])] for r in read_csv(path)])
        got = np.array([[float(r["valence"]), float(r["arousal"])] for r in
                        read_csv(tmp_path / "smooth/predictions" / path.parent.name / path.name)])
        clipped = np.clip(raw, -1, 1)
        np.testing.assert_allclose(got[:, 0], _moving_average(clipped[:, 0], 5), atol=2e-4)
        np.testing.assert_allclose(got[:, 1], _moving_average(clipped[:, 1], 9), atol=2e-4)


def test_va_postprocess_by_hand():
    pred = np.array([[2.0, 0.0], [-3.0, 1.0], [0.0, 0.0], [0.5, 1.0]], np.float32)
    va = lambda **o: build_task("va", VAOptions(**o))  # noqa: E731
    assert va(clip=False).postprocess(pred).tolist() == pred.tolist()
    assert va(clip=True).postprocess(pred).tolist() == [[1.0, 0.0], [-1.0, 1.0], [0.0, 0.0], [0.5, 1.0]]
    smooth = va(clip=False, smooth_valence=1, smooth_arousal=2).postprocess(pred)
    np.testing.assert_allclose(smooth[:, 0], pred[:, 0])                 # width 1: off
    np.testing.assert_allclose(smooth[:, 1], [0.0, 0.5, 0.5, 0.5])       # (x_i + x_{i+1}) / 2, last repeated


# ---------------------------------------------------------------- checkpoint against cache

def _saved(trained, tmp_path, change):
    ckpt = torch.load(trained.path(trained.train.out), weights_only=True)
    change(ckpt)
    torch.save(ckpt, tmp_path / "other.pt")
    return tmp_path / "other.pt"


def _streams(change):
    def edit(ckpt):
        ckpt["cache"]["streams"] = change([dict(s) for s in ckpt["cache"]["streams"]])
    return edit


def _set(i, **values):
    return lambda streams: [{**s, **values} if k == i else s for k, s in enumerate(streams)]


@pytest.mark.parametrize(("change", "what"), [
    (_streams(lambda s: s[::-1]), "order"),
    (_streams(_set(1, name="voice")), "names"),
    (_streams(lambda s: s[:1]), "a stream fewer"),
    (_streams(lambda s: [*s, {**s[1], "name": "prosody"}]), "a stream more"),
    (_streams(_set(0, backbone="timm:resnet18")), "backbone"),
    (_streams(_set(1, dim=64)), "width"),
])
def test_a_checkpoint_trained_on_other_streams_is_refused_in_one_line(trained, tmp_path, change, what):
    path = _saved(trained, tmp_path, change)
    with pytest.raises(JmtError, match=r"was trained on the streams .* but .* has the streams visual "
                                       r"\(fer_xception, 135-d\), audio \(logmel_stats, \d+-d\)") as info:
        evaluate_model(trained, checkpoint=path, write=False)
    assert "\n" not in str(info.value) and str(path) in str(info.value), what


def test_a_checkpoint_from_other_backbone_weights_is_refused(trained, tmp_path):
    path = _saved(trained, tmp_path, _streams(_set(0, weights_sha256="0" * 64)))
    with pytest.raises(JmtError, match="has other backbone weights; re-embed"):
        evaluate_model(trained, checkpoint=path, write=False)


def test_a_checkpoint_of_another_cache_is_refused(trained, tmp_path_factory):
    """A real model trained on the synthetic caches (streams `test`, 6-d and 4-d) against the demo cache."""
    params, result = compared_tasks(tmp_path_factory)
    other = run_folder(params, result, "concat", 0) / "model.pt"
    with pytest.raises(JmtError, match=r"trained on the streams visual \(test, 6-d\), audio \(test, 4-d\) but"):
        evaluate_model(trained, checkpoint=other, write=False)


def test_a_checkpoint_whose_weights_do_not_fit_its_head_or_is_missing(trained, tmp_path):
    path = _saved(trained, tmp_path, lambda c: c["head"].update(name="mt"))
    with pytest.raises(JmtError, match="do not fit head 'mt'"):
        evaluate_model(trained, checkpoint=path, write=False)
    with pytest.raises(InputError, match="checkpoint not found"):
        evaluate_model(trained, checkpoint=tmp_path / "none.pt", write=False)


def test_cli_evaluate_show_and_heads(trained):
    runner = CliRunner()
    params = str(trained.root / "params.yaml")
    result = runner.invoke(app, ["evaluate", "--params", params])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("validation va: ccc_valence ") and "test va: ccc_valence" in result.output
    shown = runner.invoke(app, ["evaluate", "--params", params, "--show"])
    assert shown.exit_code == 0 and shown.output.splitlines()[0] == result.output.splitlines()[0]
    heads = runner.invoke(app, ["heads", "--params", params])
    assert heads.exit_code == 0 and "jmt" in heads.output and "only:visual" in heads.output


# ---------------------------------------------------------------- va + expr + au

@pytest.fixture(scope="module")
def tasks_eval(tmp_path_factory):
    """(params, checkpoint, result) of evaluating the multi-task concat run, written to its own folder."""
    params, compared = compared_tasks(tmp_path_factory)
    out = tmp_path_factory.mktemp("tasks_eval")
    ckpt = run_folder(params, compared, "concat", 0) / "model.pt"
    params = params.updated(evaluate={"metrics": str(out / "eval.json"), "out": str(out / "eval")})
    return params, ckpt, evaluate_model(params, checkpoint=ckpt)


def _members(split, task):
    return sorted(n for n, splits in PLAN.items() if splits.get(task) == split)


def test_multi_task_eval_json_scores_each_task_on_its_own_split(tasks_eval):
    params, ckpt, result = tasks_eval
    assert json.loads(params.path(params.evaluate.metrics).read_text()) == json.loads(json.dumps(result))
    assert result["tasks"] == ["va", "expr", "au"] and result["head"] == "concat"
    assert set(result["postprocess"]) == {"va", "expr", "au"}
    for split in ("validation", "test"):
        union = {n for t in result["tasks"] for n in _members(split, t)}
        assert result[split]["entries"] == len(union)
        for t in result["tasks"]:
            block = result[split][t]
            assert block["entries"] == len(_members(split, t)), (split, t)
            assert block["post"]["frames"] == len(_members(split, t)) * (N - 5), (split, t)
            assert set(block["availability"]) == SUBSETS
            assert set(TASKS.get(t).metrics) <= set(block["post"])
            if t != "va":   # expr and au have no post-processing
                assert block["post"] == block["raw"]
    for split in ("validation", "test"):
        block = result[split]
        assert block["score"] == pytest.approx(block["va"]["post"]["ccc_mean"] + block["expr"]["post"]["f1"]
                                               + block["au"]["post"]["f1"], abs=1e-12)
        for t in result["tasks"]:
            metrics = TASKS.get(t).metrics
            assert {k: block[t][k] for k in metrics} == {k: block[t]["post"][k] for k in metrics}
    val = result["validation"]
    assert {f"f1_{a}" for a in AUS} <= set(val["au"]["post"])          # per-AU F1 in the split's block
    # `mixed` and `mixed2` (validation for some tasks, training for others): scored for their
    # validation tasks only, never trained on
    run = json.loads((ckpt.parent / "run.json").read_text())
    assert run["left_out"] == LEFT_OUT


def _columns():
    return ["frame", "time", "valence", "arousal", "label_valence", "label_arousal",
            "expression", *(f"p_{c.lower()}" for c in CLASSES), "label_expression",
            *(a.lower() for a in AUS), *(f"p_{a.lower()}" for a in AUS), *(f"label_{a.lower()}" for a in AUS)]


def test_multi_task_csvs_hold_every_tasks_columns_and_rescore_to_eval_json(tasks_eval):
    """Every entry of a split's union has a CSV with every task's outputs and labels; from those
    files and the labels cache, each task's metric on its own split's valid frames (CCC in
    numpy, scikit-learn's F1) is what eval.json says."""
    params, _, result = tasks_eval
    out = params.path(params.evaluate.out)
    for split in ("validation", "test"):
        files = sorted((out / "predictions" / split).glob("*.csv"))
        assert [p.stem for p in files] == sorted({n for t in ("va", "expr", "au") for n in _members(split, t)})
        tables = {p.stem: read_csv(p) for p in files}
        for name, rows in tables.items():
            assert list(rows[0]) == _columns() and len(rows) == N, name
            # the decisions follow the probabilities (written with 4 decimals: a near tie may round)
            probs = np.array([[float(r[f"p_{c.lower()}"]) for c in CLASSES] for r in rows])
            assert np.allclose(probs.sum(1), 1, atol=1e-3) and (probs >= 0).all()
            assert np.mean([r["expression"] == CLASSES[k] for r, k in zip(rows, probs.argmax(1))]) > 0.95
            p_au = np.array([[float(r[f"p_{a.lower()}"]) for a in AUS] for r in rows])
            decided = np.array([[int(r[a.lower()]) for a in AUS] for r in rows])
            assert ((decided == 1) == (p_au >= 0.5)).mean() > 0.99
            if name == "va_test":   # no expr or au labels: the invalid marker in their label columns
                assert {r["label_expression"] for r in rows} == {"-1"} and {r["label_au1"] for r in rows} == {"-1"}
        # va: CCC of the concatenated valid frames
        names = _members(split, "va")
        ys = {n: cached_labels(params, n, "va") for n in names}
        expected = split_ccc_np({n: np.array([[float(r["valence"]), float(r["arousal"])] for r in tables[n]])
                                 for n in names}, ys, {n: (y != -5).all(1) for n, y in ys.items()})
        for k in VA:
            assert result[split]["va"]["post"][k] == pytest.approx(expected[k], abs=2e-3), (split, k)
        # expr and au: the decisions in the CSVs are exact
        names = _members(split, "expr")
        y = np.concatenate([cached_labels(params, n, "expr")[:, 0] for n in names])
        p = np.array([CLASSES.index(r["expression"]) for n in names for r in tables[n]])
        keep = y >= 0
        assert result[split]["expr"]["post"]["f1"] == pytest.approx(
            f1_score(y[keep], p[keep], average="macro", labels=range(8), zero_division=0), abs=1e-12)
        assert result[split]["expr"]["post"]["accuracy"] == pytest.approx((y[keep] == p[keep]).mean(), abs=1e-12)
        names = _members(split, "au")
        y = np.concatenate([cached_labels(params, n, "au") for n in names])
        p = np.concatenate([np.array([[int(r[a.lower()]) for a in AUS] for r in tables[n]]) for n in names])
        keep = (y >= 0).all(1)
        per_au = [f1_score(y[keep, k], p[keep, k], zero_division=0) for k in range(len(AUS))]
        assert result[split]["au"]["post"]["f1"] == pytest.approx(np.mean(per_au), abs=1e-12)
        for a, f in zip(AUS, per_au):
            assert result[split]["au"]["post"][f"f1_{a}"] == pytest.approx(f, abs=1e-12)


def test_multi_task_submission_files_per_task(tasks_eval):
    params, _, _ = tasks_eval
    out = params.path(params.evaluate.out)
    headers = {"va": "image_location,valence,arousal",
               "expr": "image_location,Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other",
               "au": "image_location,AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26"}
    assert sorted(p.name for p in (out / "submission").iterdir()) == ["au", "expr", "va"]
    for task, header in headers.items():
        files = sorted((out / "submission" / task).glob("*.txt"))
        assert [p.stem for p in files] == _members("test", task), task   # its own test split, nothing else
        for path in files:
            lines = path.read_text().splitlines()
            rows = read_csv(out / "predictions/test" / f"{path.stem}.csv")
            assert lines[0] == header and len(lines) == N + 1
            assert [x.split(",", 1)[0] for x in lines[1:]] == [f"{path.stem}/{i:05d}.jpg" for i in range(1, N + 1)]
            values = [x.split(",")[1:] for x in lines[1:]]
            if task == "va":
                assert values == [[r["valence"], r["arousal"]] for r in rows]
            elif task == "expr":
                assert values == [[str(CLASSES.index(r["expression"]))] for r in rows]
            else:
                assert values == [[r[a.lower()] for a in AUS] for r in rows]
                assert {v for row in values for v in row} <= {"0", "1"}


def _sigmoid_predictions(params, ckpt, names):
    """AU probabilities of the entries, from the checkpoint's raw outputs (sigmoid written here)."""
    model, read = checkpoints.load(ckpt, params.path(params.embed.out))
    entries = load_entries(params.path(params.embed.out), params.path(params.labels.out), ["au"], names=names)
    window = read.window
    return {e.name: 1 / (1 + np.exp(-predict_entry(model.eval(), e, window, inference_hop(window), torch.device("cpu"))["au"]
                                    .astype(np.float64))) for e in entries}


def test_au_tuned_thresholds_are_reported_beside_f1_never_in_place_of_it(tasks_eval):
    params, ckpt, plain = tasks_eval
    tuned = evaluate_model(params.updated(tasks={"au.tune_thresholds": True}), checkpoint=ckpt, write=False)
    assert "f1_tuned" not in plain["validation"]["au"]["post"] and "thresholds" not in plain["validation"]["au"]
    # (approx: the fixture may have run with another torch thread count, which moves the last bits)
    for split in ("validation", "test"):
        post = tuned[split]["au"]["post"]
        assert {k: v for k, v in post.items() if k != "f1_tuned"} == pytest.approx(plain[split]["au"]["post"], abs=1e-6)
    for split in ("validation", "test"):                                        # f1 at 0.5 counts
        assert tuned[split]["au"]["f1"] == pytest.approx(plain[split]["au"]["f1"], abs=1e-6)
        assert tuned[split]["score"] == pytest.approx(plain[split]["score"], abs=1e-6)
    assert tuned["validation"]["au"]["thresholds_note"] == "tuned on this split: optimistic here"
    # by hand: per AU, the grid threshold with the best validation F1 (the first of equals),
    # then F1 at those thresholds on validation and, as they are, on test
    thresholds = []
    frames = {}
    for split in ("validation", "test"):
        names = _members(split, "au")
        probs = _sigmoid_predictions(params, ckpt, names)
        y = np.concatenate([cached_labels(params, n, "au") for n in names])
        keep = (y >= 0).all(1)
        frames[split] = (np.concatenate([probs[n] for n in names])[keep], y[keep])
    p, y = frames["validation"]
    for k in range(len(AUS)):
        scores = [f1_score(y[:, k], p[:, k] >= t, zero_division=0) for t in GRID]
        thresholds.append(GRID[int(np.argmax(np.round(scores, 12)))])
    assert tuned["validation"]["au"]["thresholds"] == pytest.approx(thresholds)
    for split in ("validation", "test"):
        p, y = frames[split]
        want = np.mean([f1_score(y[:, k], p[:, k] >= thresholds[k], zero_division=0) for k in range(len(AUS))])
        assert tuned[split]["au"]["post"]["f1_tuned"] == pytest.approx(want, abs=1e-9), split
    val = tuned["validation"]["au"]["post"]
    assert val["f1_tuned"] >= val["f1"]  # 0.5 is in the grid
