"""The picture of docs/demo-corpus.md (pipeline.demo.figure)."""

import numpy as np

from pipeline.demo import figure
from pipeline.tasks.au import AUS
from pipeline.tasks.expr import CLASSES


def test_panels_show_every_expression_and_action_unit():
    panels = figure.panels()
    assert len(panels) == len(CLASSES) + 1 + len(AUS)
    titles = [t.split("\n")[0] for t, _ in panels]
    assert titles == list(CLASSES) + ["neutral"] + list(AUS)
    assert panels[CLASSES.index("Happiness")][0].endswith("AU6 AU12")
    assert panels[CLASSES.index("Neutral")][0].endswith("no AU")
    neutral = panels[len(CLASSES)][1]
    for _, img in panels[len(CLASSES) + 1:]:      # every AU panel differs from the neutral face
        assert np.abs(img - neutral).max() > 0.2


def test_the_figure_is_written(tmp_path):
    from PIL import Image

    path = figure.expression_grid(tmp_path / "grid.png")
    with Image.open(path) as im:
        assert im.size[0] > 1000 and im.size[1] > 500
