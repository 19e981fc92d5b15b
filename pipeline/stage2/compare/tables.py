"""`jmt compare`'s markdown (compare.table, reports/index.md and README's results section): a
paragraph on what was compared, generated findings that state only the verdicts
(`pipeline/stage2/verdicts.py`), then per measure (each task's metrics; with several tasks their
sum, `score`) the accuracy, paired-difference and effect-size tables, the availability tables per
task, robustness, training protocol, cost, and per split and task each video's metric.
"""

from __future__ import annotations

from scipy import stats

from pipeline.stage2.compare.aggregate import SCORE, TIE
from pipeline.stage2.verdicts import (INDICATIVE, KINDS, MARKS, MEANING, VERDICTS, family_id, mark_of, paired_blocks,
                                      seeds_needed_of)
from pipeline.tasks import TASKS

SHORT = {"validation": "val", "test": "test"}  # column labels
TITLES = {SCORE: "Multi-task score (the sum of the tasks' metrics)"}   # a task's: its `table_title`
WORDS = {"ccc_mean": "CCC mean", "f1": "F1", SCORE: "score"}


def measures(result: dict) -> dict[str, tuple[str, ...]]:
    """What the tables show: each task's metrics, then `score` with several tasks."""
    out = {t: tuple(result["metrics"][t]) for t in result["tasks"]}
    if len(result["tasks"]) > 1:
        out[SCORE] = (SCORE,)
    return out


def main(result: dict, key: str) -> str:
    """The metric a measure is ranked and paired on."""
    return SCORE if key == SCORE else result["main_metric"][key]


def ranking_key(result: dict) -> str:
    """The measure heads are sorted by: the one task's, or the multi-task score."""
    return SCORE if len(result["tasks"]) > 1 else result["tasks"][0]


def what(result: dict, key: str) -> str:
    """A measure in words: `va CCC mean`, `expr F1`, `score`."""
    metric = main(result, key)
    return WORDS[SCORE] if key == SCORE else f"{key} {WORDS.get(metric, metric)}"


def title(key: str) -> str:
    """A measure's table heading: a task's `table_title`, or the multi-task score's."""
    return TASKS.get(key).table_title if key in TASKS else TITLES.get(key, key)


def _pm(s: dict, digits: int = 3, shift: float = 0) -> str:
    """`mean ± std` of a summary (`shift` added to the mean: epochs counted from 1)."""
    return f"{s['mean'] + shift:.{digits}f}" + (f" ± {s['std']:.{digits}f}" if s.get("std") is not None else "")


def _iv(iv: dict | None) -> str:
    """An interval cell: `mean [low, high]` and its verdict's mark, or † when indicative (no verdict)."""
    if iv is None:
        return "n/a (one seed)"
    return f"{iv['mean']:+.3f} [{iv['low']:+.3f}, {iv['high']:+.3f}] {mark_of(iv)}"


def _effect(e: dict | None) -> str:
    return "n/a" if e is None else f"{e['d']:+.2f} [{e['low']:+.2f}, {e['high']:+.2f}]"


def _table(columns: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table whose first column is the head."""
    out = ["| head | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    return out + ["| " + " | ".join(row) + " |" for row in rows]


def _names(heads: list[str]) -> str:
    return ", ".join(f"`{h}`" for h in heads) or "none"


def _videos(n: int) -> str:
    return f"{n} video" + ("" if n == 1 else "s")


def _splits(result: dict) -> list[str]:
    ref = result["results"][result["reference"]]
    return [s for s in ("validation", "test") if s in ref]


def describe(result: dict) -> str:
    """One paragraph: corpus, caches, tasks, seeds, params and how to read the numbers."""
    c, p = result["corpus"], result["params"]
    entries = "; ".join(f"{s}: " + ", ".join(f"{n} {t}" for t, n in by.items()) for s, by in c["videos"].items()
                        if isinstance(by, dict))
    frames = "; ".join(f"{s}: " + ", ".join(f"{n:,} {t}" for t, n in by.items()) for s, by in c["scored_frames"].items())
    streams = ", ".join(f"{s['name']} `{s['backbone']}` ({s['dim']}-d)" for s in c["cache"]["streams"])
    train, model = p["train"], p["model"]
    seeds = ", ".join(map(str, result["seeds"]))
    n = len(result["seeds"])
    said = (TASKS.get(t).describe_options(p["tasks"].get(t, {})) for t in result["tasks"])
    post = "".join(f"; {words}" for words in said if words)   # the tasks' post-processing options
    n_left = len(c.get("left_out", []))
    left = (f" {n_left} entr{'y' if n_left == 1 else 'ies'} in a training split {'was' if n_left == 1 else 'were'} "
            "left out (in a scored task's validation or test split: never trained on).") if n_left else ""
    stop = " + ".join(what(result, t) for t in result["tasks"])
    return (
        f"Corpus `{c['root']}` ({c['layout']} layout; {c['videos']['train']} training entries; entries scored per "
        f"task, {entries}; valid frames scored, {frames}).{left} Streams: {streams}. Tasks: "
        f"{', '.join(result['tasks'])}. Seeds {seeds} for every head. Params: d_model {model['d_model']}, temporal "
        f"`{model['temporal']}`, {model['layers']} layer(s), {model['heads']} attention head(s); {train['optimizer']} "
        f"lr {train['lr']}, at most {train['epochs']} epochs with early stopping on the validation {stop} (patience "
        f"{train['patience']}), windows of {train['window']} frames, modality dropout {train['modality_dropout']}"
        f"{post}. Each task's metric on all valid frames of its split (the official protocol); ± is the sample "
        f"standard deviation over the {n} seeds."
    )


def _subset_label(result: dict, split: str, task: str, subset: str) -> str:
    facts = result["corpus"]["availability"][split][task][subset]
    return f"{result['subsets'][subset]} ({facts['frames']:,} frames, {_videos(facts['videos'])})"


def _margin(vs: dict) -> str:
    return "" if vs.get("margin") is None else f" ±{vs['margin']:.3f}"


def _verdict_words(iv: dict, margin: float | None) -> str:
    """What an interval's verdict means, in the words the findings use (no parentheses: the
    findings wrap these in some)."""
    m = margin or 0.0
    beyond = "" if margin is None else f" by more than the rerun margin ±{m:.3f}"
    holm = "" if iv.get("p_holm") is None else f", Holm p {iv['p_holm']:.2g}"
    v = iv["verdict"]
    if v in ("better", "worse"):
        return f"{v}: clears 0{beyond}{holm}"
    if v == "within rerun noise":
        return f"within rerun noise: a bound within ±{m:.3f} of 0, no verdict"
    if iv["low"] > m or iv["high"] < -m:  # cleared the margin, not the family correction
        p = "" if iv.get("p") is None else f", p {iv['p']:.2g}"
        return f"no difference shown: clears 0{beyond} only before Holm's correction{p}{holm}"
    return "no difference shown: " + ("includes 0" if margin is None
                                      else f"reaches beyond ±{m:.3f} on both sides of 0")


def _used(vs: dict) -> list[tuple[dict, str]]:
    """(interval, "over seeds" / "over videos") of a paired difference the findings may cite:
    the t interval when there is one, the bootstrap only when not indicative."""
    ivs = [(vs["seeds"], "over seeds"), (None if vs["videos"]["indicative"] else vs["videos"], "over videos")]
    return [(iv, how) for iv, how in ivs if iv]


def _difference(vs: dict, ref: str, head: str) -> str:
    """`head − ref: <t interval> over seeds (<verdict>)[; <bootstrap> over videos (...)]`: the
    bootstrap only when it is not indicative (enough videos)."""
    parts = [f"{iv['mean']:+.3f} [{iv['low']:+.3f}, {iv['high']:+.3f}] {how} ({_verdict_words(iv, vs.get('margin'))})"
             for iv, how in _used(vs)]
    return f"`{head}` − `{ref}`: " + ("; ".join(parts) or "no usable interval (one seed, too few videos)")


def _availability_findings(result: dict, split: str, task: str) -> list[str]:
    """Per availability subset: the head with the highest metric, with its paired difference
    from the reference (or, when the reference wins, the runner-up's); or why it is not scored."""
    res, ref = result["results"], result["reference"]
    metric = main(result, task)
    lines = []
    for subset in result["subsets"]:
        label = f"{task}, " + _subset_label(result, split, task, subset)
        rows = {h: res[h]["availability"][split][task][subset] for h in result["heads"]}
        if not all(r["scored"] for r in rows.values()):
            why = next(r["why"] for r in rows.values() if not r["scored"])
            lines.append(f"- {split.capitalize()}, {label}: not scored: {why}.")
            continue
        ranked = sorted(rows, key=lambda h: -rows[h][metric]["mean"])
        best = ranked[0]
        text = f"- {split.capitalize()}, {label}: highest {WORDS.get(metric, metric)} `{best}` ({_pm(rows[best][metric])})"
        if best != ref:
            text += "; " + _difference(rows[best]["vs_reference"], ref, best)
            other, beaten = best, "better"
        elif len(ranked) > 1:
            other, beaten = ranked[1], "worse"
            text += f", the reference; next `{other}` ({_pm(rows[other][metric])}); " + \
                _difference(rows[other]["vs_reference"], ref, other)
        else:
            lines.append(text + ".")
            continue
        if not any(iv["verdict"] == beaten for iv, _ in _used(rows[other]["vs_reference"])):
            beyond = "" if rows[other]["vs_reference"].get("margin") is None else " beyond the rerun margin"
            text += f". Not a verdict: no interval shows `{other}` {beaten} than `{ref}`{beyond}"
        lines.append(text + ".")
    return lines


def _findings(result: dict, order: list[str], splits: list[str]) -> list[str]:
    """A few generated sentences: the best head; which heads differ from the reference with
    intervals beyond the rerun margin (the video bootstrap only with enough videos), per measure;
    the winner on each availability subset; how much of the reference's score survives a masked
    stream; and the runs the epoch cap stopped while they were still improving."""
    res, ref = result["results"], result["reference"]
    rank = ranking_key(result)
    metric = main(result, rank)
    best = order[0]
    lines = [f"- Highest validation {what(result, rank)}: `{best}` "
             f"({res[best]['validation'][rank]['full'][metric]['mean']:.3f}); reference `{ref}`: "
             f"{res[ref]['validation'][rank]['full'][metric]['mean']:.3f}."]
    others = [h for h in order if h != ref]
    if len(result["seeds"]) < 2:
        lines.append("- One seed: no estimate of the noise a rerun makes (no rerun margin); the verdicts below "
                     "may not survive another machine.")
    elif len(result["seeds"]) < 3:
        lines.append(_few_seeds(result, splits[0], rank))
    for split in splits:
        for key in measures(result):
            if key not in res[ref][split]:
                continue
            for which, label in (("seeds", "t over seeds"), ("videos", "bootstrap over videos")):
                ivs = {h: res[h]["vs_reference"][split][key][which] for h in others}
                if all(iv is None for iv in ivs.values()):
                    continue
                if any(iv and iv.get("indicative") for iv in ivs.values()):
                    n = next(iv["n"] for iv in ivs.values() if iv)
                    lines.append(f"- {split.capitalize()}, {what(result, key)}, {label}: not used ({_videos(n)}, fewer "
                                 f"than compare.min_videos_bootstrap = {result['min_videos_bootstrap']}; shown in the "
                                 "table as indicative, †).")
                    continue
                said = {v: [h for h, iv in ivs.items() if iv and iv["verdict"] == v] for v in VERDICTS}
                lines.append(f"- {split.capitalize()}, {what(result, key)}, {label}: better than `{ref}`: "
                             f"{_names(said['better'])}; worse: {_names(said['worse'])}; within rerun noise (no "
                             f"verdict): {_names(said['within rerun noise'])}; no difference shown: "
                             f"{_names(said['no difference shown'])}"
                             f"{_holm_over(result, key, 'all', which, ' (', ')')}.")
        for task in result["tasks"]:
            if task in res[ref]["availability"].get(split, {}):
                lines += _availability_findings(result, split, task)
    first = splits[0]
    full = res[ref][first][rank]["full"][metric]["mean"]
    if full > 0:
        kept = [f"{res[ref][first][rank][c][metric]['mean'] / full:.0%} with the {c.removeprefix('no_')} stream masked"
                for c in result["conditions"] if c != "full"]
        listed = ", ".join(kept[:-1]) + (" and " if len(kept) > 1 else "") + kept[-1]
        lines.append(f"- `{ref}` keeps, of its {first} {what(result, rank)}, {listed}.")
    train = result["params"]["train"]
    capped = [r for r in result["runs"] if r["stopped"] == "max_epochs"]
    if capped:
        runs = ", ".join(f"`{r['head']}` seed {r['seed']} (best epoch {r['best_epoch'] + 1} of {r['epochs']})"
                         for r in capped)
        lines.append(f"- Stopped by the epoch cap (train.epochs = {train['epochs']}) while still improving "
                     f"(a better validation score within the last {train['patience']} epochs): {runs}. "
                     "More epochs could change their numbers.")
    else:
        lines.append(f"- Every run stopped early (no validation gain in {train['patience']} epochs) "
                     f"before the cap of {train['epochs']} epochs.")
    return lines


def _few_seeds(result: dict, split: str, key: str) -> str:
    """With fewer than 3 seeds: why a t interval over seeds can hardly decide, and per head how
    many seeds its observed spread would need for its observed mean difference to clear 0
    beyond its rerun margin (`verdicts.seeds_needed`)."""
    n, c = len(result["seeds"]), result["confidence"]
    q = stats.t.ppf((1 + c) / 2, n - 1)
    needed = seeds_needed_of(result, split, key)
    each = ", ".join(f"`{h}` {_needed(k)}" for h, k in needed.items())
    return (f"- {n} seeds: a t interval over seeds has {n - 1} degree{'s' if n > 2 else ''} of freedom (t quantile "
            f"{q:.1f} at {c:.0%}), so it can hardly be decisive. Seeds the observed spread would need for the "
            f"observed {split} {what(result, key)} difference to clear 0 beyond its rerun margin: {each or 'none'}.")


def _intervals(result: dict, key: str, subset: str, kind: str) -> list[dict]:
    """Every interval of one kind in one table: a key on all frames, or a task by availability."""
    return [vs[kind] for split, k, sub, _, vs in paired_blocks(result)
            if k == key and (sub == "all") == (subset == "all") and vs.get(kind)]


def _holm_over(result: dict, key: str, subset: str, kind: str, before: str = "", after: str = "") -> str:
    """`Holm over the N intervals ...` of one family; that its verdicts are unadjusted when the
    bootstrap's draws were gone (a compare.json annotated again); nothing when the kind has none."""
    over = "over seeds" if kind == "seeds" else "over videos"
    fam = result.get("families", {}).get(family_id(key, subset, kind))
    if fam:
        n = fam["size"]
        return f"{before}Holm over the {n} interval{'s' if n != 1 else ''} {over} of its table{after}"
    if any(iv.get("p_holm") is None and iv["verdict"] != INDICATIVE for iv in _intervals(result, key, subset, kind)):
        return f"{before}the intervals {over} are not Holm-adjusted: annotated again without their draws{after}"
    return ""


def _families(result: dict, key: str, subset: str) -> str:
    """A table's caption words on its Holm families, one per interval kind."""
    said = [_holm_over(result, key, subset, kind) for kind in KINDS]
    return "; ".join(x.replace(" of its table", "") for x in said if x) or "no Holm family (no usable interval)"


def _column(metric: str) -> str:
    return metric.removeprefix("ccc_")


def _measure_tables(result: dict, order: list[str], splits: list[str], name: dict[str, str], key: str) -> list[str]:
    """One measure: its accuracy table and its paired-difference table."""
    res, ref = result["results"], result["reference"]
    metrics = measures(result)[key]
    have = [s for s in splits if key in res[ref][s]]
    conf = f"{result['confidence']:.0%}"
    lines = ["", f"**{title(key)}** (mean ± std over seeds; heads sorted by validation "
             f"{what(result, ranking_key(result))})", ""]
    lines += _table([f"{SHORT[s]} {_column(k)}" for s in have for k in metrics],
                    [[name[h], *(_pm(res[h][s][key]["full"][k]) for s in have for k in metrics)] for h in order])
    if len(order) < 2:
        return lines
    pairs = [(s, w) for s in have for w in KINDS]
    few = 2 <= len(result["seeds"]) < 3
    needed = {s: seeds_needed_of(result, s, key) for s in have} if few else {}
    lines += ["", f"Paired difference from `{ref}` ({what(result, key)}, head − {ref}, {conf} intervals; "
              f"{_families(result, key, 'all')} in this table; each margin's floor is the median spread of the "
              "heads compared: adding a head can move it"
              + ("; with 2 seeds a t interval can hardly be decisive, `seeds needed`: how many seeds the observed "
                 "spread would need for the observed difference to clear 0 beyond its margin" if few else "")
              + ")", ""]
    lines += _table([*(f"{SHORT[s]} over {w}" for s, w in pairs), *(f"{SHORT[s]} margin" for s in have),
                     *(f"{SHORT[s]} seeds needed" for s in needed)],
                    [[name[h], *(_iv(res[h]["vs_reference"][s][key][w]) for s, w in pairs),
                      *(_margin(res[h]["vs_reference"][s][key]).strip() or "n/a" for s in have),
                      *(_needed(needed[s].get(h)) for s in needed)]
                     for h in order if h != ref])
    if all("effect" in res[h]["vs_reference"][s][key] for h in order if h != ref for s in have):
        lines += ["", f"Standardised paired effect, {what(result, key)} (Cohen's d_z = mean / sd of the paired "
                  f"differences, head − {ref}, with its exact {conf} interval from the noncentral t; over seeds: the "
                  "per-seed differences; over videos: each video's own metric, mean over seeds, head − reference; "
                  "n/a: fewer than 2 differences, no spread, or the score, whose videos hold different tasks)", ""]
        lines += _table([f"{SHORT[s]} d_z over {w}" for s, w in pairs],
                        [[name[h], *(_effect(res[h]["vs_reference"][s][key]["effect"][w]) for s, w in pairs)]
                         for h in order if h != ref])
    return lines


def _needed(n: int | None) -> str:
    return "more than 100" if n is None else str(n)


def _availability_tables(result: dict, order: list[str], splits: list[str], name: dict[str, str],
                         task: str) -> list[str]:
    """A task's metrics on each availability subset, one table per split; then the paired
    differences from the reference on each subset (one row per head and subset)."""
    res, ref = result["results"], result["reference"]
    subsets = list(result["subsets"])
    metrics = tuple(result["metrics"][task])
    have = [s for s in splits if task in res[ref]["availability"].get(s, {})]
    lines = []
    for split in have:
        sizes = "; ".join(_subset_label(result, split, task, s) for s in subsets)
        lines += ["", f"**By stream availability, {task}, {split}** (mean ± std over seeds, on the valid frames "
                  "where the cache's stream masks say so, all such frames of the split concatenated; a frame "
                  f"missing several streams counts in each of their columns; {sizes}; n/a: fewer than "
                  f"{result['min_subset_frames']} frames)", ""]
        cells = []
        for h in order:
            row = [name[h]]
            for s in subsets:
                a = res[h]["availability"][split][task][s]
                row += [_pm(a[k]) if a["scored"] else "n/a" for k in metrics]
            cells.append(row)
        lines += _table([f"{s.replace('_', ' ')} {_column(k)}" for s in subsets for k in metrics], cells)
    if len(order) < 2:
        return lines
    pairs = [(s, w) for s in have for w in KINDS]
    rows = []
    for h in order:
        if h == ref:
            continue
        for s_ in subsets:
            row = [name[h], s_.replace("_", " ")]
            for split, which in pairs:
                vs = res[h]["availability"][split][task][s_].get("vs_reference")
                row.append(_iv(vs[which]) if vs else "n/a")
            rows.append(row)
    lines += ["", f"Paired difference from `{ref}` by availability ({what(result, task)} on the subset, head − "
              f"{ref}; as above, the bootstrap resamples the videos that have frames in the subset; "
              f"{_families(result, task, 'availability')} in this table)", ""]
    lines += _table(["subset", *(f"{SHORT[s]} over {w}" for s, w in pairs)], rows)
    return lines


def _per_video_tables(result: dict, order: list[str], splits: list[str], name: dict[str, str]) -> list[str]:
    """Per split and task: each video's metric per head (mean over seeds), the reference first,
    ▲/▼ where a head is higher/lower than the reference on that video, and its wins and losses."""
    res, ref = result["results"], result["reference"]
    heads = [ref, *(h for h in order if h != ref)]
    lines = []
    for split in splits:
        for task in result["tasks"]:
            rows = {h: res[h].get("per_video", {}).get(split, {}).get(task) for h in heads}
            if any(r is None for r in rows.values()):
                continue
            metric = WORDS.get(main(result, task), main(result, task))
            lines += ["", f"**Per video, {task}, {split}** ({metric} on each video's valid frames, mean over "
                      f"seeds; {MARKS['better']} / {MARKS['worse']}: higher / lower than `{ref}` on that video, a "
                      "count, not a test; n/a: undefined on that video)", ""]
            cells = []
            for i, video in enumerate(rows[ref]["videos"]):
                marks = [""] + [_win(rows[h]["vs_reference"]["difference"][i]) for h in heads[1:]]
                values = [rows[h]["values"][i] for h in heads]
                cells.append([f"`{video}`", *("n/a" if v is None else f"{v:.3f}{m}" for v, m in zip(values, marks))])
            tally = ["—"] + [f"{r['wins']} / {r['losses']}" + (f" ({r['ties']} tied)" if r["ties"] else "")
                             for r in (rows[h]["vs_reference"] for h in heads[1:])]
            cells.append([f"wins / losses vs `{ref}`", *tally])
            out = _table([name[h] for h in heads], cells)
            lines += [out[0].replace("| head |", "| video |", 1), *out[1:]]
    return lines


def _win(difference: float | None) -> str:
    """The mark of one video's difference from the reference: ▲ higher, ▼ lower, none for a tie."""
    if difference is None or abs(difference) < TIE:
        return ""
    return f" {MARKS['better'] if difference > 0 else MARKS['worse']}"


def _legend(result: dict) -> str:
    """How to read the paired differences: the two intervals, the marks and the margin."""
    marks = "; ".join(f"{MARKS[v]} = {v}: {MEANING[v]}" for v in VERDICTS)
    return (f"How to read the paired differences: *over seeds*, Student t on the per-seed differences "
            f"(n = {len(result['seeds'])} seeds); *over videos*, percentile bootstrap, {result['bootstrap']} "
            "resamples of the split's videos, each scoring every seed of both heads on the same draw (n = videos). "
            f"After each interval its verdict: {marks}. The rerun margin (compare.rerun_margin = "
            f"{result['rerun_margin']:g} sd of the change a rerun of every seed makes to the mean difference, "
            "`docs/compare.md`) is floored at the median spread of the heads compared, so adding a head can move "
            "it. Holm's correction runs over each table's intervals of one kind (its caption says how many). "
            f"† = indicative: fewer than {result['min_videos_bootstrap']} videos (compare.min_videos_bootstrap), "
            "too few for the bootstrap to show video-to-video spread; no verdict, never used in the findings.")


def markdown(result: dict) -> str:
    """The comparison as markdown: findings, then per measure the accuracy and paired-difference
    tables, availability per task, robustness, training protocol, cost."""
    res, ref = result["results"], result["reference"]
    splits = _splits(result)
    rank = ranking_key(result)
    order = sorted(result["heads"], key=lambda h: -res[h]["validation"][rank]["full"][main(result, rank)]["mean"])
    name = {h: f"**`{h}`**" if h == ref else f"`{h}`" for h in order}
    causal = ["", "**Causal protocol**: every frame predicted from the window ending at it (frames <= t only; "
              "`pipeline/stage2/windows.py`), not from overlapping windows averaged."] \
        if result.get("protocol") == "causal" else []
    lines = [describe(result), *causal, "", *_findings(result, order, splits), "", _legend(result)]
    for key in measures(result):
        lines += _measure_tables(result, order, splits, name, key)
    for task in result["tasks"]:
        lines += _availability_tables(result, order, splits, name, task)
    conditions = result["conditions"]
    for key in measures(result):
        have = [s for s in splits if key in res[ref][s]]
        lines += ["", f"**Robustness, {what(result, key)}** (mean ± std; the same trained models evaluated with "
                  "one stream masked on every frame)", ""]
        lines += _table([f"{SHORT[s]} {c.replace('_', ' ')}" for s in have for c in conditions],
                        [[name[h], *(_pm(res[h][s][key][c][main(result, key)]) for s in have for c in conditions)]
                         for h in order])
    train = result["params"]["train"]
    lines += ["", f"**Training protocol** (at most train.epochs = {train['epochs']} epochs, early stopping on "
              f"the validation {' + '.join(what(result, t) for t in result['tasks'])} with patience "
              f"{train['patience']}; epochs counted from 1; mean ± std over seeds; runs the cap stopped were "
              "still improving)", ""]
    lines += _table(["epochs run", "best epoch", "stopped by the cap"],
                    [[name[h], _pm(res[h]["training"]["epochs"], 1), _pm(res[h]["training"]["best_epoch"], 1, 1),
                      f"{res[h]['training']['stopped_by_max']} of {res[h]['training']['runs']}"] for h in order])
    lines += ["", f"**Cost** (parameters; MFLOPs per frame at the training window of {train['window']} "
              "frames, matmuls and convolutions; CPU latency per 1000 frames in batches of 16 windows; training "
              "time per run on this machine)", ""]
    lines += _table(["parameters", "MFLOPs / frame", "CPU ms / 1000 frames", "train s / run"],
                    [[name[h], f"{res[h]['parameters']:,}", f"{res[h]['mflops_per_frame']:.3f}",
                      f"{res[h]['cpu_ms_per_1000_frames']:.1f}", f"{res[h]['train_seconds']['mean']:.0f}"]
                     for h in order])
    lines += _per_video_tables(result, order, splits, name)
    if "tuning" in result:
        from pipeline.stage2.compare import tuned  # it reads this module's words

        lines += tuned.markdown(result)
    return "\n".join(lines) + "\n"
