"""Scores by modality availability: the frames where both streams are present, where the face
is missing and where the audio is missing, from the cache's own masks. Expected values are
computed here with numpy from the masks and predictions, not by the code under test."""

import copy
import re

import h5py
import numpy as np
import pytest
from matplotlib import image

from pipeline import cache
from pipeline.report import build_report
from pipeline.stage2.compare import load_predictions, markdown
from pipeline.stage2.data import Entry, load_split
from pipeline.stage2.checkpoints import load as load_checkpoint
from pipeline.stage2.evaluate import evaluate_model, postprocess
from pipeline.stage2.protocol import availability_of, labels_of, predict_split, score_subsets

from .faked_compare import compared_small, params_for, run


def np_ccc(x, y):
    """Population-moment CCC, written out."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    cov = np.mean((x - x.mean()) * (y - y.mean()))
    return 2 * cov / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


def np_scores(pred, y):
    v, a = np_ccc(pred[:, 0], y[:, 0]), np_ccc(pred[:, 1], y[:, 1])
    return {"ccc_valence": v, "ccc_arousal": a, "ccc_mean": (v + a) / 2}


def _entry(name, n, visual, audio, valid, rng):
    arrays = {"visual_mask": visual, "audio_mask": audio, "label_mask": valid,
              "labels": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
              "audio": np.zeros((n, 3), np.float32), "visual": np.zeros((n, 3), np.float32)}
    return Entry(name, None, "validation", n, 30.0, arrays)


@pytest.fixture()
def hand_built():
    """v1: 40 frames, no face on 10-19, no audio on 15-17 and 25-29 (so 15-17 have neither),
    labels -5 on 0-2; v2: 30 frames with both streams throughout."""
    rng = np.random.default_rng(0)
    visual, audio, valid = np.ones(40, bool), np.ones(40, bool), np.ones(40, bool)
    visual[10:20], audio[15:18], audio[25:30], valid[:3] = False, False, False, False
    entries = [_entry("v1", 40, visual, audio, valid, rng),
               _entry("v2", 30, np.ones(30, bool), np.ones(30, bool), np.ones(30, bool), rng)]
    preds = {"v1": rng.normal(0, 0.5, (40, 2)), "v2": rng.normal(0, 0.5, (30, 2))}
    return entries, preds


def test_subsets_hold_the_right_frames_and_score_like_numpy(hand_built):
    entries, preds = hand_built
    labels = labels_of(entries)
    out = score_subsets(preds, labels, availability_of(entries), min_frames=5)
    y1, y2 = labels["v1"][0], labels["v2"][0]
    both1 = np.r_[3:10, 20:25, 30:40]
    expected = {
        "both": (np.concatenate([preds["v1"][both1], preds["v2"]]), np.concatenate([y1[both1], y2]), 2),
        "no_face": (preds["v1"][10:20], y1[10:20], 1),                  # v2 has no such frame: not a video here
        "no_audio": (preds["v1"][np.r_[15:18, 25:30]], y1[np.r_[15:18, 25:30]], 1),
    }
    assert set(out) == set(expected)
    for subset, (p, y, videos) in expected.items():
        row = out[subset]
        assert (row["frames"], row["videos"], row["scored"]) == (len(y), videos, True), subset
        for k, v in np_scores(p, y).items():
            assert row[k] == pytest.approx(v, abs=1e-9), (subset, k)
    assert out["both"]["frames"] == 7 + 5 + 10 + 30 and out["no_face"]["frames"] == 10 and out["no_audio"]["frames"] == 8


def test_a_subset_with_too_few_frames_is_not_scored(hand_built):
    entries, preds = hand_built
    out = score_subsets(preds, labels_of(entries), availability_of(entries), min_frames=9)
    assert out["no_audio"] == {"frames": 8, "videos": 1, "scored": False, "why": "8 valid frames, fewer than 9"}
    assert out["no_face"]["scored"] and "ccc_mean" not in out["no_audio"]


def _masks(params, split):
    """name -> (visual_mask, audio_mask, label_mask, labels) read straight from the cache files."""
    folder = params.path(params.embed.out)
    out = {}
    for name in cache.entries(folder):
        with h5py.File(cache.entry_path(folder, name)) as f:
            if f.attrs["split"] == split:
                out[name] = tuple(f[k][...] for k in ("visual_mask", "audio_mask", "label_mask", "labels"))
    return out


SELECT = {"both": lambda v, a: v & a, "no_face": lambda v, a: ~v, "no_audio": lambda v, a: ~a}


def _expected(params, split, preds):
    """subset -> (frames, videos, numpy scores or None) from the cache's masks and predictions."""
    out = {}
    for subset, pick in SELECT.items():
        p, y, videos = [], [], 0
        for name, (v, a, valid, labels) in _masks(params, split).items():
            keep = pick(v, a) & valid
            videos += bool(keep.any())
            p.append(preds[name][keep])
            y.append(labels[keep])
        p, y = np.concatenate(p), np.concatenate(y)
        out[subset] = (len(y), videos, np_scores(p, y) if len(y) >= 2 else None)
    return out


@pytest.mark.parametrize("least", [50, 10])  # the default, and low enough to score the tiny corpus's subsets
def test_evaluate_scores_each_subset_of_each_split(trained, least):
    result = evaluate_model(trained, write=False, min_subset_frames=least)
    model, _ = load_checkpoint(trained.path(trained.train.out), trained.path(trained.embed.out))
    window = trained.train.window
    for split in ("validation", "test"):
        entries = load_split(trained.path(trained.embed.out), split, preload_max_mb=100)
        preds = {n: postprocess(p, trained.evaluate)
                 for n, p in predict_split(model, entries, window, window // 2, torch_cpu()).items()}
        got = result[split]["availability"]
        for subset, (frames, videos, scores) in _expected(trained, split, preds).items():
            assert (got[subset]["frames"], got[subset]["videos"]) == (frames, videos), (split, subset)
            assert got[subset]["scored"] == (frames >= least)
            if got[subset]["scored"]:
                for k, v in scores.items():
                    assert got[subset][k] == pytest.approx(v, abs=1e-6), (split, subset, k)
            else:
                assert got[subset]["why"] == f"{frames} valid frames, fewer than {least}"
    if least == 10:  # low enough that the scored path runs on the tiny corpus
        assert any(result[s]["availability"][k]["scored"] for s in ("validation", "test") for k in SELECT)


def torch_cpu():
    import torch

    return torch.device("cpu")


@pytest.fixture(scope="module")
def small(tiny_cache, tmp_path_factory):
    return compared_small(tiny_cache, tmp_path_factory)


def test_compare_scores_every_run_on_each_subset(small):
    params, result = small
    for split in ("validation", "test"):
        for r in result["runs"]:
            preds = load_predictions(params.path(params.compare.runs) / r["folder"])[split, "full"]
            for subset, (frames, videos, scores) in _expected(params, split, preds).items():
                assert result["corpus"]["availability"][split][subset] == {"frames": frames, "videos": videos}
                row = r["availability"][split][subset]
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
            facts = result["corpus"]["availability"][split][subset]
            s = res["audio_only"]["availability"][split][subset]
            if facts["frames"] < 10:
                assert s == {**facts, "scored": False, "why": f"{facts['frames']} valid frames, fewer than 10"}
                continue
            scored += 1
            per_seed = {h: [r["availability"][split][subset]["ccc_mean"] for r in result["runs"] if r["head"] == h]
                        for h in ("concat", "audio_only")}
            assert s["scored"] and s["ccc_mean"]["mean"] == pytest.approx(np.mean(per_seed["audio_only"]), abs=2e-6)
            assert s["ccc_mean"]["std"] == pytest.approx(np.std(per_seed["audio_only"], ddof=1), abs=2e-6)
            vs = s["vs_reference"]
            assert vs["per_seed"] == pytest.approx(np.subtract(per_seed["audio_only"], per_seed["concat"]), abs=4e-6)
            # one video per split in the tiny corpus: the bootstrap is shown but indicative
            assert vs["videos"]["n"] == facts["videos"] == 1 and vs["videos"]["indicative"] is True
            assert "vs_reference" not in res["concat"]["availability"][split][subset]
    assert scored >= 2  # at least the frames with both streams, on both splits


def test_findings_name_each_subset_winner_and_cite_the_bootstrap_only_with_enough_videos(small):
    params, result = small
    text = params.path(params.compare.table).read_text()
    assert text == markdown(result)
    assert "- Validation, bootstrap over videos: not used (1 video, fewer than compare.min_videos_bootstrap = 8" \
        in text
    marked = re.compile(r"\] (\* )?†")  # a table cell marked indicative
    assert not re.search(r"bootstrap over videos: above", text) and marked.search(text)
    res = result["results"]
    for split in ("validation", "test"):
        for subset, what in result["subsets"].items():
            facts = result["corpus"]["availability"][split][subset]
            line = next(x for x in text.splitlines() if x.startswith(
                f"- {split.capitalize()}, {what} ({facts['frames']} frames, {_plural(facts['videos'])})"))
            if facts["frames"] < 10:
                assert line.endswith(f": not scored: {facts['frames']} valid frames, fewer than 10.")
                continue
            best = max(("concat", "audio_only"),
                       key=lambda h: res[h]["availability"][split][subset]["ccc_mean"]["mean"])
            assert f"highest CCC mean `{best}`" in line and "over seeds (" in line and "over videos" not in line
    # with enough videos (flag cleared by hand) the same result cites the bootstrap too
    enough = copy.deepcopy(result)
    for r in enough["results"].values():
        for vs in [*r.get("vs_reference", {}).values(),
                   *(row["vs_reference"] for subs in r["availability"].values() for row in subs.values()
                     if "vs_reference" in row)]:
            vs["videos"]["indicative"] = False
    text = markdown(enough)
    assert "- Validation, bootstrap over videos: above `concat`:" in text and not marked.search(text)
    assert re.search(r"- Validation, face and audio .* over seeds \(((in|ex)cludes 0|within rerun noise)[^)]*\); "
                     r".* over videos", text)


def test_unscored_subsets_and_the_availability_figure(small, tiny_cache, tmp_path):
    params, _ = small
    strict = params_for(tiny_cache, params.path(params.compare.runs).parent, min_subset_frames=50)
    strict = strict.model_copy(update={"compare": strict.compare.model_copy(update={
        "metrics": str(tmp_path / "compare.json"), "table": str(tmp_path / "compare.md")})})
    strict._root = params.root
    result = run(strict)
    assert result["timing"]["trained"] == 0  # the same runs, only scored again
    text = markdown(result)
    few = 0
    for split in ("validation", "test"):
        for subset, what in result["subsets"].items():
            facts = result["corpus"]["availability"][split][subset]
            row = result["results"]["audio_only"]["availability"][split][subset]
            assert row["scored"] == (facts["frames"] >= 50)
            if not row["scored"]:
                few += 1
                why = f"{facts['frames']} valid frames, fewer than 50"
                assert row == {**facts, "scored": False, "why": why}
                assert f"- {split.capitalize()}, {what} ({facts['frames']} frames, {_plural(facts['videos'])}): " \
                       f"not scored: {why}." in text
    assert few >= 1  # the tiny corpus's face-less stretch is about a second long
    index = build_report(params)
    figure = params.path(params.report.out) / "figures/availability.png"
    pixels = image.imread(figure)
    assert pixels.shape[0] > 100 and pixels[..., :3].std() > 0.05
    assert "(figures/availability.png)" in index.read_text()


def test_a_subset_whose_resamples_all_lack_a_ccc_is_an_error_not_a_silent_interval():
    """Two one-frame videos: every resample draws one frame per video, both labels equal the
    predictions' constant, so no draw has a defined CCC."""
    from pipeline.stats import bootstrap_videos

    labels = {n: (np.full((1, 2), 0.5, np.float32), np.ones(1, bool)) for n in ("v1", "v2")}
    preds = [{n: np.full((1, 2), 0.5, np.float32) for n in labels}]
    with pytest.raises(ValueError, match="no bootstrap resample of the 2 videos has a defined CCC"):
        bootstrap_videos(preds, preds, labels, n_boot=100)


def test_report_refuses_a_comparison_from_before_the_subsets(small, tmp_path):
    import json

    from pipeline.errors import InputError
    from pipeline.report import load_comparison

    params, result = small
    old = {k: v for k, v in result.items() if k not in ("subsets", "min_videos_bootstrap")}
    (tmp_path / "old.json").write_text(json.dumps(old))
    moved = params.model_copy(update={"compare": params.compare.model_copy(update={"metrics": str(tmp_path / "old.json")})})
    moved._root = params.root
    with pytest.raises(InputError, match="written by an older `jmt compare`"):
        load_comparison(moved)
    assert load_comparison(params)["subsets"] == result["subsets"]
