"""pipeline/stage2/verdicts.py: rerun margins, the four verdicts, and how a real comparison
carries them into compare.json and its findings, one group per (split, key, subset) with key a
task or the multi-task `score`. Expected margins are computed here from the formula with numpy
(sqrt(2/n) * k * max(own std, median std of the group))."""

import copy
import json

import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.report import load_comparison
from pipeline.stage2.compare import markdown
from pipeline.stage2.verdicts import annotate, paired_blocks, rerun_margins, verdict

from .faked_compare import compared_small
from .multitask import compared_tasks

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/stage2/conftest.py


def test_margin_is_k_sds_of_a_rerun_change_floored_at_the_median():
    per_seed = {"a": [0.0, 0.01, 0.02], "b": [0.0, 0.0, 0.0], "c": [0.0, 0.04, 0.08]}  # std 0.01, 0, 0.04
    m = rerun_margins(per_seed, 2.0)
    floor = 2 * np.sqrt(2 / 3) * 0.01  # the median std: three seeds that agree do not make a 0 margin
    assert m["a"] == pytest.approx(floor, abs=1e-6) and m["b"] == pytest.approx(floor, abs=1e-6)
    assert m["c"] == pytest.approx(2 * np.sqrt(2 / 3) * 0.04, abs=1e-6)
    assert rerun_margins(per_seed, 1.0)["c"] == pytest.approx(m["c"] / 2, abs=1e-6)
    assert rerun_margins({"a": [0.1], "b": [0.2]}, 2.0) == {"a": None, "b": None}  # one seed: no estimate


@pytest.mark.parametrize(("low", "high", "margin", "expected"), [
    (0.05, 0.09, 0.02, "above"),
    (0.01, 0.09, 0.02, "within noise"),        # excludes 0, but not by the margin
    (-0.09, -0.03, 0.02, "below"),
    (-0.09, -0.01, 0.02, "within noise"),
    (-0.05, 0.05, 0.02, "includes 0"),         # both bounds beyond the margin
    (-0.05, 0.01, 0.02, "within noise"),       # includes 0, one bound inside the margin
    (0.01, 0.09, None, "above"),               # one seed: the plain rule
    (-0.05, 0.01, None, "includes 0"),
    (0.01, 0.09, 0.0, "above"),                # k = 0: the plain rule
    (-0.01, 0.09, 0.0, "includes 0"),
])
def test_verdict_of_an_interval(low, high, margin, expected):
    assert verdict({"low": low, "high": high}, margin) == expected


def _by_formula(stored, k):
    """Checks every paired difference's margin and verdicts against the formula; returns the
    groups (split, key, subset) seen."""
    blocks = list(paired_blocks(stored))
    n = len(stored["seeds"])
    groups = {(s, key, sub) for s, key, sub, _, _ in blocks}
    for split, key, subset, head, vs in blocks:
        group = [np.std(v["per_seed"], ddof=1) for s, kk, sub, _, v in blocks if (s, kk, sub) == (split, key, subset)]
        own = np.std(vs["per_seed"], ddof=1)
        assert vs["margin"] == pytest.approx(k * np.sqrt(2 / n) * max(own, np.median(group)), abs=2e-6)
        for which in ("seeds", "videos"):
            iv, m = vs[which], vs["margin"]
            expected = ("above" if iv["low"] > m else "below" if iv["high"] < -m
                        else "includes 0" if iv["low"] < -m and iv["high"] > m else "within noise")
            assert iv["verdict"] == expected, (split, key, subset, head, which)
    return groups


@pytest.fixture(scope="module")
def small(tiny_cache, tmp_path_factory):
    return compared_small(tiny_cache, tmp_path_factory)


def test_compare_json_carries_margins_and_verdicts_by_the_formula(small):
    params, result = small
    stored = json.loads(params.path(params.compare.metrics).read_text())
    assert stored["rerun_margin"] == params.compare.rerun_margin == 2.0
    groups = _by_formula(stored, params.compare.rerun_margin)
    assert {g[1] for g in groups} == {"va"} and {g[2] for g in groups} >= {"all", "all_streams"}


def test_a_multi_task_comparison_has_a_margin_per_split_key_and_subset(tmp_path_factory):
    params, result = compared_tasks(tmp_path_factory)
    stored = json.loads(params.path(params.compare.metrics).read_text())
    groups = _by_formula(stored, params.compare.rerun_margin)
    subsets = ("all", "all_streams", "no_visual", "no_audio")
    # each task overall and on every (scored) availability subset; the score overall only
    assert groups == {(s, t, sub) for s in ("validation", "test") for t in ("va", "expr", "au") for sub in subsets} | \
        {(s, "score", "all") for s in ("validation", "test")}
    heads = {h for *_, h, _ in paired_blocks(stored)}
    assert heads == set(stored["heads"]) - {stored["reference"]}
    # the margins of one group are not those of another: each group has its own floor
    va, score = (stored["results"]["concat"]["vs_reference"]["validation"][k]["margin"] for k in ("va", "score"))
    assert va != score


def test_findings_state_only_verdicts_beyond_the_margin(small):
    _, result = small
    # only:audio's differences from concat, made to sit just inside / well beyond the margin
    near, far = copy.deepcopy(result), copy.deepcopy(result)
    for r, shift in ((near, 0.5), (far, 3.0)):
        vs = r["results"]["only:audio"]["vs_reference"]["validation"]["va"]
        m = vs["margin"]
        vs["seeds"].update(low=shift * m, high=shift * m + 0.1, mean=shift * m + 0.05)
        annotate(r, 2.0)
    start = "- Validation, va CCC mean, t over seeds"
    line = lambda text: next(x for x in text.splitlines() if x.startswith(start))  # noqa: E731
    assert line(markdown(near)).startswith("- Validation, va CCC mean, t over seeds: above `concat`: none; below: "
                                           "none; within rerun noise (no verdict): `only:audio`")
    assert line(markdown(far)).startswith("- Validation, va CCC mean, t over seeds: above `concat`: `only:audio`; "
                                          "below: none; within rerun noise (no verdict): none")
    table = markdown(near).split("Paired difference from `concat` (va CCC mean")[1].split("\n\n")[1]
    assert "| `only:audio` | +" in table and "~" in table.split("| `only:audio` |")[1].split("|")[1]


def test_findings_per_key_of_a_multi_task_comparison(tmp_path_factory):
    """A verdict on one key (expr) is stated on that key's line only, not on the others'."""
    _, result = compared_tasks(tmp_path_factory)
    r = copy.deepcopy(result)
    vs = r["results"]["concat"]["vs_reference"]["validation"]["expr"]
    vs["seeds"].update(low=3 * vs["margin"], high=3 * vs["margin"] + 0.1, mean=3 * vs["margin"] + 0.05)
    annotate(r, 2.0)
    text = markdown(r)
    order = sorted(r["heads"], key=lambda h: -r["results"][h]["validation"]["score"]["full"]["score"]["mean"])
    for key, words in (("va", "va CCC mean"), ("expr", "expr F1"), ("au", "au F1"), ("score", "score")):
        line = next(x for x in text.splitlines() if x.startswith(f"- Validation, {words}, t over seeds"))
        said = {h: r["results"][h]["vs_reference"]["validation"][key]["seeds"]["verdict"]
                for h in order if h != "jmt"}
        above = [h for h, v in said.items() if v == "above"]
        assert line.split("above `jmt`: ")[1].split(";")[0] == (", ".join(f"`{h}`" for h in above) or "none"), key
        assert ("concat" in above) == (key == "expr" or result["results"]["concat"]["vs_reference"]["validation"][key]
                                       ["seeds"]["verdict"] == "above"), key


def test_report_refuses_a_comparison_without_margins(small, tmp_path):
    """A compare.json without rerun margins and verdicts predates the tasks and streams too:
    the report asks for a new comparison instead of guessing."""
    params, result = small
    old = copy.deepcopy(result)
    del old["rerun_margin"]
    for *_, vs in paired_blocks(old):
        del vs["margin"]
        for which in ("seeds", "videos"):
            del vs[which]["verdict"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(InputError, match="has no rerun margins"):
        load_comparison(params.updated(compare={"metrics": str(tmp_path / "old.json")}))
    assert load_comparison(params) == json.loads(json.dumps(result))


def test_a_subset_top_head_is_called_a_verdict_only_beyond_the_margin(small):
    _, result = small
    res = result["results"]
    subset = next(s for s in result["subsets"] if res["only:audio"]["availability"]["validation"]["va"][s]["scored"])
    label = "- Validation, va, " + result["subsets"][subset]
    for low, said in ((None, False), (0.5, True)):  # the bounds as they are; then far above the margin
        r = copy.deepcopy(result)
        rows = {h: r["results"][h]["availability"]["validation"]["va"][subset] for h in ("concat", "only:audio")}
        if low is not None:  # only:audio made the top head, clearly above concat
            rows["only:audio"]["ccc_mean"]["mean"] = rows["concat"]["ccc_mean"]["mean"] + 0.6
            for which in ("seeds", "videos"):
                rows["only:audio"]["vs_reference"][which].update(low=low, high=low + 0.2, mean=low + 0.1)
            annotate(r, 2.0)
        line = next(x for x in markdown(r).splitlines() if x.startswith(label))
        top, other = sorted(rows, key=lambda h: -rows[h]["ccc_mean"]["mean"])
        vs = rows["only:audio"]["vs_reference"]
        stated = vs["seeds"]["verdict"] == ("above" if top == "only:audio" else "below")
        assert stated == said or low is None
        assert ("Not a verdict: no interval puts `only:audio`" in line) == (not stated), line


def test_one_seed_gives_the_plain_rule_and_says_so(small):
    _, result = small
    r = copy.deepcopy(result)
    r["seeds"] = r["seeds"][:1]
    for *_, vs in paired_blocks(r):
        vs["per_seed"], vs["seeds"] = vs["per_seed"][:1], None
    annotate(r, 2.0)
    assert all(vs["margin"] is None for *_, vs in paired_blocks(r))
    for *_, vs in paired_blocks(r):
        iv = vs["videos"]
        assert iv["verdict"] == ("above" if iv["low"] > 0 else "below" if iv["high"] < 0 else "includes 0")
    text = markdown(r)
    assert "- One seed: no estimate of the noise a rerun makes (no rerun margin)" in text
    assert "beyond the rerun margin" not in text and "within rerun noise:" not in text
