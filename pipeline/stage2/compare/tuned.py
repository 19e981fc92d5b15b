"""The tuned comparison (`compare.configs: tuned`): each head trained with its own best
configuration from `jmt tune`, set beside the default comparison of the same heads and seeds.

What it adds to compare.json (`tuning`): per head the configuration it ran with, its default and
tuned scores (mean over seeds, each split), the effort its search spent, and which of the default
comparison's interval verdicts survive tuning (`survival.survival`: same / weakened / withheld /
contradicted, with the rankings). Its table states the search's budget and shows the effort per
head, so a reader sees that every head had the same."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.config import Params
from pipeline.stage2.compare.survival import STATUSES, survival
from pipeline.stage2.compare.tables import main, ranking_key, what

NOTE = ("The configurations were chosen on validation (training seed {seed}), so a tuned head's validation "
        "score is optimistic (the best of its trials); test was never read by the search and is the split to "
        "judge the tuned verdicts on.")


def default_paths(params: Params) -> dict[str, str]:
    """Where the default comparison beside a tuned one writes: `<metrics>-default.json`,
    `<table>-default.md` (same runs folder: the default runs are the plain comparison's)."""
    m, t = Path(params.compare.metrics), Path(params.compare.table)
    return {"metrics": str(m.with_name(f"{m.stem}-default{m.suffix}")),
            "table": str(t.with_name(f"{t.stem}-default{t.suffix}"))}


def tuning_block(params: Params, default: dict, tuned: dict, configs: dict[str, dict]) -> dict:
    """compare.json's `tuning`: per head config, default vs tuned score, search effort; survival."""
    tune = json.loads(params.path(params.compare.tuned).read_text())
    key = ranking_key(tuned)
    metric = main(tuned, key)
    heads = {}
    for head in tuned["heads"]:
        scores = {side: {s: round(r["results"][head][s][key]["full"][metric]["mean"], 6)
                         for s in ("validation", "test") if s in r["results"][head]}
                  for side, r in (("default", default), ("tuned", tuned))}
        heads[head] = {"config": configs[head], **scores,
                       "effort": tune["results"].get(head, {}).get("effort"),
                       "search_best": (tune["results"].get(head, {}).get("best") or {}).get("value")}
    return {"source": params.compare.tuned, "protocol": tune["protocol"], "key": key, "metric": metric,
            "default_metrics": default_paths(params)["metrics"], "heads": heads,
            "survival": survival(default, tuned, params.compare.rerun_margin)}


def table(result: dict) -> list[str]:
    """Default vs tuned per head (mean over seeds of the ranking key, each split) with the effort
    each head's search spent; heads by tuned validation score."""
    t = result["tuning"]
    unit = f"{t['protocol']['resource']}-s"
    lines = [f"| head | default val | tuned val | default test | tuned test | search trials | epochs | {unit} |",
             "|---|---|---|---|---|---|---|---|"]
    order = sorted(t["heads"], key=lambda h: -t["heads"][h]["tuned"].get("validation", 0.0))
    for head in order:
        h = t["heads"][head]
        e = h["effort"] or {}
        cell = lambda side, s: f"{h[side][s]:.3f}" if s in h[side] else "-"  # noqa: E731
        name = f"**`{head}`**" if head == result["reference"] else f"`{head}`"
        lines.append(f"| {name} | {cell('default', 'validation')} | {cell('tuned', 'validation')} | "
                     f"{cell('default', 'test')} | {cell('tuned', 'test')} | {e.get('trials', '-')} | "
                     f"{e.get('epochs', '-')} | {e.get('resource_seconds', 0):.0f} |")
    return lines


def markdown(result: dict) -> list[str]:
    """The tuned comparison's own section: default vs tuned per head, effort, survival."""
    t = result["tuning"]
    p = t["protocol"]
    unit = f"{p['resource']}-s"
    budget = (f"{p['epochs_budget']} epochs" if p["budget"] == "epochs" else
              f"{p['seconds_budget']:g} {unit}" if p["budget"] == "seconds" else f"{p['trials']} trials")
    label = what(result, t["key"])
    lines = ["", f"**Tuned vs default configuration** ({label}, mean over seeds {result['seeds']}; every head "
             f"searched with the same budget: **{budget} per head**, sampler {p['sampler']}, scheduler "
             f"{p['scheduler']}; `{t['source']}`). " + NOTE.format(seed=p["train_seed"]), "",
             *table(result)]
    s = t["survival"]
    counts = ", ".join(f"{s['counts'][k]} {k}" for k in STATUSES)
    st = s.get("stated")
    held = "" if st is None else (
        f"Of the default comparison's {st['default']} stated verdicts (better or worse than `{result['reference']}`), "
        f"{st['held']} held, {st['reversed']} reversed and {st['no_longer']} are no longer stated after tuning; "
        f"{st['new']} are stated only after it. ")
    lines += ["", f"**Which of the default comparison's interval verdicts survive tuning.** {held}Every interval "
              f"row the findings use ({counts}; `contradicted` = reversed, or a verdict on one side only; "
              "`weakened` = better or worse on one side, no difference shown on the other; `withheld` = within "
              "rerun noise on one side):", ""]
    for name, r in s["rankings"].items():
        lines.append(f"- ranking {name.replace('/ranking', '')}: default {r['default']}; tuned {r['tuned']}"
                     + (" (same)" if r["same"] else " (changed)"))
    for row in s["rows"]:
        lines.append(f"- {row['key']}: {row['default']} -> {row['tuned']} ({row['status']})")
    lines.append("")
    from pipeline.stage2.tune.tables import config_text  # the tune package imports this one: here

    lines.append("Configurations: " + "; ".join(f"`{head}` {config_text(h['config'])}"
                                                for head, h in t["heads"].items()))
    return lines
