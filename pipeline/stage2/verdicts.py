"""What `jmt compare` may say about each paired difference: a rerun margin, a Holm-adjusted
p-value and one of four verdicts.

Training a head is chaotic: moving every embedding by one float16 ulp (what another CPU, BLAS or
torch build does to a cache) or changing the threads changes every run's score about as much as
another seed does (docs/bench/perturbation.json: a head's mean moved by up to 0.0065 on all
frames). An interval whose bound sits that close to 0 excludes 0 on one machine and includes it
on the next. So every paired difference gets a *rerun margin*:

    margin = k * sqrt(2 / n) * max(s, median s)

n seeds, s the sample std of the head's per-seed differences from the reference on that split,
key and subset: a rerun of all n runs moves the mean difference by a normal amount of sd
sqrt(2 / n) * s (the old and the new mean each have sd s / sqrt(n)); k = `compare.rerun_margin`
(2: about 95 % of such moves). The floor, the median s over the heads of the same split, key and
subset, is there because three seeds can agree by chance (an interval 0.002 wide moved by 0.019
under the perturbation). The floor depends on which heads are compared: adding a head can move
it, and with it every other head's margin. A per-head rule (own s only) has no floor against
seeds that agree by chance; a pooled s over every head and key mixes heads whose spread
differs tenfold. The median of the heads at hand is the compromise, stated wherever it is used.

Each interval then gets a p-value of "the difference lies within +-margin" (`pipeline.stats`:
from the t interval itself, or from the bootstrap's draws), built so that p < 1 - confidence
exactly when the interval clears the margin, and Holm's adjustment over its *family*: the
intervals of one kind (over seeds, over videos) in one table, i.e. per measure every (head,
split) on all frames, and per task every (head, subset, split) by availability. Bootstrap
intervals with too few videos (`indicative`) are in no family and get the verdict `indicative`.

The verdict (`VERDICTS`, marks `MARKS`, meanings `MEANING`): `better` / `worse` when the
Holm-adjusted p is below 1 - confidence (the interval clears 0 by more than the margin, even
after the family correction; the side of 0 it lies on decides which); else `within rerun noise`
when a bound lies within the margin of 0 (no verdict: a rerun could move it either way); else
`no difference shown`. With one seed there is no estimate of s: the margin is None and the rule
the plain one (margin 0, never `within rerun noise`). A compare.json read back has no draws: a
re-annotated bootstrap interval then gets no p and the unadjusted rule (its bounds against the
margin), and is in no family.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from scipy import stats as scipy_stats

from pipeline.stats import holm, p_beyond_margin_draws, p_beyond_margin_t

VERDICTS = ("better", "worse", "no difference shown", "within rerun noise")
STATED = ("better", "worse", "no difference shown")  # the verdicts the findings state
INDICATIVE = "indicative"  # the verdict of a bootstrap over too few videos: none
MARKS = {"better": "▲", "worse": "▼", "no difference shown": "○", "within rerun noise": "~"}
MEANING = {
    "better": "the interval clears 0 by more than the rerun margin, also after Holm's correction over the "
              "table's family: the head is better than the reference",
    "worse": "the interval clears 0 by more than the rerun margin on the negative side, also after Holm's "
             "correction over the table's family: the head is worse than the reference",
    "no difference shown": "the interval reaches beyond the rerun margin on both sides of 0, or clears it only "
                           "before Holm's correction over the table's family",
    "within rerun noise": "a bound lies within the rerun margin of 0, so a rerun on another machine could move "
                          "it either way: no verdict",
}


def mark_of(iv: dict) -> str:
    """The mark printed after an interval, in the tables and in paired.png: its verdict's, or †
    when indicative (no verdict)."""
    return "†" if iv["verdict"] == INDICATIVE else MARKS[iv["verdict"]]


KINDS = ("seeds", "videos")
TABLES = {"all": "all frames", "availability": "by availability"}


def _spreads(per_seed: dict[str, Sequence[float]]) -> tuple[dict[str, float], float | None]:
    """Each head's sample std of its per-seed differences (heads with 2+ seeds) and their median."""
    stds = {h: float(np.std(d, ddof=1)) for h, d in per_seed.items() if len(d) > 1}
    return stds, (float(np.median(list(stds.values()))) if stds else None)


def rerun_margins(per_seed: dict[str, Sequence[float]], k: float) -> dict[str, float | None]:
    """head -> margin, from each head's per-seed differences on one split, key and subset (all
    heads of the group together: their median std is the floor). None with one seed."""
    stds, floor = _spreads(per_seed)
    return {h: (round(k * np.sqrt(2 / len(per_seed[h])) * max(stds[h], floor), 6) if h in stds else None)
            for h in per_seed}


def seeds_needed(mean: float, s: float, floor: float, k: float, confidence: float, most: int = 100) -> int | None:
    """How many seeds the observed spread would need for the observed mean difference to clear 0
    beyond its rerun margin: the smallest n in 2..most with
    t_{(1+c)/2, n-1} s / sqrt(n) + k sqrt(2 / n) max(s, floor) < |mean|; None if none does."""
    for n in range(2, most + 1):
        half = scipy_stats.t.ppf((1 + confidence) / 2, n - 1) * s / np.sqrt(n)
        if half + k * np.sqrt(2 / n) * max(s, floor) < abs(mean):
            return n
    return None


def seeds_needed_of(result: dict, split: str, key: str) -> dict[str, int | None]:
    """`seeds_needed` for every head but the reference on one split and key (all frames), from
    its per-seed differences, the group's floor and `rerun_margin`; {} with one seed."""
    res, ref = result["results"], result["reference"]
    per_seed = {h: res[h]["vs_reference"][split][key]["per_seed"] for h in result["heads"] if h != ref}
    stds, floor = _spreads(per_seed)
    return {h: seeds_needed(float(np.mean(per_seed[h])), s, floor, result["rerun_margin"], result["confidence"])
            for h, s in stds.items()}


def verdict(iv: dict, margin: float | None, confidence: float) -> str:
    """One interval ({low, high, p_holm}) against 0 with a rerun margin (None: the plain rule).
    Without `p_holm` (a bootstrap annotated again without its draws) the unadjusted rule: its
    bounds against the margin."""
    m = margin or 0.0
    p = iv.get("p_holm")
    clears = p < 1 - confidence if p is not None else (iv["low"] > m or iv["high"] < -m)
    if clears:
        return "better" if iv["low"] + iv["high"] > 0 else "worse"   # the side of 0 the interval lies on
    if margin and any(-m <= b <= m for b in (iv["low"], iv["high"])):
        return "within rerun noise"
    return "no difference shown"


def family_id(key: str, subset: str, kind: str) -> str:
    """The Holm family of an interval: its table (a key on all frames, or a task by availability)
    and its kind (`seeds`, `videos`)."""
    return f"{key}/{'all' if subset == 'all' else 'availability'}/{kind}"


def paired_blocks(result: dict) -> Iterator[tuple[str, str, str, str, dict]]:
    """(split, key, subset, head, vs) for every paired difference in a compare result: key a
    task or `score` (their sum); subset `all` is every valid frame
    (`results[head].vs_reference[split][key]`), the others the availability subsets that were
    scored for both heads (`results[head].availability[split][task][subset].vs_reference`)."""
    res, ref = result["results"], result["reference"]
    for head in result["heads"]:
        if head == ref:
            continue
        for split, by_key in res[head].get("vs_reference", {}).items():
            for key, vs in by_key.items():
                yield split, key, "all", head, vs
            for task, subsets in res[head]["availability"][split].items():
                for subset, row in subsets.items():
                    if row.get("vs_reference"):
                        yield split, task, subset, head, row["vs_reference"]


def _p(iv: dict, kind: str, margin: float | None, draws, confidence: float) -> float | None:
    """The interval's p-value of "within +-margin"; None for a bootstrap without its draws."""
    m = margin or 0.0
    if kind == "seeds":
        return p_beyond_margin_t(iv["low"], iv["high"], iv["n"], m, confidence)
    return None if draws is None else p_beyond_margin_draws(draws, m)


def annotate(result: dict, k: float) -> dict:
    """In place: `margin` on every paired difference; on each of its intervals `p`, `p_holm`,
    `family` (an id of `result["families"]`, None outside any) and `verdict`; the bootstrap's
    transient `_draws` removed. Records k as `rerun_margin` and each family as
    `families[id] = {measure, table, kind, size}`. Returns the result."""
    confidence = result["confidence"]
    groups: dict[tuple[str, str, str], dict[str, dict]] = {}
    for split, key, subset, head, vs in paired_blocks(result):
        groups.setdefault((split, key, subset), {})[head] = vs
    families: dict[str, list[dict]] = {}
    meta: dict[str, dict] = {}
    for (split, key, subset), heads in groups.items():
        margins = rerun_margins({h: vs["per_seed"] for h, vs in heads.items()}, k)
        for head, vs in heads.items():
            vs["margin"] = margins[head]
            for kind in KINDS:
                iv = vs.get(kind)
                if not iv:
                    continue
                iv["p"] = _p(iv, kind, margins[head], iv.pop("_draws", None), confidence)
                iv["p_holm"], iv["family"] = None, None
                if iv["p"] is None or iv.get("indicative"):
                    continue
                fid = family_id(key, subset, kind)
                families.setdefault(fid, []).append(iv)
                meta[fid] = {"measure": key, "table": TABLES["all" if subset == "all" else "availability"],
                             "kind": kind}
    for fid, ivs in families.items():
        for iv, adjusted in zip(ivs, holm([iv["p"] for iv in ivs])):
            iv["p_holm"], iv["family"] = adjusted, fid
    for *_, vs in paired_blocks(result):
        for kind in KINDS:
            if vs.get(kind):
                vs[kind]["verdict"] = INDICATIVE if vs[kind].get("indicative") else \
                    verdict(vs[kind], vs["margin"], confidence)
    result["rerun_margin"] = k
    result["families"] = {fid: {**meta[fid], "size": len(ivs)} for fid, ivs in sorted(families.items())}
    return result
