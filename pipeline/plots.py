"""Shared matplotlib pieces (headless Agg backend) for `jmt predict` and `jmt report`, and the
one palette every figure draws from.

`PALETTE` gives each meaning one colour in every figure (red always means "no face", blue "no
voice", purple "validation"...); `HEAD_COLOURS` colours per-head lines and bars, disjoint from
it, so a head is never drawn in a colour that means something else elsewhere.

`jmt tune`'s figures live here too (`report` draws them when the tune result exists):
`tune_effort` (best validation score against the effort spent, per head) and
`tune_importances` (each head's parameter importances).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

PALETTE = {
    "ground truth": "#000000",
    "prediction": "#2ca02c",
    "visual": "#d62728",                 # a stream: where it is missing, or masked
    "audio": "#1f77b4",
    "every stream present": "#7f7f7f",   # no stream missing: no hue
    "validation": "#9467bd",
    "test": "#ff7f0e",
    "t over seeds": "#17becf",
    "bootstrap over videos": "#e377c2",
    "rerun margin": "#dddddd",           # the band around 0 within which no verdict is stated
    "zero": "#b5b5b5",                   # reference lines at 0
    "spread": "#333333",                 # error bars: ± std over seeds
    "budget": "#525252",                 # a search's budget (jmt tune): where every head stops
}
# a stream's colour: visual (faces) and audio fixed, any other by its position among the others
STREAM_COLOURS = {"visual": PALETTE["visual"], "audio": PALETTE["audio"]}
OTHER_COLOURS = ("#bcbd22", "#8c564b", "#e7ba52")
# per-head colours: tab20b's darker tones, none of them a meaning's colour
HEAD_COLOURS = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173",
                "#5254a3", "#8ca252", "#bd9e39", "#ad494a", "#a55194")


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def colour_of(stream: str, streams: list[str]) -> str:
    """A stream's colour (fixed for visual and audio, then by position among the others)."""
    if stream in STREAM_COLOURS:
        return STREAM_COLOURS[stream]
    others = [s for s in streams if s not in STREAM_COLOURS]
    return OTHER_COLOURS[others.index(stream) % len(OTHER_COLOURS)]


def head_colours(heads: list[str]) -> dict[str, str]:
    """head -> colour by its position in `heads` (a comparison's compare.heads: the same colour
    in every figure of its report); past ten heads the colours repeat."""
    return {h: HEAD_COLOURS[i % len(HEAD_COLOURS)] for i, h in enumerate(heads)}


def runs_of(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index ranges where a boolean mask is True."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(np.diff(m.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def shade_missing(ax, times: np.ndarray, masks: dict[str, np.ndarray]) -> None:
    """Shades the stretches where each stream is missing (its mask False), one colour per stream."""
    step = float(np.median(np.diff(times))) if len(times) > 1 else 0.04
    for stream, present in masks.items():
        colour = colour_of(stream, list(masks))
        for k, (a, b) in enumerate(runs_of(~np.asarray(present, bool))):
            ax.axvspan(times[a], times[b - 1] + step, color=colour, alpha=0.13, lw=0,
                       label=f"no {stream}" if k == 0 else None)



# ---- jmt tune: equal effort, and what mattered --------------------------------------------------

FINISHED = ("complete", "pruned")  # a failed trial spent effort the budget does not count: not drawn


def tune_budget(protocol: dict) -> str:
    """A search's budget in words, per head (tune.json's `protocol`)."""
    p = protocol
    if p["budget"] == "epochs":
        return f"{p['epochs_budget']} training epochs per head (at most {p['trials']} trials)"
    if p["budget"] == "seconds":
        return f"{p['seconds_budget']:g} {p['resource']}-s per head (at most {p['trials']} trials)"
    return f"{p['trials']} trials per head"


def _objective(tasks: list[str]) -> str:
    return f"{tasks[0]} metric" if len(tasks) == 1 else f"sum of the {', '.join(tasks)} metrics"


def effort_curve(trials: list[dict]) -> dict[str, np.ndarray]:
    """A head's finished trials (complete and pruned) in the order they finished, approximated by
    trial number: `trials` finished so far (1, 2, ...), `epochs` spent so far (each trial's
    epochs, rung reruns counted), `best`: the best completed trial's validation score so far (NaN
    before the first completes: a pruned trial never becomes the best, as in tune.json's `best`),
    and each trial's own `value` and whether it `complete`d."""
    done = sorted((t for t in trials if t["state"] in FINISHED), key=lambda t: t["number"])
    value = np.array([np.nan if t["value"] is None else t["value"] for t in done], float)
    complete = np.array([t["state"] == "complete" for t in done], bool)
    best = np.fmax.accumulate(np.where(complete, value, np.nan)) if done else np.zeros(0)
    return {"trials": np.arange(1, len(done) + 1), "epochs": np.cumsum([t["epochs"] for t in done]),
            "best": best, "value": value, "complete": complete}


def effort_figure(result: dict, colours: dict[str, str] | None = None):
    """Two panels, one step line per head: the best validation score so far against the trials
    finished and against the training epochs spent (cumulative); each trial's own score a point
    (dot: complete, cross: pruned, at its score when pruned); the budget a dashed line where it is
    counted in that panel's unit. `colours`: head -> colour (default: by tune.json's head order)."""
    from matplotlib.lines import Line2D

    plt = pyplot()
    p = result["protocol"]
    colours = colours or head_colours(list(result["results"]))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    for head, r in result["results"].items():
        c = effort_curve(r["trials"])
        colour = colours[head]
        if c["complete"].any():
            label = f"{short(head)} (best {np.nanmax(c['best']):.3f}, {len(c['trials'])} trials)"
        else:
            label = f"{short(head)}: no completed trial ({len(c['trials'])} finished)"
        for k, (ax, x) in enumerate(zip(axes, (c["trials"], c["epochs"]))):
            ax.step(x, c["best"], where="post", color=colour, lw=1.6, label=label if k == 0 else None,
                    gid=f"best|{head}")
            for done, marker in ((True, "o"), (False, "x")):
                keep = c["complete"] == done
                ax.plot(x[keep], c["value"][keep], marker=marker, ms=4, ls="none", color=colour, alpha=0.55)
    budget = {"trials": p["trials"], "epochs": p.get("epochs_budget")}
    for ax, unit in zip(axes, ("trials", "epochs")):
        if p["budget"] == unit and budget[unit]:
            ax.axvline(budget[unit], color=PALETTE["budget"], ls="--", lw=1, gid=f"budget|{unit}")
        ax.set_xlim(left=0)
        ax.xaxis.get_major_locator().set_params(integer=True)
    ylabel = f"best validation score so far ({_objective(result['tasks'])})"
    axes[0].set(xlabel="trials finished (complete + pruned, by trial number)", ylabel=ylabel,
                title="best score against trials")
    axes[1].set(xlabel="training epochs spent, cumulative (rung reruns counted)", ylabel=ylabel,
                title="best score against training epochs")
    fig.suptitle(f"Tuning with equal effort: budget {tune_budget(p)}"
                 + ("" if p["budget"] == "seconds" else "; dashed: the budget"))
    handles, labels = axes[0].get_legend_handles_labels()
    neutral = PALETTE["spread"]
    handles += [Line2D([], [], marker="o", ms=4, ls="none", color=neutral),
                Line2D([], [], marker="x", ms=4, ls="none", color=neutral)]
    labels += ["a completed trial's score", "a pruned trial's score when pruned"]
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    return fig


def importances_figure(result: dict, colours: dict[str, str] | None = None):
    """One panel per head: its parameter importances (Optuna's fANOVA over the completed trials,
    summing to 1) as horizontal bars, the largest on top; a head without them says why."""
    plt = pyplot()
    results = result["results"]
    colours = colours or head_colours(list(results))
    n = max(1, len(results))
    cols = min(3, n)
    rows = math.ceil(n / cols)
    longest = max([len(v) for r in results.values() if isinstance(v := r["importances"], dict)] or [1])
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, (0.32 * longest + 1.3) * rows),
                             constrained_layout=True, squeeze=False)
    for ax, (head, r) in zip(axes.flat, results.items()):
        imp = r["importances"]
        ax.set_title(short(head, 40), fontsize=10)
        if isinstance(imp, str) or not imp:
            ax.text(0.5, 0.5, "no importances:\n" + (imp or "none computed"), ha="center", va="center",
                    transform=ax.transAxes, fontsize=9, wrap=True, gid=f"none|{head}")
            ax.set(xticks=[], yticks=[])
            continue
        names = sorted(imp, key=lambda k: imp[k])   # the largest at the top
        ax.barh(np.arange(len(names)), [imp[k] for k in names], color=colours[head], gid=f"bars|{head}")
        ax.set_yticks(np.arange(len(names)), names, fontsize=8)
        ax.set(xlim=(0, 1), xlabel="importance (share of the score's variance)")
    for ax in list(axes.flat)[len(results):]:
        ax.set_visible(False)
    fig.suptitle("Tuning: what mattered per head (fANOVA importances over completed trials)")
    return fig


def _save(fig, path: Path, dpi: int) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def tune_effort(result: dict, path: Path, *, colours: dict[str, str] | None = None, dpi: int = 110) -> Path:
    """Writes `effort_figure` of a tune.json result to `path` (PNG)."""
    return _save(effort_figure(result, colours), path, dpi)


def tune_importances(result: dict, path: Path, *, colours: dict[str, str] | None = None, dpi: int = 110) -> Path:
    """Writes `importances_figure` of a tune.json result to `path` (PNG)."""
    return _save(importances_figure(result, colours), path, dpi)


LABEL = 18  # characters of a head or video name on an axis; longer ones end in "…"


def short(name: str, n: int = LABEL) -> str:
    """A name cut to n characters for an axis or legend."""
    return name if len(name) <= n else name[:n - 1] + "…"
