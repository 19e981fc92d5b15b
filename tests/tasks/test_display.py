"""How a task's outputs are shown, declared by the task itself (pipeline/tasks: `kind`, the words,
`names`, `bounds`, `threshold`, `panel_width`, `clipped`, `describe_options`), so that predict,
the overlay, live, export, the report and the comparison tables never name a task."""

import numpy as np
import pytest

from pipeline.stage2.compare.aggregate import SCORE
from pipeline.stage2.compare.tables import title
from pipeline.tasks import KINDS, TASKS, build_task
from pipeline.tasks.au import AUS, THRESHOLD
from pipeline.tasks.expr import CLASSES
from pipeline.tasks.va import AXES, VAOptions


@pytest.mark.parametrize("name", TASKS.names())
def test_every_task_declares_how_it_is_shown(name):
    task = TASKS.get(name)
    assert task.kind in KINDS
    assert len(task.names) == task.width and all(isinstance(n, str) and n for n in task.names)
    assert all(isinstance(w, str) and w for w in (task.title, task.table_title, task.item))
    lo, hi = task.bounds
    assert lo < hi and task.panel_width > 0
    assert (task.threshold is not None) == (task.kind == "multilabel")
    if task.kind == "dimensional":    # the overlay's plane: centred at 0, two axes
        assert lo == -hi and len(task.names) >= 2
    else:                             # probabilities
        assert task.bounds == (0.0, 1.0)
    if task.threshold is not None:
        assert lo < task.threshold < hi


def test_the_three_tasks_values():
    va, expr, au = (TASKS.get(n) for n in ("va", "expr", "au"))
    assert (va.kind, expr.kind, au.kind) == KINDS
    assert (va.names, expr.names, au.names) == (AXES, CLASSES, AUS) and au.threshold == THRESHOLD == 0.5
    assert (va.title, expr.title, au.title) == ("valence / arousal", "expression", "action units")
    assert [title(n) for n in ("va", "expr", "au", SCORE)] == [
        "Valence-arousal (CCC)", "Expression (macro F1 over 8 classes; accuracy)",
        "Action units (mean F1 over 12 AUs at 0.5)", "Multi-task score (the sum of the tasks' metrics)"]


def test_clipped_follows_the_options_and_leaves_probabilities_alone():
    x = np.array([[1.5, -0.2], [-3.0, 0.9]], np.float32)
    np.testing.assert_array_equal(build_task("va").clipped(x), np.array([[1.0, -0.2], [-1.0, 0.9]], np.float32))
    assert build_task("va", VAOptions(clip=False)).clipped(x) is x
    p = np.array([[0.2, 0.8]])
    assert build_task("expr").clipped(p) is p and build_task("au").clipped(p) is p
    # postprocess clips by the same rule
    np.testing.assert_array_equal(build_task("va").postprocess(x), np.clip(x, -1, 1))


def test_describe_options_says_only_what_a_task_post_processes():
    assert TASKS.get("va").describe_options({"clip": True, "smooth_valence": 20, "smooth_arousal": 0}) == (
        "va predictions clipped: True, smoothing: 20/off")
    assert TASKS.get("expr").describe_options({"class_weights": True}) == ""
    assert TASKS.get("au").describe_options({}) == ""
