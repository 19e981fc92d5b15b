"""Scores by stream availability: per task, the frames where every stream is present
(`all_streams`) and where each stream is missing (`no_<stream>`), from the cache's own masks.
Expected values are computed here (numpy CCC, scikit-learn's F1) from the masks and
predictions, not by the code under test."""

import copy
import json
import re

import numpy as np
import pytest
import torch
from matplotlib import image
from sklearn.metrics import f1_score

from pipeline import cache
from pipeline.errors import InputError
from pipeline.report import build_report, load_comparison
from pipeline.stage2 import checkpoints
from pipeline.stage2.compare import load_predictions, markdown
from pipeline.stage2.data import CachedEntry, load_entries
from pipeline.stage2.evaluate import evaluate_model
from pipeline.stage2.protocol import availability_of, labels_of, score_subsets
from pipeline.stage2.verdicts import VERDICTS, annotate, paired_blocks
from pipeline.stage2.windows import inference_hop, predict_entry
from pipeline.stats import Part, bootstrap_videos
from pipeline.tasks import TASKS, build_task

from .faked_compare import compared_small, params_for, run

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/stage2/conftest.py

SUBSETS = ("all_streams", "no_visual", "no_audio")
SELECT = {"all_streams": lambda v, a: v & a, "no_visual": lambda v, a: ~v, "no_audio": lambda v, a: ~a}


def reference(task, pred, y):
    """A task's metrics on the frames given, from the definitions (population-moment CCC;
    scikit-learn's F1: macro over the 8 classes, mean over the 12 AUs at 0.5)."""
    pred, y = np.asarray(pred, np.float64), np.asarray(y, np.float64)
    if task == "va":
        def ccc(x, t):
            cov = np.mean((x - x.mean()) * (t - t.mean()))
            return 2 * cov / (x.var() + t.var() + (x.mean() - t.mean()) ** 2)
        v, a = ccc(pred[:, 0], y[:, 0]), ccc(pred[:, 1], y[:, 1])
        return {"ccc_valence": v, "ccc_arousal": a, "ccc_mean": (v + a) / 2}
    if task == "expr":
        return {"f1": f1_score(y[:, 0], pred.argmax(1), average="macro", labels=range(8), zero_division=0),
                "accuracy": float(np.mean(y[:, 0] == pred.argmax(1)))}
    return {"f1": float(np.mean([f1_score(y[:, k], pred[:, k] >= 0.5, zero_division=0) for k in range(12)]))}


def _labels(task, n, rng):
    t = TASKS.get(task)
    if task == "va":
        return rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    if task == "expr":
        return rng.integers(0, 8, (n, 1)).astype(np.float32)
    return (rng.random((n, t.values)) < 0.4).astype(np.float32)


def _outputs(task, n, rng):
    if task == "va":
        return rng.normal(0, 0.5, (n, 2))
    return build_task(task).activate(rng.normal(0, 1, (n, TASKS.get(task).width)))


def _entry(name, n, visual, audio, invalid, task, rng):
    t = TASKS.get(task)()
    y = _labels(task, n, rng)
    y[invalid] = t.invalid
    arrays = {"streams/visual/features": np.zeros((n, 3), np.float16), "streams/visual/mask": visual,
              "streams/audio/features": np.zeros((n, 3), np.float16), "streams/audio/mask": audio,
              f"labels/{task}": y, f"valid/{task}": t.valid(y)}
    return CachedEntry(name, None, n, 30.0, ["visual", "audio"], [task], {task: "validation"}, arrays=arrays)


def hand_built(task):
    """v1: 40 frames, no face on 10-19, no audio on 15-17 and 25-29 (so 15-17 have neither),
    labels invalid on 0-2; v2: 30 frames with both streams throughout."""
    rng = np.random.default_rng(0)
    visual, audio, invalid = np.ones(40, bool), np.ones(40, bool), np.zeros(40, bool)
    visual[10:20], audio[15:18], audio[25:30], invalid[:3] = False, False, False, True
    entries = [_entry("v1", 40, visual, audio, invalid, task, rng),
               _entry("v2", 30, np.ones(30, bool), np.ones(30, bool), np.zeros(30, bool), task, rng)]
    preds = {"v1": _outputs(task, 40, rng), "v2": _outputs(task, 30, rng)}
    return entries, preds


# frames of each subset in hand_built: (frames, videos)
SIZES = {"all_streams": (7 + 5 + 10 + 30, 2), "no_visual": (10, 1), "no_audio": (8, 1)}


@pytest.mark.parametrize("task", sorted(TASKS.names()))
def test_subsets_hold_the_right_frames_and_score_like_the_reference(task):
    entries, preds = hand_built(task)
    labels = labels_of(entries, task)
    out = score_subsets(preds, labels, availability_of(entries), build_task(task), min_frames=5)
    y1, y2 = labels["v1"][0], labels["v2"][0]
    both1 = np.r_[3:10, 20:25, 30:40]
    expected = {
        "all_streams": (np.concatenate([preds["v1"][both1], preds["v2"]]), np.concatenate([y1[both1], y2])),
        "no_visual": (preds["v1"][10:20], y1[10:20]),                  # v2 has no such frame: not a video here
        "no_audio": (preds["v1"][np.r_[15:18, 25:30]], y1[np.r_[15:18, 25:30]]),
    }
    assert list(out) == list(SUBSETS)
    for subset, (p, y) in expected.items():
        row = out[subset]
        assert (row["frames"], row["videos"], row["scored"]) == (*SIZES[subset], True), subset
        assert set(row) == {"frames", "videos", "scored", *TASKS.get(task).metrics}
        for k, v in reference(task, p, y).items():
            assert row[k] == pytest.approx(v, abs=1e-9), (subset, k)


def test_a_subset_with_too_few_frames_is_not_scored():
    entries, preds = hand_built("va")
    out = score_subsets(preds, labels_of(entries, "va"), availability_of(entries), build_task("va"), min_frames=9)
    assert out["no_audio"] == {"frames": 8, "videos": 1, "scored": False, "why": "8 valid frames, fewer than 9"}
    assert out["no_visual"]["scored"] and "ccc_mean" not in out["no_audio"]


@pytest.mark.parametrize("task", sorted(TASKS.names()))
@pytest.mark.parametrize("subset", SUBSETS)
def test_a_subset_with_exactly_min_frames_is_scored_and_one_frame_fewer_is_not(task, subset):
    """The boundary of `min_frames`: a subset holding exactly that many valid frames is scored;
    asked for one more, it is not (a `<=` where `<` belongs must fail here)."""
    entries, preds = hand_built(task)
    labels, masks = labels_of(entries, task), availability_of(entries)
    n = SIZES[subset][0]
    at = score_subsets(preds, labels, masks, build_task(task), min_frames=n)[subset]
    assert at["frames"] == n and at["scored"] is True and TASKS.get(task).metric in at
    above = score_subsets(preds, labels, masks, build_task(task), min_frames=n + 1)[subset]
    assert above == {"frames": n, "videos": SIZES[subset][1], "scored": False,
                     "why": f"{n} valid frames, fewer than {n + 1}"}


def test_a_subset_whose_metric_is_undefined_says_why():
    """Every frame of the subset has the same label and prediction: CCC undefined, not scored."""
    entries, preds = hand_built("va")
    for e in entries:
        e.arrays["labels/va"][:] = 0.5
    preds = {n: np.full_like(p, 0.5) for n, p in preds.items()}
    out = score_subsets(preds, labels_of(entries, "va"), availability_of(entries), build_task("va"), min_frames=2)
    assert all(not row["scored"] and "undefined" in row["why"] for row in out.values())


def _masks(params, split):
    """name -> (visual mask, audio mask, va labels) read straight from the cache files, for the
    entries of va's split (from the labels files)."""
    out = {}
    for name in cache.entries(params.path(params.labels.out)):
        with cache.open_entry(cache.entry_path(params.path(params.labels.out), name)) as f:
            if {t["task"]: t["split"] for t in cache.attrs_of(f)["tasks"]}.get("va") != split:
                continue
            labels = f["labels/va"][...]
        with cache.open_entry(cache.entry_path(params.path(params.embed.out), name)) as f:
            out[name] = (f["streams/visual/mask"][...], f["streams/audio/mask"][...], labels)
    return out


def _expected(params, split, preds):
    """subset -> (frames, videos, numpy scores or None) from the cache's masks and predictions."""
    out = {}
    for subset, pick in SELECT.items():
        p, y, videos = [], [], 0
        for name, (v, a, labels) in _masks(params, split).items():
            keep = pick(v, a) & (labels != -5).all(1)
            videos += bool(keep.any())
            p.append(preds[name][keep])
            y.append(labels[keep])
        p, y = np.concatenate(p), np.concatenate(y)
        out[subset] = (len(y), videos, reference("va", p, y) if len(y) >= 2 else None)
    return out


@pytest.mark.parametrize("given", [None, 10])  # the default (compare.min_subset_frames); low enough to score the tiny corpus's subsets
def test_evaluate_scores_each_subset_of_each_split(trained, given):
    result = evaluate_model(trained, write=False, min_subset_frames=given)
    least = given or trained.compare.min_subset_frames
    model, _ = checkpoints.load(trained.path(trained.train.out), trained.path(trained.embed.out))
    window = trained.train.window
    entries = load_entries(trained.path(trained.embed.out), trained.path(trained.labels.out), ["va"])
    preds = {e.name: np.clip(predict_entry(model.eval(), e, window, inference_hop(window), torch.device("cpu"))["va"], -1, 1)
             for e in entries}                                                       # tasks.va.clip
    for split in ("validation", "test"):
        got = result[split]["va"]["availability"]
        assert list(got) == list(SUBSETS)
        for subset, (frames, videos, scores) in _expected(trained, split, preds).items():
            assert (got[subset]["frames"], got[subset]["videos"]) == (frames, videos), (split, subset)
            assert got[subset]["scored"] == (frames >= least)
            if got[subset]["scored"]:
                for k, v in scores.items():
                    assert got[subset][k] == pytest.approx(v, abs=1e-6), (split, subset, k)
            else:
                assert got[subset]["why"] == f"{frames} valid frames, fewer than {least}"
    if least == 10:  # low enough that the scored path runs on the tiny corpus
        assert any(result[s]["va"]["availability"][k]["scored"] for s in ("validation", "test") for k in SELECT)


@pytest.fixture(scope="module")
def small(tiny_cache, tmp_path_factory):
    return compared_small(tiny_cache, tmp_path_factory)


def test_compare_scores_every_run_on_each_subset(small):
    params, result = small
    for split in ("validation", "test"):
        for r in result["runs"]:
            preds = load_predictions(params.path(params.compare.runs) / r["folder"])[split, "full"]
            preds = {n: p["va"] for n, p in preds.items()}
            for subset, (frames, videos, scores) in _expected(params, split, preds).items():
                assert result["corpus"]["availability"][split]["va"][subset] == {"frames": frames, "videos": videos}
                row = r["availability"][split]["va"][subset]
                assert (row["frames"], row["scored"]) == (frames, frames >= 10)
                if row["scored"]:
                    for k, v in scores.items():
                        assert row[k] == pytest.approx(v, abs=2e-6), (r["folder"], split, subset, k)


def _plural(n):
    return f"{n} video" + ("" if n == 1 else "s")


def test_compare_summarises_subsets_over_seeds_with_paired_differences(small):
    _, result = small
    res = result["results"]
    scored = 0
    for split in ("validation", "test"):
        for subset in SELECT:
            facts = result["corpus"]["availability"][split]["va"][subset]
            s = res["only:audio"]["availability"][split]["va"][subset]
            if facts["frames"] < 10:
                assert s == {**facts, "scored": False, "why": f"{facts['frames']} valid frames, fewer than 10"}
                continue
            scored += 1
            per_seed = {h: [r["availability"][split]["va"][subset]["ccc_mean"] for r in result["runs"]
                            if r["head"] == h] for h in ("concat", "only:audio")}
            assert s["scored"] and s["ccc_mean"]["mean"] == pytest.approx(np.mean(per_seed["only:audio"]), abs=2e-6)
            assert s["ccc_mean"]["std"] == pytest.approx(np.std(per_seed["only:audio"], ddof=1), abs=2e-6)
            vs = s["vs_reference"]
            assert vs["per_seed"] == pytest.approx(np.subtract(per_seed["only:audio"], per_seed["concat"]), abs=4e-6)
            # one video per split in the tiny corpus: the bootstrap is shown but indicative
            assert vs["videos"]["n"] == facts["videos"] == 1 and vs["videos"]["indicative"] is True
            assert "vs_reference" not in res["concat"]["availability"][split]["va"][subset]
    assert scored >= 2  # at least the frames with every stream, on both splits


def test_findings_name_each_subset_winner_and_cite_the_bootstrap_only_with_enough_videos(small):
    params, result = small
    text = params.path(params.compare.table).read_text()
    assert text == markdown(result)
    assert "- Validation, va CCC mean, bootstrap over videos: not used (1 video, fewer than " \
           "compare.min_videos_bootstrap = 8" in text
    marked = re.compile(r"\] †")  # a table cell marked indicative: no verdict mark
    assert not re.search(r"bootstrap over videos: better", text) and marked.search(text)
    assert all(vs["videos"]["verdict"] == "indicative" for *_, vs in paired_blocks(result))
    res = result["results"]
    for split in ("validation", "test"):
        for subset, what in result["subsets"].items():
            facts = result["corpus"]["availability"][split]["va"][subset]
            line = next(x for x in text.splitlines() if x.startswith(
                f"- {split.capitalize()}, va, {what} ({facts['frames']} frames, {_plural(facts['videos'])})"))
            if facts["frames"] < 10:
                assert line.endswith(f": not scored: {facts['frames']} valid frames, fewer than 10.")
                continue
            best = max(("concat", "only:audio"),
                       key=lambda h: res[h]["availability"][split]["va"][subset]["ccc_mean"]["mean"])
            assert f"highest CCC mean `{best}`" in line and "over seeds (" in line and "over videos" not in line
    # with enough videos (flag cleared by hand, annotated again) the same result cites the bootstrap too
    enough = copy.deepcopy(result)
    for r in enough["results"].values():
        for vs in [*(v for by in r.get("vs_reference", {}).values() for v in by.values()),
                   *(row["vs_reference"] for by in r["availability"].values() for subs in by.values()
                     for row in subs.values() if "vs_reference" in row)]:
            vs["videos"]["indicative"] = False
    annotate(enough, 2.0)
    text = markdown(enough)
    assert "- Validation, va CCC mean, bootstrap over videos: better than `concat`:" in text and not marked.search(text)
    assert re.search(r"- Validation, va, every stream present .* over seeds \((better|worse|no difference shown|within "
                     r"rerun noise)[^)]*\); .* over videos", text)
    # read back without the bootstrap's draws: unadjusted bootstrap verdicts, and the tables say so
    for *_, vs in paired_blocks(enough):
        assert vs["videos"]["p_holm"] is None and vs["videos"]["verdict"] in VERDICTS
    assert "the intervals over videos are not Holm-adjusted: annotated again without their draws" in text


def test_unscored_subsets_and_the_availability_figure(small, tiny_cache, tmp_path):
    params, _ = small
    strict = params_for(tiny_cache, params.path(params.compare.runs).parent, min_subset_frames=50)
    strict = strict.updated(compare={"metrics": str(tmp_path / "compare.json"), "table": str(tmp_path / "compare.md")},
                            report={"out": str(tmp_path / "reports")})
    result = run(strict)
    assert result["timing"]["trained"] == 0  # the same runs, only scored again
    text = markdown(result)
    few = 0
    for split in ("validation", "test"):
        for subset, what in result["subsets"].items():
            facts = result["corpus"]["availability"][split]["va"][subset]
            row = result["results"]["only:audio"]["availability"][split]["va"][subset]
            assert row["scored"] == (facts["frames"] >= 50)
            if not row["scored"]:
                few += 1
                why = f"{facts['frames']} valid frames, fewer than 50"
                assert row == {**facts, "scored": False, "why": why}
                assert f"- {split.capitalize()}, va, {what} ({facts['frames']} frames, {_plural(facts['videos'])}): " \
                       f"not scored: {why}." in text
    assert few >= 1  # the tiny corpus's face-less stretch is about a second long
    index = build_report(strict)
    figure = tmp_path / "reports/figures/availability_va.png"
    pixels = image.imread(figure)
    assert pixels.shape[0] > 100 and pixels[..., :3].std() > 0.05
    assert "(figures/availability_va.png)" in index.read_text()


def test_a_subset_whose_resamples_all_lack_a_metric_is_an_error_not_a_silent_interval():
    """Two one-frame videos: every resample draws one frame per video, both labels equal the
    predictions' constant, so no draw has a defined CCC."""
    labels = {n: (np.full((1, 2), 0.5, np.float32), np.ones(1, bool)) for n in ("v1", "v2")}
    preds = [{n: np.full((1, 2), 0.5, np.float32) for n in labels}]
    with pytest.raises(ValueError, match="no bootstrap resample of the 2 videos has a defined metric"):
        bootstrap_videos([Part(build_task("va"), preds, preds, labels)], n_boot=100)


def test_report_refuses_a_comparison_from_before_the_tasks(small, tmp_path):
    params, result = small
    old = {k: v for k, v in result.items() if k not in ("tasks", "streams")}
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(InputError, match="written by an older `jmt compare`"):
        load_comparison(params.updated(compare={"metrics": str(tmp_path / "old.json")}))
    assert load_comparison(params)["subsets"] == result["subsets"]
