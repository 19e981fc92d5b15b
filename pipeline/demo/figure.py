"""The picture in docs/demo-corpus.md: the demo face showing each expression and each action unit.

    python -m pipeline.demo.figure docs/demo-expressions.png

Top row: the 8 EXPR classes at intensity 0.9 (their `expression.PROFILES`, no speech); below:
the neutral face, then each of the 12 AUs alone at intensity 1, as `face.expression_patch`
renders them (the aligned face, before it is placed, lit and encoded in a video).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipeline.demo import expression, face
from pipeline.tasks.au import AUS
from pipeline.tasks.expr import CLASSES

CROP = (slice(58, 178), slice(30, 140))   # rows, cols of the head patch: brows to chin
DESCRIPTIONS = {
    "AU1": "inner brow raiser", "AU2": "outer brow raiser", "AU4": "brow lowerer", "AU6": "cheek raiser",
    "AU7": "lid tightener", "AU10": "upper lip raiser", "AU12": "lip corner puller",
    "AU15": "lip corner depressor", "AU23": "lip tightener", "AU24": "lip pressor", "AU25": "lips part",
    "AU26": "jaw drop",
}


def panels() -> list[tuple[str, np.ndarray]]:
    """(title, RGB crop) of every panel, in reading order."""
    out = []
    for c in CLASSES:
        aus = 0.9 * expression.PROFILE_MATRIX[expression.CLASS_INDEX[c]]
        shown = " ".join(a for a, x in zip(AUS, aus) if x >= expression.AU_THRESHOLD) or "no AU"
        out.append((f"{c}\n{shown}", face.expression_patch(aus)[CROP][..., :3]))
    out.append(("neutral\n(every AU 0)", face.expression_patch()[CROP][..., :3]))
    for k, a in enumerate(AUS):
        aus = np.zeros(len(AUS))
        aus[k] = 1.0
        out.append((f"{a}\n{DESCRIPTIONS[a]}", face.expression_patch(aus)[CROP][..., :3]))
    return out


def expression_grid(path: Path) -> Path:
    """Writes the figure (PNG) to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = panels()
    cols = 8
    rows = 1 + int(np.ceil((len(items) - len(CLASSES)) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.55, rows * 2.05), dpi=100)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (title, img) in enumerate(items[:len(CLASSES)]):
        axes[0, i].imshow(np.clip(img, 0, 1))
        axes[0, i].set_title(title, fontsize=7)
    for i, (title, img) in enumerate(items[len(CLASSES):]):
        ax = axes[1 + i // cols, i % cols]
        ax.imshow(np.clip(img, 0, 1))
        ax.set_title(title, fontsize=7)
    fig.suptitle("jmt demo face: the 8 expressions (intensity 0.9, top) and each action unit alone",
                 fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    plt.close(fig)
    from PIL import Image

    # 256 colours keep the file small (the faces need no more at this size)
    Image.fromarray(rgb).quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE) \
        .save(path, optimize=True)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, nargs="?", default=Path("docs/demo-expressions.png"))
    print(expression_grid(ap.parse_args().out))


if __name__ == "__main__":
    main()
