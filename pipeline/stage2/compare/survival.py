"""Which verdicts of one comparison survive in another: the same heads and keys compared again
on another machine, with a perturbed cache (bench/perturbation.py), with other code
(bench/same_runs.py) or with each head's tuned configuration (`survival`).

Every verdict a compare.json lets the findings draw is read flat (`flat_verdicts`), and each
interval row of the two comparisons gets a status (`verdict_status`, `STATUSES`, best first):

- `same`;
- `withheld`: `within rerun noise` (or `indicative`) on one side: nothing stated there, nothing
  contradicted;
- `weakened`: `better` or `worse` on one side, `no difference shown` on the other: a difference
  shown on one side and not on the other, its interval wider there or its p no longer low enough
  after Holm's correction (which moves with every other p of its family): absence of evidence,
  counted apart from contradictions;
- `contradicted`: `better` on one side and `worse` on the other (a reversal), or a verdict on one
  side only (n/a or missing on the other: a verdict lost).

A descriptive row (a ranking, a subset's winner: no interval behind it) is `same` or `changed`.
Verdicts in the words of `jmt compare` before Holm's correction (`OLD_VERDICTS`) are read in
today's words (pipeline/stage2/verdicts.py).
"""

from __future__ import annotations

import copy

from pipeline.stage2.compare.aggregate import SCORE
from pipeline.stage2.compare.tables import main as main_metric
from pipeline.stage2.verdicts import INDICATIVE, STATED, annotate, paired_blocks

__all__ = ["OLD_VERDICTS", "STATUSES", "compare_verdicts", "flat_verdicts", "keys_of", "main_metric", "survival",
           "verdict_status"]

# the words of `jmt compare` before Holm's correction (docs/bench JSON written then) -> now
OLD_VERDICTS = {"above": "better", "below": "worse", "includes 0": "no difference shown",
                "within noise": "within rerun noise"}
# an interval row's status, best first (a descriptive row: `same` or `changed`)
STATUSES = ("same", "weakened", "withheld", "contradicted")
SHOWN = ("better", "worse")   # a difference the findings state (not `no difference shown`)
MISSING = {"verdict": "missing", "used": False, "kind": "interval"}  # a row one side lacks


def keys_of(result: dict) -> list[str]:
    """What a comparison's verdicts are about: each task, then (several tasks) `score`."""
    return [*result["tasks"], *([SCORE] if len(result["tasks"]) > 1 else [])]


def verdict_status(a: str, b: str, kind: str = "interval") -> str:
    """The status of one row whose verdicts are `a` and `b` (the module's docstring); `kind`
    `descriptive`: `same` or `changed`."""
    if kind == "descriptive":
        return "same" if a == b else "changed"
    a, b = OLD_VERDICTS.get(a, a), OLD_VERDICTS.get(b, b)
    if a == b:
        return "same"
    sides = {a, b}
    if not sides <= {*STATED, "within rerun noise", INDICATIVE}:
        return "contradicted"      # n/a (not scored) or missing on one side
    if sides & {"within rerun noise", INDICATIVE}:
        return "withheld"
    return "weakened" if "no difference shown" in sides else "contradicted"


def flat_verdicts(result: dict, k: float | None = None) -> dict[str, dict]:
    """Every verdict the findings can draw from a compare.json, flat. Keys
    `<split>/<key>/<subset>/<head>/<seeds|videos>` (key: a task or `score`, the sum of the
    tasks' metrics; subset `all` = every valid frame, else an availability subset of the task)
    for each head but the reference: {"verdict" (pipeline.stage2.verdicts: better, worse, no
    difference shown, within rerun noise, indicative; n/a when not scored), "used" (the findings
    may cite it: not an indicative bootstrap), "low", "high", "margin", "kind": "interval"}. And,
    descriptive (no interval behind them, never a significance verdict): `<split>/<key>/ranking`
    (heads by the key's main metric) and `<split>/<task>/<subset>/best`.

    k: the rerun margin in sds. None, or the one the result was annotated with: its own verdicts.
    Another k, or a result without Holm's families (annotated before the correction, or never):
    annotated again (k None: 2); a compare.json keeps no bootstrap draws, so its bootstrap
    intervals then take the unadjusted rule (their bounds against the margin, in no family)."""
    if "families" not in result or (k is not None and k != result.get("rerun_margin")):
        result = annotate(copy.deepcopy(result), 2.0 if k is None else k)
    res, ref = result["results"], result["reference"]
    out: dict[str, dict] = {}
    splits = [s for s in ("validation", "test") if s in res[ref]]
    for split in splits:
        for key in keys_of(result):
            if key not in res[ref][split]:
                continue
            metric = main_metric(result, key)
            ranking = sorted(result["heads"], key=lambda h: -res[h][split][key]["full"][metric]["mean"])
            out[f"{split}/{key}/ranking"] = {"verdict": " > ".join(ranking), "used": True, "kind": "descriptive"}
        for task in result["tasks"]:
            if task not in res[ref]["availability"].get(split, {}):
                continue
            metric = main_metric(result, task)
            for subset in result.get("subsets", {}):
                rows = {h: res[h]["availability"][split][task][subset] for h in result["heads"]}
                scored = all(r["scored"] for r in rows.values())
                best = max(rows, key=lambda h: rows[h][metric]["mean"]) if scored else "not scored"
                out[f"{split}/{task}/{subset}/best"] = {"verdict": best, "used": scored, "kind": "descriptive"}
                for head in result["heads"]:  # subset intervals that were not scored: n/a
                    if head != ref:
                        for which in ("seeds", "videos"):
                            out[f"{split}/{task}/{subset}/{head}/{which}"] = {"verdict": "n/a", "used": False,
                                                                              "kind": "interval"}
    for split, key, subset, head, vs in paired_blocks(result):
        for which in ("seeds", "videos"):
            iv = vs.get(which)
            out[f"{split}/{key}/{subset}/{head}/{which}"] = {
                "verdict": iv["verdict"] if iv else "n/a", "kind": "interval",
                "used": iv is not None and (which == "seeds" or not iv.get("indicative", False)),
                **({"low": iv["low"], "high": iv["high"], "margin": vs["margin"]} if iv else {})}
    return out


def _row(key: str, va: dict, vb: dict, labels: tuple[str, str]) -> dict:
    """One key's row: both verdicts under their sides' labels, whether the findings of either
    side use it, its status and, for intervals, each side's [low, high, margin]."""
    first, second = labels
    kind = va["kind"] if va is not MISSING else vb["kind"]
    row = {"key": key, "kind": kind, first: va["verdict"], second: vb["verdict"],
           "used": va["used"] or vb["used"], "status": verdict_status(va["verdict"], vb["verdict"], kind)}
    if "low" in va or "low" in vb:
        row["bounds"] = {side: [v.get("low"), v.get("high"), v.get("margin")]
                         for side, v in ((first, va), (second, vb))}
    return row


def compare_verdicts(a: dict, b: dict, k: float | None = None,
                     labels: tuple[str, str] = ("original", "perturbed")) -> dict:
    """The verdicts of two comparisons side by side: one row per key (either side; a side's
    verdict under its label), its status (`verdict_status`), and counts of the interval rows the
    findings use per status, `weakened` apart from `contradicted`. The check holds when none is
    contradicted. `plain_rule_changed` counts the verdicts the rule without a margin (k = 0)
    would have changed."""
    first, second = labels
    fa, fb = flat_verdicts(a, k), flat_verdicts(b, k)
    rows = [_row(key, fa.get(key, MISSING), fb.get(key, MISSING), labels) for key in sorted(fa.keys() | fb.keys())]
    intervals = [r for r in rows if r["kind"] == "interval" and r["used"]]
    pa, pb = flat_verdicts(a, 0), flat_verdicts(b, 0)
    count = lambda status: sum(r["status"] == status for r in intervals)  # noqa: E731
    summary = {
        "interval_verdicts": len(intervals), **{status: count(status) for status in STATUSES},
        f"stated_{first}": sum(r[first] in STATED for r in intervals),
        f"stated_{second}": sum(r[second] in STATED for r in intervals),
        "stated_both_same": sum(r["status"] == "same" and r[first] in STATED for r in intervals),
        "plain_rule_changed": sum(pa[r["key"]]["verdict"] != pb[r["key"]]["verdict"] for r in intervals
                                  if r["key"] in pa and r["key"] in pb),
        "descriptive_changed": [r["key"] for r in rows if r["kind"] == "descriptive" and r["status"] == "changed"],
        "rankings_same": all(r["status"] == "same" for r in rows if r["key"].endswith("/ranking")),
    }
    summary["holds"] = summary["contradicted"] == 0
    return {"summary": summary, **{status: [r["key"] for r in intervals if r["status"] == status]
                                   for status in STATUSES if status != "same"}, "rows": rows}


def survival(default: dict, tuned: dict, k: float | None = None) -> dict:
    """Which interval verdicts of the default comparison survive tuning: the interval rows the
    findings use (`flat_verdicts`, `used` on either side) of `default` against `tuned`, over the
    heads and keys (tasks, `score`, splits, subsets) both comparisons have. Returns {"counts":
    rows per status (`STATUSES`), "stated": the default's stated verdicts (better / worse) that
    held, reversed or are no longer stated after tuning, and those stated only after it, "rows": [{key, default, tuned, status}] for every row not
    `same`, "rankings": {`<split>/<key>/ranking`: {default, tuned, same}}}, each ranking over the
    heads both have. `contradicted` covers a reversal (better <-> worse) and a verdict lost on
    one side (n/a there); `weakened`, a difference shown on one side only. k: as in
    `flat_verdicts` (None: each comparison's own verdicts). Both must share their reference:
    their verdicts are differences from it."""
    if default["reference"] != tuned["reference"]:
        raise ValueError(f"survival: the default comparison's reference is {default['reference']}, the tuned "
                         f"one's {tuned['reference']}: their verdicts are differences from different heads")
    fa, fb = flat_verdicts(default, k), flat_verdicts(tuned, k)
    labels = ("default", "tuned")
    rows = [_row(key, fa[key], fb[key], labels) for key in sorted(fa.keys() & fb.keys())]
    intervals = [r for r in rows if r["kind"] == "interval" and r["used"]]
    heads = set(default["heads"]) & set(tuned["heads"])
    rankings = {}
    for r in rows:
        if r["key"].endswith("/ranking"):
            sides = {side: " > ".join(h for h in r[side].split(" > ") if h in heads) for side in labels}
            rankings[r["key"]] = {**sides, "same": sides["default"] == sides["tuned"]}
    stated = {side: [r for r in intervals if r[side] in SHOWN] for side in labels}
    return {"counts": {status: sum(r["status"] == status for r in intervals) for status in STATUSES},
            # the stated verdicts (better / worse) in the direction default -> tuned
            "stated": {"default": len(stated["default"]), "tuned": len(stated["tuned"]),
                       "held": sum(r["tuned"] == r["default"] for r in stated["default"]),
                       "reversed": sum(r["tuned"] in SHOWN and r["tuned"] != r["default"] for r in stated["default"]),
                       "no_longer": sum(r["tuned"] not in SHOWN for r in stated["default"]),
                       "new": sum(r["default"] not in SHOWN for r in stated["tuned"])},
            "rows": [{"key": r["key"], "default": r["default"], "tuned": r["tuned"], "status": r["status"]}
                     for r in intervals if r["status"] != "same"],
            "rankings": rankings}
