"""pipeline/plots.py: one palette (a colour per meaning, heads apart), the stretches where each
stream is missing, shaded one colour per stream, and `jmt tune`'s figures (equal effort,
importances)."""

import numpy as np
import pytest
from matplotlib.colors import to_hex, to_rgba, to_rgba_array

from pipeline.plots import (HEAD_COLOURS, OTHER_COLOURS, PALETTE, colour_of, effort_curve, effort_figure, head_colours,
                            importances_figure, pyplot, runs_of, shade_missing, tune_effort, tune_importances)


def drawn_colours(fig) -> set[str]:
    """The colours (hex, alpha dropped) a figure's axes draw with: lines, patches (bars, spans)
    and collections (error bars, fills, points); not colour-mapped images or meshes, text,
    legends or colour bars."""
    out: set[str] = set()

    def add(colours) -> None:
        out.update(to_hex(c[:3]) for c in to_rgba_array(colours) if c[3] > 0)

    for ax in fig.axes:
        if hasattr(ax, "_colorbar"):
            continue
        for line in ax.lines:
            add(line.get_color())
        for patch in ax.patches:
            add(patch.get_facecolor())
            if patch.get_linewidth():
                add(patch.get_edgecolor())
        for coll in ax.collections:
            if coll.get_array() is not None:  # colour-mapped: its colour bar says what it means
                continue
            add(coll.get_facecolor())
            if np.any(np.asarray(coll.get_linewidth()) > 0):
                add(coll.get_edgecolor())
    return out


MEANINGS = {to_hex(c) for c in (*PALETTE.values(), *OTHER_COLOURS)}
HEADS = {to_hex(c) for c in HEAD_COLOURS}


def test_every_colour_means_one_thing():
    """Each meaning its own colour, the other streams' too; the head colours neither repeat one
    another nor a meaning's."""
    assert len(MEANINGS) == len(PALETTE) + len(OTHER_COLOURS)
    assert len(HEADS) == len(HEAD_COLOURS) and not HEADS & MEANINGS
    assert {"ground truth", "prediction", "visual", "audio", "every stream present", "validation", "test",
            "t over seeds", "bootstrap over videos", "rerun margin"} <= set(PALETTE)


def test_runs_of_finds_every_stretch_including_the_edges():
    assert runs_of(np.array([1, 1, 0, 0, 1, 0, 1, 1], bool)) == [(0, 2), (4, 5), (6, 8)]
    assert runs_of(np.zeros(4, bool)) == [] and runs_of(np.ones(3, bool)) == [(0, 3)]


def test_colours_fixed_for_visual_and_audio_then_by_position():
    streams = ["visual", "audio", "prosody", "egemaps"]
    assert colour_of("visual", streams) == PALETTE["visual"] and colour_of("audio", streams) == PALETTE["audio"]
    assert colour_of("prosody", streams) == OTHER_COLOURS[0] and colour_of("egemaps", streams) == OTHER_COLOURS[1]
    assert len({colour_of(s, streams) for s in streams}) == 4


def test_head_colours_follow_the_heads_order_and_repeat_past_the_palette():
    heads = [f"h{i}" for i in range(len(HEAD_COLOURS) + 2)]
    colours = head_colours(heads)
    assert list(colours) == heads and colours["h0"] == HEAD_COLOURS[0] and colours["h1"] == HEAD_COLOURS[1]
    assert colours[f"h{len(HEAD_COLOURS)}"] == HEAD_COLOURS[0]


def test_shade_missing_draws_one_span_per_missing_stretch_of_each_stream():
    plt = pyplot()
    fig, ax = plt.subplots()
    times = np.arange(10) * 0.1
    masks = {"visual": np.array([1, 1, 0, 0, 1, 1, 1, 0, 1, 1], bool),      # two stretches missing
             "audio": np.ones(10, bool),                                     # never missing
             "prosody": np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 1], bool)}      # one, at the start
    shade_missing(ax, times, masks)
    spans = ax.patches
    assert len(spans) == 3
    colours = [to_rgba(p.get_facecolor())[:3] for p in spans]
    assert colours[:2] == [to_rgba(PALETTE["visual"])[:3]] * 2 and colours[2] == to_rgba(OTHER_COLOURS[0])[:3]
    assert drawn_colours(fig) == {PALETTE["visual"], OTHER_COLOURS[0]}
    x0 = [p.get_x() for p in spans]
    widths = [p.get_width() for p in spans]
    np.testing.assert_allclose(x0, [0.2, 0.7, 0.0])
    np.testing.assert_allclose(widths, [0.2, 0.1, 0.1])                      # to the end of the last frame
    _, names = ax.get_legend_handles_labels()
    assert names == ["no visual", "no prosody"]                              # one legend entry per stream
    plt.close(fig)


# ---- jmt tune's figures: equal effort, and what mattered ----------------------------------------

def _trial(number, state, value, epochs, values=None):
    return {"number": number, "state": state, "value": value, "config": {"train.lr": 1e-3}, "stopped": state,
            "values": values or [value], "epochs": epochs, "seconds": 1.0, "resource_seconds": 1.0,
            "rungs": [2], "nodes": []}


def tune_result(heads=("concat", "only:audio", "late"), budget="trials") -> dict:
    """A small tune.json: the first head with two completed trials (one after a pruned one), a
    failed and a pruned one, its trials listed out of order; the second with pruned trials only
    and no importances; the third with no finished trial at all."""
    first, second, third = heads
    trials = {first: [_trial(2, "complete", 0.7, 12), _trial(0, "complete", 0.5, 12), _trial(1, "pruned", 0.6, 2),
                      _trial(3, "fail", None, 1), _trial(4, "pruned", 0.9, 6)],
              second: [_trial(0, "pruned", 0.2, 2), _trial(1, "pruned", 0.3, 2)],
              third: []}
    importances = {first: {"train.lr": 0.7, "model.dropout": 0.2, "train.window": 0.1},
                   second: "fewer than 2 completed trials", third: "fewer than 2 completed trials"}
    results = {}
    for head, rows in trials.items():
        complete = [t for t in rows if t["state"] == "complete"]
        best = max(complete, key=lambda t: t["value"], default=None)
        finished = [t for t in rows if t["state"] in ("complete", "pruned")]
        results[head] = {
            "study": f"{head}-0", "space": {"train.lr": {"low": 1e-4, "high": 3e-3, "log": True}},
            "searched": ["train.lr"],
            "effort": {"trials": len(finished), "complete": len(complete), "pruned": len(finished) - len(complete),
                       "epochs": sum(t["epochs"] for t in rows), "seconds": 1.0, "resource_seconds": 1.0},
            "best": best and {"trial": best["number"], "value": best["value"], "config": best["config"]},
            "default": None, "importances": importances[head], "trials": rows}
    protocol = {"budget": budget, "trials": 4, "epochs_budget": 30 if budget == "epochs" else None,
                "seconds_budget": 60.0 if budget == "seconds" else None, "sampler": "tpe", "startup_trials": 5,
                "scheduler": "asha", "grace_epochs": 2, "reduction": 3, "rungs": [2, 6, 12], "seed": 0, "folds": 0,
                "train_seed": 0, "objective": "best validation score over epochs", "resource": "CPU",
                "resources_per_step": 1.0, "test_read": False}
    return {"heads": list(heads), "tasks": ["va"], "protocol": protocol, "storage": "study.db in tune.out",
            "params": {}, "results": results, "seconds": 1.0}


def test_effort_curve_counts_finished_trials_by_number_and_only_completed_ones_become_the_best():
    c = effort_curve(tune_result()["results"]["concat"]["trials"])
    np.testing.assert_array_equal(c["trials"], [1, 2, 3, 4])                 # the failed trial is not drawn
    np.testing.assert_array_equal(c["epochs"], [12, 14, 26, 32])             # trials 0, 1, 2, 4
    np.testing.assert_array_equal(c["best"], [0.5, 0.5, 0.7, 0.7])           # pruned 0.9: never the best
    np.testing.assert_array_equal(c["complete"], [True, False, True, False])
    only_pruned = effort_curve(tune_result()["results"]["only:audio"]["trials"])
    assert np.isnan(only_pruned["best"]).all() and len(only_pruned["trials"]) == 2
    assert len(effort_curve([])["best"]) == 0


def _png(path):
    from matplotlib import image

    pixels = image.imread(path)
    assert path.stat().st_size > 0 and pixels.shape[0] > 100 and pixels[..., :3].std() > 0.05
    return pixels


@pytest.mark.parametrize("budget", ["trials", "epochs", "seconds"])
def test_tune_figures_are_written_with_empty_heads_and_string_importances(budget, tmp_path):
    result = tune_result(budget=budget)
    _png(tune_effort(result, tmp_path / "effort.png"))
    _png(tune_importances(result, tmp_path / "importances.png"))


def test_tune_effort_draws_head_colours_steps_and_the_budget_in_its_unit():
    result = tune_result(budget="epochs")
    colours = head_colours(result["heads"])
    fig = effort_figure(result)
    assert drawn_colours(fig) == {colours["concat"], colours["only:audio"], colours["late"], PALETTE["budget"]}
    trials_ax, epochs_ax = fig.axes
    budget = [ln for ax in fig.axes for ln in ax.lines if ln.get_gid() and ln.get_gid().startswith("budget|")]
    assert [ln.get_gid() for ln in budget] == ["budget|epochs"] and list(budget[0].get_xdata()) == [30] * 2
    step = next(ln for ln in epochs_ax.lines if ln.get_gid() == "best|concat")
    assert list(step.get_xdata()) == [12, 14, 26, 32] and list(step.get_ydata()) == [0.5, 0.5, 0.7, 0.7]
    assert "30 training epochs per head" in fig._suptitle.get_text()
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[:3] == ["concat (best 0.700, 4 trials)", "only:audio: no completed trial (2 finished)",
                          "late: no completed trial (0 finished)"]
    pyplot().close(fig)
    fig = effort_figure(tune_result(budget="trials"))
    assert [ln.get_gid() for ax in fig.axes for ln in ax.lines if (ln.get_gid() or "").startswith("budget")] \
        == ["budget|trials"]
    pyplot().close(fig)


def test_tune_importances_one_panel_per_head_largest_on_top_or_why_not():
    result = tune_result()
    fig = importances_figure(result)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["concat", "only:audio", "late"]
    assert drawn_colours(fig) == {head_colours(result["heads"])["concat"]}
    bars = visible[0]
    assert [t.get_text() for t in bars.get_yticklabels()] == ["train.window", "model.dropout", "train.lr"]
    np.testing.assert_allclose([p.get_width() for p in bars.patches], [0.1, 0.2, 0.7])
    why = [t for t in visible[1].texts if t.get_gid() == "none|only:audio"]
    assert why and "fewer than 2 completed trials" in why[0].get_text()
    pyplot().close(fig)
