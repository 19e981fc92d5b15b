"""A `files` stream in `jmt embed`: features another tool wrote, one CSV per entry, read beside
the computed streams; its own mask and provenance (file, sha256, columns) in the cache; an edited
file re-embeds its entry only; a missing or bad file is a recorded skip that loses nothing."""

import hashlib
import json

import h5py
import numpy as np
import pytest

from pipeline import cache
from pipeline.errors import JmtError, ParamsError
from pipeline.config import BackboneParams
from pipeline.stage1.backbones import build_backbone, weights_sha256
from pipeline.stage1.embed import run_embed

from .helpers import params_at
from .test_embed import FRAMES, _shared

FILES = {"name": "files", "files": {"path": "tool/{entry}.csv", "columns": ["a", "b"], "frame_column": "frame",
                                    "first_frame": 1, "confidence_column": "confidence"}}


def write_csv(path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An OpenFace-like CSV (1-based frames, confidence) of n frames; every 7th frame has low
    confidence, frame 3 has no row. Returns the expected features (n, 2) and mask (n,)."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, 2)).round(3)
    conf = np.where(np.arange(n) % 7 == 6, 0.2, 0.9)
    lines = ["frame, confidence, a, b"] + [f"{i + 1}, {conf[i]}, {values[i, 0]}, {values[i, 1]}"
                                           for i in range(n) if i != 3]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    mask = (conf >= 0.5) & (np.arange(n) != 3)
    return np.where(mask[:, None], values, 0.0), mask


@pytest.fixture
def with_files(tiny_cache, tmp_path):
    params, _ = tiny_cache
    expected = {name: write_csv(tmp_path / "tool" / f"{name}.csv", n, seed) for seed, (name, n) in
                enumerate(sorted(FRAMES.items()))}
    three = params_at(tmp_path, params.path(params.corpus.root), **_shared(params), embed={"streams": {
        "visual": {"name": "fer_xception"}, "audio": {"name": "logmel_stats"}, "tool": FILES}})
    return params, three, expected


def test_a_files_stream_is_embedded_with_its_mask_and_provenance(with_files):
    params, three, expected = with_files
    result = run_embed(three)
    assert sorted(result.done) == sorted(FRAMES) and result.skipped == []
    for name in FRAMES:
        with h5py.File(cache.entry_path(three.path(three.embed.out), name)) as f, \
                h5py.File(cache.entry_path(params.path(params.embed.out), name)) as two:
            streams = cache.attrs_of(f)["streams"]
            assert [(s["name"], s["input"]) for s in streams] == [("visual", "crops"), ("audio", "logmel"),
                                                                    ("tool", "files")]
            tool = streams[2]
            path = three.root / "tool" / f"{name}.csv"
            assert tool["dim"] == 2 and tool["weights"] == "none (features read from files)"
            assert tool["files"]["file"] == f"tool/{name}.csv"
            assert tool["files"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
            assert tool["files"]["columns"] == ["a", "b"]
            values, mask = expected[name]
            assert tool["files"]["frames_masked"] == int((~mask).sum())
            np.testing.assert_array_equal(f[cache.stream_key("tool", "mask")][...], mask)
            np.testing.assert_allclose(f[cache.stream_key("tool", "features")][...].astype(np.float32), values,
                                       rtol=1e-3, atol=1e-3)   # float16 storage
            for s in ("visual", "audio"):   # the computed streams are the two-stream cache's
                for what in ("features", "mask"):
                    np.testing.assert_array_equal(f[cache.stream_key(s, what)][...], two[cache.stream_key(s, what)][...])


def test_an_edited_file_re_embeds_its_entry_and_a_missing_one_is_a_recorded_skip(with_files):
    params, three, expected = with_files
    run_embed(three)
    assert run_embed(three).done == {}                       # all current
    write_csv(three.root / "tool" / "demo_01.csv", FRAMES["demo_01"], seed=99)
    again = run_embed(three)
    assert sorted(again.done) == ["demo_01"]
    out = three.path(three.embed.out)
    kept = cache.entry_path(out, "demo_02").read_bytes()
    (three.root / "tool" / "demo_02.csv").unlink()
    missing = run_embed(three)
    assert missing.done == {} and [s["entry"] for s in missing.skipped] == ["demo_02"]
    assert "tool/demo_02.csv: feature file not found" in missing.skipped[0]["error"]
    assert cache.entry_path(out, "demo_02").read_bytes() == kept   # nothing already computed is lost
    report = json.loads((out / cache.REPORT).read_text())
    assert [s["entry"] for s in report["skipped"]] == ["demo_02"]
    (three.root / "tool" / "demo_00_left.csv").write_text("frame, confidence, a, b\n1, 0.9, 1.0, oops\n")
    bad = run_embed(three)
    assert "demo_00_left.csv, line 2, column 'b': 'oops' is not a number" in \
        {s["entry"]: s["error"] for s in bad.skipped}["demo_00_left"]


def test_files_params(tmp_path):
    with pytest.raises(JmtError, match="name: files needs `files:`"):
        build_backbone(BackboneParams(name="files"), tmp_path)
    with pytest.raises(JmtError, match=r"unknown placeholder \{name\}"):
        build_backbone(BackboneParams(name="files", files={"path": "{name}.csv"}), tmp_path)
    with pytest.raises(JmtError, match="files has no weights"):
        build_backbone(BackboneParams(name="files", files={"path": "{video}.csv"}, pretrained=True), tmp_path)
    with pytest.raises(JmtError, match="does not take `files`"):   # another backbone given files:
        build_backbone(BackboneParams(name="logmel_stats", files={"path": "{video}.csv"}), tmp_path)
    with pytest.raises(ParamsError):
        params_at(tmp_path, tmp_path, embed={"streams": {"x": {"name": "files", "files": {"path": "a", "bogus": 1}}}})
    # what the features are (columns) is in the weights' hash that checkpoints compare; where they are is not
    a = build_backbone(BackboneParams(name="files", files={"path": "a/{video}.csv", "columns": ["x"]}), tmp_path)
    b = build_backbone(BackboneParams(name="files", files={"path": "b/{video}.csv", "columns": ["x"]}), tmp_path)
    c = build_backbone(BackboneParams(name="files", files={"path": "a/{video}.csv", "columns": ["y"]}), tmp_path)
    assert weights_sha256(a) == weights_sha256(b) != weights_sha256(c)
    assert a.dim == 1
