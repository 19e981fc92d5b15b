"""pipeline/stage2/verdicts.py: rerun margins, Holm families, the four verdicts, and how a real
comparison carries them into compare.json, its findings and its tables, one group per (split,
key, subset) with key a task or the multi-task `score`; the effect sizes and per-video results
a real comparison writes. Expected margins, p-values and Holm adjustments are recomputed here
from the formulas with numpy and scipy (sqrt(2/n) * k * max(own std, median std of the group);
t = (|mean| - margin) / (s / sqrt n); Holm by sorting)."""

import copy
import json
import re

import numpy as np
import pytest
from scipy import stats

from pipeline.errors import InputError
from pipeline.report import load_comparison
from pipeline.stage2.compare import load_predictions, markdown, run_compare
from pipeline.stage2.verdicts import (MARKS, MEANING, VERDICTS, annotate, paired_blocks, rerun_margins, seeds_needed,
                                      verdict)

from .faked_compare import compared_small
from .multitask import compared_tasks
from .test_availability import _masks, reference
from .test_compare import table_after

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/stage2/conftest.py


def test_margin_is_k_sds_of_a_rerun_change_floored_at_the_median():
    per_seed = {"a": [0.0, 0.01, 0.02], "b": [0.0, 0.0, 0.0], "c": [0.0, 0.04, 0.08]}  # std 0.01, 0, 0.04
    m = rerun_margins(per_seed, 2.0)
    floor = 2 * np.sqrt(2 / 3) * 0.01  # the median std: three seeds that agree do not make a 0 margin
    assert m["a"] == pytest.approx(floor, abs=1e-6) and m["b"] == pytest.approx(floor, abs=1e-6)
    assert m["c"] == pytest.approx(2 * np.sqrt(2 / 3) * 0.04, abs=1e-6)
    assert rerun_margins(per_seed, 1.0)["c"] == pytest.approx(m["c"] / 2, abs=1e-6)
    assert rerun_margins({"a": [0.1], "b": [0.2]}, 2.0) == {"a": None, "b": None}  # one seed: no estimate
    # the floor depends on the heads compared: adding a spread-out head moves a's margin
    assert rerun_margins({**per_seed, "d": [0.0, 0.05, 0.1]}, 2.0)["a"] > m["a"]


@pytest.mark.parametrize(("low", "high", "p_holm", "margin", "expected"), [
    (0.05, 0.09, 0.01, 0.02, "better"),
    (0.05, 0.09, 0.2, 0.02, "no difference shown"),       # clears the margin, not the family correction
    (0.01, 0.09, 0.3, 0.02, "within rerun noise"),        # excludes 0, but not by the margin
    (-0.09, -0.03, 0.01, 0.02, "worse"),
    (-0.09, -0.01, 0.3, 0.02, "within rerun noise"),
    (-0.05, 0.05, 0.6, 0.02, "no difference shown"),      # both bounds beyond the margin
    (-0.05, 0.01, 0.6, 0.02, "within rerun noise"),       # includes 0, one bound inside the margin
    (0.01, 0.09, 0.01, None, "better"),                   # one seed: the plain rule
    (-0.05, 0.01, 0.6, None, "no difference shown"),      # ... never within rerun noise
    (-0.01, 0.09, 0.3, 0.0, "no difference shown"),       # k = 0: the plain rule
    (0.05, 0.09, None, 0.02, "better"),                   # no p (a bootstrap read back): the bounds alone
    (0.01, 0.09, None, 0.02, "within rerun noise"),
])
def test_verdict_of_an_interval(low, high, p_holm, margin, expected):
    assert verdict({"mean": (low + high) / 2, "low": low, "high": high, "p_holm": p_holm}, margin, 0.95) == expected


def test_vocabulary_marks_and_meanings_cover_each_other():
    assert VERDICTS == ("better", "worse", "no difference shown", "within rerun noise")
    assert set(MARKS) == set(MEANING) == set(VERDICTS) and len(set(MARKS.values())) == 4


def test_seeds_needed_by_hand():
    # n = 2: 12.706 * 0.01 / sqrt 2 + 2 * 1 * 0.01 = 0.110; n = 3: 4.303 * 0.01 / sqrt 3 + 2 * 0.816 * 0.01 = 0.0412
    assert seeds_needed(0.05, 0.01, 0.01, 2.0, 0.95) == 3
    assert seeds_needed(-0.05, 0.01, 0.01, 2.0, 0.95) == 3                  # the size of the difference, not its sign
    assert seeds_needed(0.041, 0.01, 0.01, 2.0, 0.95) == 4                 # n = 4: 0.0159 + 0.0141 = 0.0300
    # the floor, not the head's own spread: n = 2: 0.0090 + 0.02; n = 3: 0.0025 + 0.0163 = 0.0188
    assert seeds_needed(0.02, 0.001, 0.01, 2.0, 0.95) == 3
    assert seeds_needed(0.0001, 0.01, 0.01, 2.0, 0.95) is None             # more than 100


def _rule(iv, margin, confidence):
    """The verdict an interval must carry, from its p_holm (or its bounds without one) and margin."""
    m = margin or 0.0
    if iv.get("indicative"):
        return "indicative"
    clears = iv["p_holm"] < 1 - confidence if iv["p_holm"] is not None else iv["low"] > m or iv["high"] < -m
    if clears:
        return "better" if iv["mean"] > 0 else "worse"
    if margin and (-m <= iv["low"] <= m or -m <= iv["high"] <= m):
        return "within rerun noise"
    return "no difference shown"


def _holm(p):
    """Holm by hand: sort, multiply by m, m - 1, ..., carry the running maximum, cap at 1."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    out, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out


def _by_formula(stored, k):
    """Checks every paired difference's margin, p-values, Holm families and verdicts against the
    formulas; returns the groups (split, key, subset) seen."""
    blocks = list(paired_blocks(stored))
    n, c = len(stored["seeds"]), stored["confidence"]
    groups = {(s, key, sub) for s, key, sub, _, _ in blocks}
    families: dict[str, list[dict]] = {}
    for split, key, subset, head, vs in blocks:
        group = [np.std(v["per_seed"], ddof=1) for s, kk, sub, _, v in blocks if (s, kk, sub) == (split, key, subset)]
        own = np.std(vs["per_seed"], ddof=1)
        assert vs["margin"] == pytest.approx(k * np.sqrt(2 / n) * max(own, np.median(group)), abs=2e-6)
        mean, se = np.mean(vs["per_seed"]), own / np.sqrt(n)
        p = 0.0 if se == 0 and abs(mean) > vs["margin"] else min(1, 2 * stats.t.sf((abs(mean) - vs["margin"]) / se,
                                                                                  n - 1))
        assert vs["seeds"]["p"] == pytest.approx(p, abs=1e-3), (split, key, subset, head)
        for which in ("seeds", "videos"):
            iv, m = vs[which], vs["margin"]
            assert iv["verdict"] == _rule(iv, m, c), (split, key, subset, head, which)
            assert "_draws" not in iv
            if iv.get("indicative"):
                assert iv["family"] is None and iv["p_holm"] is None
                continue
            assert iv["family"] == f"{key}/{'all' if subset == 'all' else 'availability'}/{which}"
            families.setdefault(iv["family"], []).append(iv)
            # unadjusted, the p-value says what the bounds say (bounds and margin rounded to 1e-6)
            if min(abs(iv["low"] - m), abs(iv["high"] + m)) > 2e-6:
                assert (iv["p"] < 1 - c) == (iv["low"] > m or iv["high"] < -m), (split, key, subset, head, which)
    assert set(stored["families"]) == set(families)
    for fid, ivs in families.items():
        key, table, kind = fid.split("/")
        assert stored["families"][fid] == {"measure": key, "table": {"all": "all frames"}.get(table, "by availability"),
                                           "kind": kind, "size": len(ivs)}
        assert [iv["p_holm"] for iv in ivs] == pytest.approx(_holm([iv["p"] for iv in ivs]), abs=1e-12)
    return groups


@pytest.fixture(scope="module")
def small(tiny_cache, tmp_path_factory):
    return compared_small(tiny_cache, tmp_path_factory)


@pytest.fixture(scope="module")
def tasks_bootstrapped(tmp_path_factory):
    """The multi-task comparison again (its runs reused), its bootstrap intervals not indicative
    (3 videos a split, min_videos_bootstrap 2): Holm families of both kinds, p-values from draws."""
    params, _ = compared_tasks(tmp_path_factory)
    folder = tmp_path_factory.mktemp("bootstrapped")
    params = params.updated(compare={"min_videos_bootstrap": 2, "metrics": str(folder / "compare.json"),
                                     "table": str(folder / "compare.md")})
    result = run_compare(params)
    assert result["timing"]["trained"] == 0
    return params, result


def test_compare_json_carries_margins_and_verdicts_by_the_formula(small):
    params, result = small
    stored = json.loads(params.path(params.compare.metrics).read_text())
    assert stored["rerun_margin"] == params.compare.rerun_margin == 2.0
    groups = _by_formula(stored, params.compare.rerun_margin)
    assert {g[1] for g in groups} == {"va"} and {g[2] for g in groups} >= {"all", "all_streams"}
    # one non-reference head, two splits: two t intervals in the va table; one video: no bootstrap family
    assert stored["families"]["va/all/seeds"]["size"] == 2 and "va/all/videos" not in stored["families"]


def test_every_interval_of_a_real_comparison_follows_its_holm_p(tasks_bootstrapped):
    params, result = tasks_bootstrapped
    stored = json.loads(params.path(params.compare.metrics).read_text())
    _by_formula(stored, params.compare.rerun_margin)
    # a measure's table: 3 heads x 2 splits per kind; a task by availability: heads x scored subsets x splits
    assert stored["families"]["score/all/videos"]["size"] == stored["families"]["va/all/seeds"]["size"] == 6
    scored = sum(1 for s, key, sub, *_ in paired_blocks(stored) if key == "expr" and sub != "all")
    assert stored["families"]["expr/availability/seeds"]["size"] == scored
    assert all(vs["videos"]["p_holm"] is not None for *_, sub, _, vs in paired_blocks(stored) if sub == "all")


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


def _cells(text, title):
    """head -> {column: cell} of the markdown table after the line starting with `title`."""
    header, rows = table_after(text, title)
    return {h.strip("*`"): dict(zip(header[1:], cells)) for h, cells in rows.items()}


def test_the_tables_marks_are_the_json_verdicts(tasks_bootstrapped):
    params, result = tasks_bootstrapped
    text = params.path(params.compare.table).read_text()
    res, ref = result["results"], result["reference"]
    marks = {**MARKS, "indicative": "†"}
    seen = 0
    for key, words in (("va", "va CCC mean"), ("expr", "expr F1"), ("au", "au F1"), ("score", "score")):
        table = _cells(text, f"Paired difference from `{ref}` ({words}")
        for head, cells in table.items():
            for split, short in (("validation", "val"), ("test", "test")):
                for which, word in (("seeds", "seeds"), ("videos", "videos")):
                    iv = res[head]["vs_reference"][split][key][which]
                    cell = cells[f"{short} over {word}"]
                    assert cell == f"{iv['mean']:+.3f} [{iv['low']:+.3f}, {iv['high']:+.3f}] {marks[iv['verdict']]}"
                    seen += 1
    for task in ("va", "expr", "au"):
        lines = text.splitlines()
        title = f"Paired difference from `{ref}` by availability ({task}"
        i = next(k for k, x in enumerate(lines) if x.startswith(title))
        for line in lines[i + 4:]:   # title, blank, header, separator
            if not line.startswith("|"):
                break
            head, subset, cell = (c.strip() for c in line.strip("|").split("|")[:3])
            vs = res[head.strip("*`")]["availability"]["validation"][task][subset.replace(" ", "_")].get("vs_reference")
            assert cell.endswith(f" {marks[vs['seeds']['verdict']]}") if vs else cell == "n/a"
            seen += 1
    assert seen > 50
    # the legend lists every mark with its meaning; each table names its Holm families
    for v in VERDICTS:
        assert f"{MARKS[v]} = {v}: {MEANING[v]}" in text
    assert "adding a head can move it" in text
    fam = result["families"]["va/all/seeds"]["size"]
    assert f"Holm over the {fam} intervals over seeds; Holm over the " in text


def test_effect_sizes_are_d_z_of_the_seed_and_video_differences(tasks_bootstrapped):
    _, result = tasks_bootstrapped
    res, checked = result["results"], 0
    for head in result["heads"]:
        if head == result["reference"]:
            continue
        for split in ("validation", "test"):
            for key, vs in res[head]["vs_reference"][split].items():
                d = np.array(vs["per_seed"])
                e = vs["effect"]["seeds"]
                assert e is None if d.std(ddof=1) == 0 else \
                    e["d"] == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-2, abs=2e-3)
                if key == "score":
                    assert vs["effect"]["videos"] is None   # a video's score would mix the tasks that label it
                    continue
                diff = np.array([x for x in res[head]["per_video"][split][key]["vs_reference"]["difference"]
                                 if x is not None])
                e = vs["effect"]["videos"]
                if len(diff) < 2:
                    assert e is None
                    continue
                # the stored differences are rounded to 1e-6: d_z of nearly equal ones moves by 1e-3 of itself
                assert e["n"] == len(diff) and e["d"] == pytest.approx(diff.mean() / diff.std(ddof=1), rel=1e-2)
                t = e["d"] * np.sqrt(e["n"])
                assert stats.nct.sf(t, e["n"] - 1, e["low"] * np.sqrt(e["n"])) == pytest.approx(0.025, abs=2e-3)
                checked += 1
    assert checked >= 6


def test_per_video_results_rescore_each_video_from_the_runs(small):
    """Each video's CCC mean per seed from the runs' stored predictions and the cache's labels
    (numpy CCC), the mean over seeds, the differences from the reference and the wins; and the
    per-video table shows them."""
    params, result = small
    res, ref = result["results"], result["reference"]
    for split in ("validation", "test"):
        labels = {n: y for n, (_, _, y) in _masks(params, split).items()}
        for head in result["heads"]:
            pv = res[head]["per_video"][split]["va"]
            assert pv["videos"] == sorted(labels)
            runs = [r for r in result["runs"] if r["head"] == head]
            expected = []
            for r in runs:
                preds = load_predictions(params.path(params.compare.runs) / r["folder"])[split, "full"]
                expected.append([reference("va", preds[n]["va"][(labels[n] != -5).all(1)],
                                           labels[n][(labels[n] != -5).all(1)])["ccc_mean"] for n in pv["videos"]])
            assert np.array(pv["per_seed"]) == pytest.approx(np.array(expected), abs=2e-6)
            assert pv["values"] == pytest.approx(np.mean(expected, 0).tolist(), abs=2e-6)
            if head == ref:
                assert "vs_reference" not in pv
                continue
            ref_values = res[ref]["per_video"][split]["va"]["values"]
            d = np.subtract(pv["values"], ref_values)
            assert pv["vs_reference"]["difference"] == pytest.approx(d.tolist(), abs=4e-6)
            assert (pv["vs_reference"]["wins"], pv["vs_reference"]["losses"], pv["vs_reference"]["ties"]) == \
                (int((d > 1e-9).sum()), int((d < -1e-9).sum()), int((abs(d) <= 1e-9).sum()))
            header, rows = table_after(markdown(result), f"**Per video, va, {split}**")
            assert header[1] == f"**`{ref}`**"                  # the reference first
            cell = rows[f"`{pv['videos'][0]}`"][header.index(f"`{head}`") - 1]
            assert cell == f"{pv['values'][0]:.3f}" + (" ▲" if d[0] > 1e-9 else " ▼" if d[0] < -1e-9 else "")
            tally = rows[f"wins / losses vs `{ref}`"][header.index(f"`{head}`") - 1]
            assert tally.startswith(f"{pv['vs_reference']['wins']} / {pv['vs_reference']['losses']}")


def _seed_line(text, start):
    return next(x for x in text.splitlines() if x.startswith(start))


def test_findings_state_only_verdicts_beyond_the_margin_and_the_family(small):
    _, result = small
    start = "- Validation, va CCC mean, t over seeds"
    said = {}
    # only:audio's differences from concat, made to sit just inside the margin; far beyond it;
    # and just beyond it on both splits, p just under 0.05 each: Holm over the two doubles them
    for case, shift, width in (("near", 0.5, 0.1), ("far", 3.0, 0.001), ("holm", 1.001, 0.1)):
        r = copy.deepcopy(result)
        for split in ("validation", "test"):
            vs = r["results"]["only:audio"]["vs_reference"][split]["va"]
            m = vs["margin"]
            vs["seeds"].update(low=shift * m, high=shift * m + width, mean=shift * m + width / 2)
            if case != "holm":
                break
        annotate(r, 2.0)
        said[case] = (markdown(r), r["results"]["only:audio"]["vs_reference"]["validation"]["va"])
    line, vs = _seed_line(said["near"][0], start), said["near"][1]
    assert line.startswith("- Validation, va CCC mean, t over seeds: better than `concat`: none; worse: none; within "
                           "rerun noise (no verdict): `only:audio`; no difference shown: none")
    assert "(Holm over the 2 intervals over seeds of its table)" in line
    line = _seed_line(said["far"][0], start)
    assert line.startswith("- Validation, va CCC mean, t over seeds: better than `concat`: `only:audio`; worse: none; "
                           "within rerun noise (no verdict): none")
    text, vs = said["holm"]
    assert vs["seeds"]["p"] < 0.05 <= vs["seeds"]["p_holm"] and vs["seeds"]["verdict"] == "no difference shown"
    assert "no difference shown: `only:audio`" in _seed_line(text, start)
    cells = _cells(text, "Paired difference from `concat` (va CCC mean")["only:audio"]
    assert cells["val over seeds"].endswith(f"] {MARKS['no difference shown']}")


def test_findings_per_key_of_a_multi_task_comparison(tmp_path_factory):
    """A verdict on one key (expr) is stated on that key's line only, not on the others'."""
    _, result = compared_tasks(tmp_path_factory)
    r = copy.deepcopy(result)
    vs = r["results"]["concat"]["vs_reference"]["validation"]["expr"]
    vs["seeds"].update(low=3 * vs["margin"], high=3 * vs["margin"] + 0.001, mean=3 * vs["margin"] + 0.0005)
    annotate(r, 2.0)
    text = markdown(r)
    order = sorted(r["heads"], key=lambda h: -r["results"][h]["validation"]["score"]["full"]["score"]["mean"])
    for key, words in (("va", "va CCC mean"), ("expr", "expr F1"), ("au", "au F1"), ("score", "score")):
        line = next(x for x in text.splitlines() if x.startswith(f"- Validation, {words}, t over seeds"))
        said = {h: r["results"][h]["vs_reference"]["validation"][key]["seeds"]["verdict"]
                for h in order if h != "jmt"}
        better = [h for h, v in said.items() if v == "better"]
        assert line.split("better than `jmt`: ")[1].split(";")[0] == (", ".join(f"`{h}`" for h in better) or "none")
        assert ("concat" in better) == (key == "expr" or result["results"]["concat"]["vs_reference"]["validation"]
                                        [key]["seeds"]["verdict"] == "better"), key


def test_two_seeds_say_a_seed_interval_can_hardly_decide(small):
    _, result = small
    text = markdown(result)
    line = _seed_line(text, "- 2 seeds: a t interval over seeds has 1 degree of freedom (t quantile 12.7 at 95%), so "
                            "it can hardly be decisive.")
    vs = result["results"]["only:audio"]["vs_reference"]["validation"]["va"]
    s = np.std(vs["per_seed"], ddof=1)
    n = seeds_needed(np.mean(vs["per_seed"]), s, s, 2.0, 0.95)  # one other head: the floor is its own spread
    assert line.endswith(f"`only:audio` {'more than 100' if n is None else n}.")
    assert "val seeds needed" in text


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
                rows["only:audio"]["vs_reference"][which].update(low=low, high=low + 0.002, mean=low + 0.001)
            annotate(r, 2.0)
        line = next(x for x in markdown(r).splitlines() if x.startswith(label))
        top, other = sorted(rows, key=lambda h: -rows[h]["ccc_mean"]["mean"])
        vs = rows["only:audio"]["vs_reference"]
        stated = vs["seeds"]["verdict"] == ("better" if top == "only:audio" else "worse")
        assert stated == said or low is None
        assert ("Not a verdict: no interval shows `only:audio`" in line) == (not stated), line


def test_one_seed_gives_the_plain_rule_and_says_so(small):
    _, result = small
    r = copy.deepcopy(result)
    r["seeds"] = r["seeds"][:1]
    for *_, vs in paired_blocks(r):
        vs["per_seed"], vs["seeds"] = vs["per_seed"][:1], None
    annotate(r, 2.0)
    assert all(vs["margin"] is None for *_, vs in paired_blocks(r))
    for *_, vs in paired_blocks(r):
        assert vs["videos"]["verdict"] == _rule(vs["videos"], None, r["confidence"]) != "within rerun noise"
    text = markdown(r)
    findings = text.split("How to read the paired differences")[0]   # the legend names every verdict
    assert "- One seed: no estimate of the noise a rerun makes (no rerun margin)" in findings
    assert "beyond the rerun margin" not in findings and "within rerun noise:" not in findings
    assert not re.search(r"seeds needed|can hardly be decisive", text)
