"""Which paired differences of `jmt compare` may be stated, and which are within rerun noise.

Training a head is chaotic: moving every embedding by one float16 ulp (what another CPU, BLAS or
torch build does to a cache) or changing the threads changes every run's score about as much as
another seed does (docs/bench/perturbation.json: a head's mean moved by up to 0.0065 on all
frames). An interval whose bound sits that close to 0 says "excludes 0" on one machine and
"includes 0" on the next. So every paired difference gets a *rerun margin*:

    margin = k * sqrt(2 / n) * max(s, median s)

n seeds, s the sample std of the head's per-seed differences from the reference on that split,
task and subset: a rerun of all n runs moves the mean difference by a normal amount of sd
sqrt(2 / n) * s (the old and the new mean each have sd s / sqrt(n)); k = `compare.rerun_margin`
(2: about 95 % of such moves). The floor, the median s over the heads of the same split and
task and subset, is there because three seeds can agree by chance: an interval 0.002 wide moved by
0.019 under the perturbation.

An interval's verdict (`VERDICTS`): `above` / `below` the reference when it clears 0 by more than
the margin, `includes 0` when both bounds are beyond the margin on either side, else
`within noise`: the findings name those heads but state neither a difference nor its absence.
With one seed there is no estimate of s: the margin is None and the verdict is the plain one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

VERDICTS = ("above", "below", "includes 0", "within noise")
STATED = ("above", "below", "includes 0")  # the verdicts the findings state


def rerun_margins(per_seed: dict[str, Sequence[float]], k: float) -> dict[str, float | None]:
    """head -> margin, from each head's per-seed differences on one split and subset (all heads
    of one (split, subset) together: the median std is their floor). None with one seed."""
    stds = {h: float(np.std(d, ddof=1)) for h, d in per_seed.items() if len(d) > 1}
    if not stds:
        return {h: None for h in per_seed}
    floor = float(np.median(list(stds.values())))
    return {h: (round(k * np.sqrt(2 / len(per_seed[h])) * max(stds[h], floor), 6) if h in stds else None)
            for h in per_seed}


def verdict(iv: dict, margin: float | None) -> str:
    """One interval ({low, high}) against 0 with a margin (None: the plain verdict)."""
    m = margin or 0.0
    if iv["low"] > m:
        return "above"
    if iv["high"] < -m:
        return "below"
    if iv["low"] < -m and iv["high"] > m:
        return "includes 0"
    return "within noise" if margin else "includes 0"


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


def annotate(result: dict, k: float) -> dict:
    """Adds `margin` to every paired difference and `verdict` to each of its intervals (seeds,
    videos), in place; records k as `rerun_margin`. Returns the result."""
    groups: dict[tuple[str, str, str], dict[str, dict]] = {}
    for split, key, subset, head, vs in paired_blocks(result):
        groups.setdefault((split, key, subset), {})[head] = vs
    for heads in groups.values():
        margins = rerun_margins({h: vs["per_seed"] for h, vs in heads.items()}, k)
        for head, vs in heads.items():
            vs["margin"] = margins[head]
            for which in ("seeds", "videos"):
                if vs.get(which):
                    vs[which]["verdict"] = verdict(vs[which], margins[head])
    result["rerun_margin"] = k
    return result
