"""bench/perturbation.py: the +-1 ulp copy of a cache, the params file pointing at it, and the
verdict check of `--against` on two real compare.json (the rule it applies,
pipeline/stage2/compare/survival.py, is tested in tests/stage2/test_survival.py)."""

import copy
import importlib.util
import json
import sys

import h5py
import numpy as np
import pytest

from pipeline import cache
from pipeline.config import load_params
from pipeline.stage2.compare.survival import flat_verdicts
from pipeline.stage2.verdicts import annotate, paired_blocks

from ..conftest import REPO
from ..embeddings import write_embeddings

_spec = importlib.util.spec_from_file_location("perturbation", REPO / "bench/perturbation.py")
perturbation = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(perturbation)


def test_the_verdicts_of_a_real_multi_task_comparison(tmp_path_factory):
    """Every paired difference of compare.json has its interval rows, and every key names a
    task or the score."""
    from ..stage2.multitask import compared_tasks

    params, result = compared_tasks(tmp_path_factory)
    stored = json.loads(params.path(params.compare.metrics).read_text())
    v = flat_verdicts(stored)
    for split, key, subset, head, vs in paired_blocks(stored):
        for which in ("seeds", "videos"):
            row = v[f"{split}/{key}/{subset}/{head}/{which}"]
            assert (row["verdict"], row["margin"]) == (vs[which]["verdict"], vs["margin"])
    assert {k.split("/")[1] for k in v} == {"va", "expr", "au", "score"}
    assert {f"{s}/{k}/ranking" for s in ("validation", "test") for k in ("va", "expr", "au", "score")} <= set(v)
    assert perturbation.score_shift(stored, stored) == {"va": 0.0, "expr": 0.0, "au": 0.0, "score": 0.0}


def test_against_checks_two_existing_comparisons_and_refuses_different_ones(tmp_path_factory, tmp_path, monkeypatch,
                                                                            capsys):
    from ..stage2.multitask import compared_tasks

    params, _ = compared_tasks(tmp_path_factory)
    original = json.loads(params.path(params.compare.metrics).read_text())
    key = "validation/expr/all/concat/seeds"
    was = flat_verdicts(original)[key]["verdict"]
    moved = copy.deepcopy(original)
    vs = moved["results"]["concat"]["vs_reference"]["validation"]["expr"]
    m = vs["margin"]
    # far below and narrow: worse, with a p near 0 even after Holm over the family; annotated
    # again as `jmt compare` would (its bootstraps, without their draws, can only gain verdicts:
    # weakened rows at most, never a contradiction)
    vs["seeds"].update(low=-3 * m - 0.1 - 1e-4, high=-3 * m - 0.1, mean=-3 * m - 0.1 - 5e-5)
    annotate(moved, original["rerun_margin"])
    assert vs["seeds"]["verdict"] == "worse"
    (tmp_path / "a.json").write_text(json.dumps(original))
    (tmp_path / "b.json").write_text(json.dumps(moved))
    argv = ["perturbation.py", "--params", str(REPO / "params.yaml"), "--original", str(tmp_path / "a.json"),
            "--out", str(tmp_path / "out.json")]
    monkeypatch.setattr(sys, "argv", [*argv, "--against", str(tmp_path / "a.json")])
    perturbation.main()
    same = json.loads((tmp_path / "out.json").read_text())
    assert same["summary"]["holds"] and same["summary"]["contradicted"] == 0 and same["cache"] is None
    assert same["max_abs_change"] == {"va": 0.0, "expr": 0.0, "au": 0.0, "score": 0.0}
    monkeypatch.setattr(sys, "argv", [*argv, "--against", str(tmp_path / "b.json")])
    perturbation.main()
    diff = json.loads((tmp_path / "out.json").read_text())
    status = {"better": "contradicted", "worse": "same", "no difference shown": "weakened",
              "within rerun noise": "withheld"}[was]
    assert next(r for r in diff["rows"] if r["key"] == key)["status"] == status
    assert diff["contradicted"] == ([key] if status == "contradicted" else [])
    assert diff["summary"]["holds"] == (status != "contradicted")
    assert (key in diff["weakened"]) == (status == "weakened")
    assert "interval verdicts the findings use" in capsys.readouterr().out
    other = {**original, "tasks": ["va"]}
    (tmp_path / "c.json").write_text(json.dumps(other))
    monkeypatch.setattr(sys, "argv", [*argv, "--against", str(tmp_path / "c.json")])
    with pytest.raises(SystemExit, match="differ in tasks: not the same comparison"):
        perturbation.main()
    old = {k: v for k, v in original.items() if k not in ("tasks", "streams")}
    (tmp_path / "old.json").write_text(json.dumps(old))
    monkeypatch.setattr(sys, "argv", [*argv, "--against", str(tmp_path / "old.json")])
    with pytest.raises(SystemExit, match="written by an older `jmt compare`"):
        perturbation.main()


def test_perturb_cache_moves_every_embedding_value_by_one_ulp(tmp_path):
    src = tmp_path / "src"
    streams = {"visual": 7, "audio": 5, "prosody": 3}
    for i, name in enumerate(("v1", "v2")):
        write_embeddings(src, name, seed=i, n=300, streams=streams)
    with h5py.File(src / "v1.h5", "r+") as f:    # zeros move to the smallest subnormals
        x = f[cache.stream_key("audio", "features")]
        x[:, 0] = 0
        f.attrs[cache.CONTENT_HASH] = cache.content_hash(f)
    (src / "report.json").write_text("{}")
    facts = perturbation.perturb_cache(src, tmp_path / "copy", seed=3)
    assert facts == {"files": 2, "values": 2 * 300 * (7 + 5 + 3), "seed": 3}
    assert (tmp_path / "copy/report.json").read_text() == "{}"
    ups = []
    for name in ("v1", "v2"):
        with h5py.File(src / f"{name}.h5") as a, h5py.File(tmp_path / f"copy/{name}.h5") as b:
            assert cache.attrs_of(a)["streams"] == cache.attrs_of(b)["streams"]
            keys = ["timestamps", *(cache.stream_key(s, "mask") for s in streams)]
            for key in keys:
                assert np.array_equal(a[key][...], b[key][...]), key
            for s in streams:
                key = cache.stream_key(s, "features")
                old, new = a[key][...], b[key][...]
                assert new.dtype == np.float16 and (old != new).all()
                # one ulp = neighbouring bit patterns; for finite non-zero values of one sign the
                # float16 encoding is monotone in the integer it spells
                nz = old != 0
                bits_old, bits_new = old.view(np.int16)[nz].astype(int), new.view(np.int16)[nz].astype(int)
                assert (np.abs(bits_new - bits_old) == 1).all()
                tiny = float(np.finfo(np.float16).smallest_subnormal)
                assert np.isin(new[~nz].astype(np.float64), [tiny, -tiny]).all()
                ups.append((new.astype(np.float64) > old.astype(np.float64)).mean())
            # the copy's recorded content hash is its own: its fingerprint differs, `jmt cache verify` agrees
            assert cache.recorded_hash(b) == cache.content_hash(b) != cache.recorded_hash(a)
    assert 0.4 < np.mean(ups) < 0.6
    assert cache.folder_fingerprint(tmp_path / "copy") != cache.folder_fingerprint(src)
    again = perturbation.perturb_cache(src, tmp_path / "again", seed=3)
    with h5py.File(tmp_path / "copy/v1.h5") as b, h5py.File(tmp_path / "again/v1.h5") as c:
        key = cache.stream_key("visual", "features")
        assert again == facts and np.array_equal(b[key][...], c[key][...])


def test_perturb_cache_refuses_non_float16_embeddings(tmp_path):
    meta = [{"name": "visual", "backbone": "test", "input": "crops", "weights_sha256": "none", "weights": "none",
             "dim": 2}]
    with cache.write_entry(tmp_path / "src", "v", stage="embed", config={},
                           attrs={"n_frames": 3, "fps": 30.0, "streams": meta}) as f:
        f.create_dataset(cache.stream_key("visual", "features"), data=np.zeros((3, 2), np.float32))
        f.create_dataset(cache.stream_key("visual", "mask"), data=np.ones(3, bool))
    with pytest.raises(SystemExit, match="streams/visual/features is float32, expected float16"):
        perturbation.perturb_cache(tmp_path / "src", tmp_path / "copy", seed=0)


def test_perturbed_params_point_at_the_copy_and_keep_everything_else(tmp_path):
    original = {"heads": ["jmt", "concat"], "seeds": [4, 5], "reference": "concat"}
    path = perturbation.perturbed_params(REPO / "params.yaml", tmp_path / "emb", tmp_path, original)
    p, base = load_params(path), load_params(REPO / "params.yaml")
    root = (REPO / "params.yaml").resolve().parent
    assert p.path(p.embed.out) == tmp_path / "emb"
    assert p.path(p.corpus.root) == (root / base.corpus.root).resolve()
    assert p.path(p.labels.out) == (root / base.labels.out).resolve()        # the labels cache: the original's
    assert list(p.embed.streams) == list(base.embed.streams) and p.embed.streams == base.embed.streams
    assert (p.compare.heads, p.compare.seeds, p.compare.reference) == (["jmt", "concat"], [4, 5], "concat")
    for key in ("runs", "metrics", "table"):
        assert p.path(getattr(p.compare, key)).parent == tmp_path
    assert p.model == base.model and p.tasks == base.tasks
    assert p.train.model_dump(exclude={"out", "live_dir"}) == base.train.model_dump(exclude={"out", "live_dir"})
