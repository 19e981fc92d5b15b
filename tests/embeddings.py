"""Small embeddings entries written the way `jmt embed` writes them (cache.write_entry, the
cache.FEATURES layout unless told otherwise), with random features, masks and -5 labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import cache


def write_embeddings(folder: Path, name: str, *, seed: int = 0, n: int = 50, split: str = "train",
                     widths: tuple[int, int] = (6, 4), features: dict | None = None) -> Path:
    """One entry: visual (n, widths[0]) and audio (n, widths[1]) float16, ~90 % faces, ~60 %
    voice, the first 5 labels -5; `features` overrides the feature datasets' storage."""
    rng = np.random.default_rng(seed)
    attrs = {"video": f"{name}.mp4", "fps": 30.0, "n_frames": n, "split": split, "side": None,
             "visual_backbone": "test", "visual_weights_sha256": "none", "audio_backbone": "test",
             "audio_weights_sha256": "none"}
    with cache.write_entry(folder, name, stage="embed", config={"seed": seed}, attrs=attrs) as f:
        for key, width in (("visual", widths[0]), ("audio", widths[1])):
            f.create_dataset(key, data=rng.normal(size=(n, width)).astype(np.float16),
                             **(features if features is not None else cache.FEATURES))
        f.attrs["visual_dim"], f.attrs["audio_dim"] = widths
        labels = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
        labels[:5] = -5
        app = cache.Appender(f, cache.LAYOUTS["embed"], ["visual_mask", "audio_mask", "labels", "label_mask",
                                                          "timestamps"])
        app.append(visual_mask=rng.random(n) < 0.9, audio_mask=rng.random(n) < 0.6, labels=labels,
                   label_mask=(labels != -5).all(1), timestamps=np.arange(n) / 30.0)
    return cache.entry_path(folder, name)
