"""pipeline/stage2/compare/survival.py: every verdict of a compare.json read flat, the status of
two comparisons' verdicts on each row, the side-by-side check of bench/perturbation.py and the
survival of the default comparison's verdicts under tuning, on hand-built compare.json dicts of
the current layout (results[head][split][key][condition][metric], vs_reference[split][key],
availability[split][task][subset]; key a task or `score`)."""

import copy

import numpy as np
import pytest

from pipeline.stage2.compare.survival import compare_verdicts, flat_verdicts, survival, verdict_status
from pipeline.stage2.verdicts import annotate


def _iv(mean, low, high, n=3, indicative=None, draws=None):
    iv = {"mean": mean, "low": low, "high": high, "n": n, "excludes_zero": low > 0 or high < 0}
    if indicative is not None:
        iv["indicative"] = indicative
    if draws is not None:   # a bootstrap's transient draws, as `jmt compare` hands them to `annotate`
        iv["_draws"] = draws
    return iv


def _summary(metric, mean):
    return {metric: {"mean": mean, "std": 0.01, "n": 3}}


def _vs(seeds, videos, per_seed):
    return {"seeds": seeds, "videos": videos, "per_seed": per_seed}


def _comparison():
    """A compare.json cut down to what the verdicts read: va only, reference `a`, heads b and c,
    one split, one availability subset (scored) and one not scored, 95 % intervals. Per-seed
    differences with std 0.01 (b) and 0.02 (c): margins 2 * sqrt(2/3) * 0.015 (the median) =
    0.0245 for b and 2 * sqrt(2/3) * 0.02 = 0.0327 for c.

    On all frames over seeds (one Holm family of two): b [0.03, 0.07], p 0.032 of "within
    +-0.0245"; c [-0.13, -0.07], p 0.011 of "within +-0.0327"; Holm: c 0.021, b max(0.021, 0.032):
    both below 0.05, b better, c worse. c's bootstrap over videos is used (its draws span
    [-0.205, -0.005], percentile interval [-0.2, -0.01]: within c's margin of 0), b's is
    indicative. On the subset (another family): b [-0.03, 0.05] p 1, c [-0.30, -0.14] p 0.0097."""
    def head(full, both, vs=None, vs_both=None):
        avail = {"all_streams": {"scored": True, "frames": 500, "videos": 3, **_summary("ccc_mean", both)},
                 "no_visual": {"scored": False, "frames": 12, "videos": 1, "why": "12 valid frames, fewer than 50"}}
        if vs_both:
            avail["all_streams"]["vs_reference"] = vs_both
        out = {"validation": {"va": {"full": _summary("ccc_mean", full)}},
               "availability": {"validation": {"va": avail}}}
        if vs:
            out["vs_reference"] = {"validation": {"va": vs}}
        return out

    b_seeds, c_seeds = [0.04, 0.05, 0.06], [-0.12, -0.10, -0.08]
    return {
        "tasks": ["va"], "streams": ["visual", "audio"], "main_metric": {"va": "ccc_mean"}, "confidence": 0.95,
        "heads": ["a", "b", "c"], "reference": "a", "subsets": {"all_streams": "...", "no_visual": "..."},
        "results": {
            "a": head(0.80, 0.82),
            "b": head(0.85, 0.84, _vs(_iv(0.05, 0.03, 0.07), _iv(0.05, 0.02, 0.08, 3, True), b_seeds),
                      _vs(_iv(0.02, -0.03, 0.05), _iv(0.02, 0.00, 0.04, 3, True), b_seeds)),
            "c": head(0.70, 0.60, _vs(_iv(-0.10, -0.13, -0.07),
                                      _iv(-0.1, -0.2, -0.01, 8, False, np.linspace(-0.205, -0.005, 401)), c_seeds),
                      _vs(_iv(-0.22, -0.30, -0.14), _iv(-0.2, -0.3, -0.1, 3, True), c_seeds)),
        },
    }


def _two_tasks():
    """_comparison with a second task (expr, F1) and their sum `score`: b better than a on the
    score by far (p 0.004 of "within +-0.0163", 0.008 after Holm over b and c), c worse; expr's
    subsets both unscored."""
    r = _comparison()
    r["tasks"], r["main_metric"]["expr"] = ["va", "expr"], "f1"
    for h, (expr, score) in {"a": (0.30, 1.10), "b": (0.25, 1.10 + 0.2), "c": (0.40, 1.10 - 0.2)}.items():
        res = r["results"][h]
        res["validation"]["expr"] = {"full": _summary("f1", expr)}
        res["validation"]["score"] = {"full": _summary("score", score)}
        res["availability"]["validation"]["expr"] = {
            s: {"scored": False, "frames": 3, "videos": 1, "why": "3 valid frames, fewer than 50"}
            for s in ("all_streams", "no_visual")}
        if h != "a":
            sign = 1 if h == "b" else -1
            res["vs_reference"]["validation"]["expr"] = _vs(_iv(-sign * 0.1, -0.3, 0.2), _iv(0, -0.2, 0.2, 3, True),
                                                            [0.0, 0.01, 0.02])
            res["vs_reference"]["validation"]["score"] = _vs(_iv(sign * 0.2, sign * 0.2 - 0.05, sign * 0.2 + 0.05),
                                                             _iv(sign * 0.2, sign * 0.1, sign * 0.3, 3, True),
                                                             [sign * 0.19, sign * 0.2, sign * 0.21])
    return r


def test_verdicts_read_every_interval_with_its_margin_and_the_descriptive_rows():
    v = flat_verdicts(_comparison())
    assert v["validation/va/ranking"] == {"verdict": "b > a > c", "used": True, "kind": "descriptive"}
    assert v["validation/va/all_streams/best"]["verdict"] == "b"
    assert v["validation/va/no_visual/best"] == {"verdict": "not scored", "used": False, "kind": "descriptive"}
    b = v["validation/va/all/b/seeds"]
    assert (b["verdict"], b["used"], b["low"], b["high"]) == ("better", True, 0.03, 0.07)
    assert b["margin"] == pytest.approx(2 * np.sqrt(2 / 3) * 0.015, abs=1e-6)
    assert v["validation/va/all/c/seeds"]["verdict"] == "worse"
    # the video bootstrap with too few videos gets no verdict, and the findings do not use it
    assert v["validation/va/all/b/videos"] == {"verdict": "indicative", "used": False, "kind": "interval",
                                               "low": 0.02, "high": 0.08, "margin": b["margin"]}
    # c's bootstrap, from its draws: p 0.28 of "within +-0.0327", its high bound -0.01 inside
    assert (v["validation/va/all/c/videos"]["verdict"], v["validation/va/all/c/videos"]["used"]) == \
        ("within rerun noise", True)
    assert v["validation/va/all_streams/b/seeds"]["verdict"] == "no difference shown"  # [-0.03, 0.05]: beyond +-0.0245
    assert v["validation/va/all_streams/c/seeds"]["verdict"] == "worse"
    assert v["validation/va/no_visual/c/videos"] == {"verdict": "n/a", "used": False, "kind": "interval"}
    assert len(v) == 1 + 2 + 2 * 2 * 3  # ranking, two subset winners, 2 heads x 2 kinds x (all + 2 subsets)
    # no margin: c's bootstrap clears 0 (every draw below it)
    plain = flat_verdicts(_comparison(), 0)
    assert plain["validation/va/all/c/videos"]["verdict"] == "worse"
    assert plain["validation/va/all/b/videos"]["verdict"] == "indicative"
    # Holm's correction over the family: c over seeds [-0.15, -0.05] clears its margin on its
    # own (p 0.029) as b does (p 0.032), but over the two each p is 0.057: neither is shown,
    # though the plain check of the bounds against the margins would state both
    wider = _comparison()
    wider["results"]["c"]["vs_reference"]["validation"]["va"]["seeds"] = _iv(-0.10, -0.15, -0.05)
    v = flat_verdicts(wider)
    assert v["validation/va/all/b/seeds"]["verdict"] == v["validation/va/all/c/seeds"]["verdict"] == \
        "no difference shown"
    assert (v["validation/va/all/b/seeds"]["low"], v["validation/va/all/c/seeds"]["high"]) == (0.03, -0.05)


def test_verdicts_keep_a_comparisons_own_verdicts_unless_the_margin_differs():
    stored = annotate(_comparison(), 2.0)   # what `jmt compare` writes: families, no draws
    assert "families" in stored and "_draws" not in stored["results"]["c"]["vs_reference"]["validation"]["va"]["videos"]
    stored["results"]["b"]["vs_reference"]["validation"]["va"]["seeds"]["verdict"] = "worse"   # read, not redone
    assert flat_verdicts(stored)["validation/va/all/b/seeds"]["verdict"] == "worse"
    assert flat_verdicts(stored, 2.0)["validation/va/all/b/seeds"]["verdict"] == "worse"
    assert flat_verdicts(stored, 1.0)["validation/va/all/b/seeds"]["verdict"] == "better"


def test_with_several_tasks_every_key_names_its_task_or_the_score():
    v = flat_verdicts(_two_tasks())
    assert {k.split("/")[1] for k in v} == {"va", "expr", "score"}
    assert v["validation/score/ranking"]["verdict"] == "b > a > c"                # by the score, not by va
    assert v["validation/expr/ranking"]["verdict"] == "c > a > b"
    assert (v["validation/score/all/b/seeds"]["verdict"], v["validation/score/all/c/seeds"]["verdict"]) == \
        ("better", "worse")
    assert v["validation/expr/all/b/seeds"]["verdict"] == "no difference shown"
    assert v["validation/expr/all_streams/best"]["verdict"] == "not scored"
    assert v["validation/expr/no_visual/b/seeds"] == {"verdict": "n/a", "used": False, "kind": "interval"}
    assert not any(k.startswith("validation/score/all_streams") for k in v)     # the score has no subsets
    # a verdict that flips on one key is reported under that key alone
    other = _two_tasks()
    other["results"]["b"]["vs_reference"]["validation"]["score"]["seeds"] = _iv(-0.2, -0.25, -0.15)
    diff = compare_verdicts(_two_tasks(), other)
    assert diff["contradicted"] == ["validation/score/all/b/seeds"] and not diff["summary"]["holds"]
    assert diff["weakened"] == diff["withheld"] == []   # score's family is its own: va's verdicts stay


def test_identical_comparisons_agree_everywhere():
    diff = compare_verdicts(_comparison(), _comparison())
    s = diff["summary"]
    assert (s["interval_verdicts"], s["same"], s["withheld"], s["weakened"], s["contradicted"], s["holds"]) == \
        (5, 5, 0, 0, 0, True)   # over seeds: b and c on all frames and on the subset; c's bootstrap
    assert s["plain_rule_changed"] == 0 and s["descriptive_changed"] == [] and s["rankings_same"]
    assert all(r["status"] == "same" for r in diff["rows"])


def _moved(**seeds) -> dict:
    """_comparison with the all-frames intervals over seeds of the heads named moved to [low, high]."""
    other = _comparison()
    for head, (low, high) in seeds.items():
        other["results"][head]["vs_reference"]["validation"]["va"]["seeds"] = _iv((low + high) / 2, low, high)
    return other


def test_a_contradicted_verdict_fails_the_check_a_withheld_one_does_not():
    # b over seeds: [0.03, 0.07] better -> [-0.01, 0.005]: within rerun noise, withheld (c,
    # alone in the family's test now, p 0.021 after Holm: still worse)
    diff = compare_verdicts(_comparison(), _moved(b=(-0.01, 0.005)))
    assert diff["withheld"] == ["validation/va/all/b/seeds"] and diff["contradicted"] == diff["weakened"] == []
    assert diff["summary"]["holds"] and diff["summary"]["plain_rule_changed"] == 1
    # ... -> [-0.06, -0.04]: worse: contradicted
    other = _moved(b=(-0.06, -0.04))
    res = other["results"]
    res["c"]["validation"]["va"]["full"]["ccc_mean"]["mean"] = 0.82                          # ranking b > c > a
    res["a"]["availability"]["validation"]["va"]["all_streams"]["ccc_mean"]["mean"] = 0.90  # subset winner: a
    diff = compare_verdicts(_comparison(), other)
    assert diff["contradicted"] == ["validation/va/all/b/seeds"] and not diff["summary"]["holds"]
    assert diff["weakened"] == diff["withheld"] == []
    assert diff["summary"]["descriptive_changed"] == ["validation/va/all_streams/best", "validation/va/ranking"]
    assert not diff["summary"]["rankings_same"]
    row = next(r for r in diff["rows"] if r["key"] == "validation/va/ranking")
    assert (row["original"], row["perturbed"], row["status"]) == ("b > a > c", "b > c > a", "changed")


def test_a_difference_shown_on_one_side_only_is_weakened_not_contradicted():
    # b over seeds [0.03, 0.07] better -> [-0.05, 0.08]: both bounds beyond the margin of 0, no
    # difference shown: weakened, and the check holds
    diff = compare_verdicts(_comparison(), _moved(b=(-0.05, 0.08)))
    assert diff["weakened"] == ["validation/va/all/b/seeds"] and diff["contradicted"] == diff["withheld"] == []
    s = diff["summary"]
    assert (s["same"], s["weakened"], s["withheld"], s["contradicted"], s["holds"]) == (4, 1, 0, 0, True)
    assert (s["stated_original"], s["stated_perturbed"], s["stated_both_same"]) == (4, 4, 3)
    # b's interval the same on both sides, but c's moved within its margin (withheld): b, alone
    # in Holm's first step now, has p 2 x 0.032 = 0.063 and is not shown any more
    diff = compare_verdicts(_comparison(), _moved(c=(-0.05, 0.02)))
    assert diff["weakened"] == ["validation/va/all/b/seeds"] and diff["withheld"] == ["validation/va/all/c/seeds"]
    assert diff["contradicted"] == [] and diff["summary"]["holds"]
    row = next(r for r in diff["rows"] if r["key"] == "validation/va/all/b/seeds")
    assert (row["original"], row["perturbed"]) == ("better", "no difference shown")
    assert row["bounds"]["original"] == row["bounds"]["perturbed"]


@pytest.mark.parametrize(("a", "b", "status"), [
    ("better", "better", "same"), ("better", "worse", "contradicted"), ("worse", "better", "contradicted"),
    ("better", "no difference shown", "weakened"), ("no difference shown", "worse", "weakened"),
    ("better", "within rerun noise", "withheld"), ("no difference shown", "within rerun noise", "withheld"),
    ("indicative", "worse", "withheld"), ("within rerun noise", "indicative", "withheld"),
    ("better", "n/a", "contradicted"), ("n/a", "within rerun noise", "contradicted"),
    ("indicative", "n/a", "contradicted"), ("no difference shown", "missing", "contradicted"),
    # the words before Holm's correction read as the new ones
    ("above", "better", "same"), ("above", "no difference shown", "weakened"), ("below", "better", "contradicted"),
    ("within noise", "worse", "withheld"), ("includes 0", "better", "weakened"),
])
def test_verdict_status(a, b, status):
    assert verdict_status(a, b) == status
    assert verdict_status(a, b, "descriptive") == ("same" if a == b else "changed")


def test_a_verdict_present_on_one_side_only_is_a_contradiction():
    other = copy.deepcopy(_comparison())
    del other["results"]["b"]["availability"]["validation"]["va"]["all_streams"]["vs_reference"]
    diff = compare_verdicts(_comparison(), other)
    assert diff["contradicted"] == ["validation/va/all_streams/b/seeds"]  # the bootstrap there is not used
    row = next(r for r in diff["rows"] if r["key"] == "validation/va/all_streams/b/videos")
    assert (row["original"], row["perturbed"], row["used"], row["status"]) == \
        ("indicative", "n/a", False, "contradicted")


# ---- survival: the default comparison's verdicts under tuning --------------------------------

B_SEEDS = "validation/va/all/b/seeds"


def test_identical_comparisons_survive_whole():
    out = survival(_comparison(), _comparison())
    assert out["counts"] == {"same": 5, "weakened": 0, "withheld": 0, "contradicted": 0}
    assert out["rows"] == []
    assert out["rankings"] == {"validation/va/ranking": {"default": "b > a > c", "tuned": "b > a > c", "same": True}}


def test_a_reversal_is_contradicted():
    tuned = _moved(b=(-0.06, -0.04))                                   # b: better -> worse
    tuned["results"]["b"]["validation"]["va"]["full"]["ccc_mean"]["mean"] = 0.75   # ranking a > b > c
    out = survival(_comparison(), tuned)
    assert out["rows"] == [{"key": B_SEEDS, "default": "better", "tuned": "worse", "status": "contradicted"}]
    assert out["counts"] == {"same": 4, "weakened": 0, "withheld": 0, "contradicted": 1}
    assert out["rankings"]["validation/va/ranking"] == {"default": "b > a > c", "tuned": "a > b > c", "same": False}


def test_a_difference_no_longer_shown_is_weakened_and_one_in_noise_withheld():
    out = survival(_comparison(), _moved(b=(-0.05, 0.08)))            # b: better -> no difference shown
    assert out["rows"] == [{"key": B_SEEDS, "default": "better", "tuned": "no difference shown",
                            "status": "weakened"}]
    assert out["counts"]["weakened"] == 1 and out["counts"]["contradicted"] == 0
    out = survival(_comparison(), _moved(b=(-0.01, 0.005)))           # b: better -> within rerun noise
    assert [(r["key"], r["status"]) for r in out["rows"]] == [(B_SEEDS, "withheld")]


def test_stated_verdicts_are_counted_in_the_direction_default_to_tuned():
    """`stated` counts better / worse only (never `no difference shown`): held, reversed, no
    longer stated after tuning, and stated only after it."""
    base = survival(_comparison(), _comparison())["stated"]
    assert base["default"] == base["tuned"] == base["held"] and base["reversed"] == base["no_longer"] == base["new"] == 0
    assert base["default"] >= 1   # b over seeds: better
    reversed_ = survival(_comparison(), _moved(b=(-0.06, -0.04)))["stated"]    # b: better -> worse
    assert (reversed_["reversed"], reversed_["held"]) == (1, base["held"] - 1)
    gone = survival(_comparison(), _moved(b=(-0.05, 0.08)))["stated"]          # better -> no difference shown
    assert (gone["no_longer"], gone["new"]) == (1, 0)
    new = survival(_moved(b=(-0.05, 0.08)), _comparison())["stated"]           # no difference shown -> better
    assert (new["new"], new["no_longer"], new["reversed"]) == (1, 0, 0)


def test_a_verdict_lost_on_one_side_is_contradicted():
    tuned = _comparison()
    del tuned["results"]["b"]["availability"]["validation"]["va"]["all_streams"]["vs_reference"]
    out = survival(_comparison(), tuned)
    assert out["rows"] == [{"key": "validation/va/all_streams/b/seeds", "default": "no difference shown",
                            "tuned": "n/a", "status": "contradicted"}]


def test_only_the_heads_and_keys_both_have_are_compared():
    tuned = _two_tasks()                                     # a second task and the score: not in default
    tuned["heads"].remove("c")                               # c: not in tuned
    del tuned["results"]["c"]
    out = survival(_comparison(), tuned)
    # b's verdicts on va (its family now b alone: margin 0.0163, still better; the subset's
    # interval still beyond it): the same
    assert out["counts"] == {"same": 2, "weakened": 0, "withheld": 0, "contradicted": 0} and out["rows"] == []
    assert out["rankings"] == {"validation/va/ranking": {"default": "b > a", "tuned": "b > a", "same": True}}


def test_comparisons_with_different_references_are_refused():
    tuned = _comparison()
    tuned["reference"] = "b"
    with pytest.raises(ValueError, match="reference is a, the tuned one's b"):
        survival(_comparison(), tuned)
