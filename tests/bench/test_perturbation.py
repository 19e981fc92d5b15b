"""bench/perturbation.py: the +-1 ulp copy of a cache, the params file pointing at it, and the
verdict comparison, on hand-built files and compare.json dicts."""

import copy
import importlib.util

import h5py
import numpy as np
import pytest

from pipeline.config import load_params

from ..conftest import REPO

_spec = importlib.util.spec_from_file_location("perturbation", REPO / "bench/perturbation.py")
perturbation = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(perturbation)


def _iv(mean, low, high, n=3, indicative=None):
    iv = {"mean": mean, "low": low, "high": high, "n": n, "excludes_zero": low > 0 or high < 0}
    if indicative is not None:
        iv["indicative"] = indicative
    return iv


def _summary(mean):
    return {"ccc_mean": {"mean": mean, "std": 0.01, "n": 3}}


def _vs(seeds, videos, per_seed):
    return {"seeds": seeds, "videos": videos, "per_seed": per_seed}


def _comparison():
    """A compare.json cut down to what the verdicts read: reference `a`, heads b and c, one
    split, one availability subset (scored) and one not scored. Per-seed differences with std
    0.01 (b) and 0.02 (c): margins 2 * sqrt(2/3) * 0.015 (the median) = 0.0245 for b and
    2 * sqrt(2/3) * 0.02 = 0.0327 for c."""
    def head(full, both, vs=None, vs_both=None):
        avail = {"both": {"scored": True, "frames": 500, "videos": 3, **_summary(both)},
                 "no_face": {"scored": False, "frames": 12, "videos": 1, "why": "12 valid frames (< 50)"}}
        if vs_both:
            avail["both"]["vs_reference"] = vs_both
        out = {"validation": {"full": _summary(full)}, "availability": {"validation": avail}}
        if vs:
            out["vs_reference"] = {"validation": vs}
        return out

    b_seeds, c_seeds = [0.04, 0.05, 0.06], [-0.12, -0.10, -0.08]
    return {
        "heads": ["a", "b", "c"], "reference": "a", "subsets": {"both": "...", "no_face": "..."},
        "results": {
            "a": head(0.80, 0.82),
            "b": head(0.85, 0.84, _vs(_iv(0.05, 0.03, 0.07), _iv(0.05, 0.02, 0.08, 3, True), b_seeds),
                      _vs(_iv(0.02, -0.03, 0.05), _iv(0.02, 0.00, 0.04, 3, True), b_seeds)),
            "c": head(0.70, 0.60, _vs(_iv(-0.10, -0.15, -0.05), _iv(-0.1, -0.2, -0.01, 3, True), c_seeds),
                      _vs(_iv(-0.22, -0.30, -0.14), _iv(-0.2, -0.3, -0.1, 3, True), c_seeds)),
        },
    }


def test_verdicts_read_every_interval_with_its_margin_and_the_descriptive_rows():
    v = perturbation.verdicts(_comparison())
    assert v["validation/ranking"] == {"verdict": "b > a > c", "used": True, "kind": "descriptive"}
    assert v["validation/both/best"]["verdict"] == "b"
    assert v["validation/no_face/best"] == {"verdict": "not scored", "used": False, "kind": "descriptive"}
    b = v["validation/all/b/seeds"]
    assert (b["verdict"], b["used"], b["low"], b["high"]) == ("above", True, 0.03, 0.07)
    assert b["margin"] == pytest.approx(2 * np.sqrt(2 / 3) * 0.015, abs=1e-6)
    # the video bootstrap with too few videos is a verdict, but not one the findings use;
    # its low bound 0.02 is within b's margin of 0.0245
    assert (v["validation/all/b/videos"]["verdict"], v["validation/all/b/videos"]["used"]) == ("within noise", False)
    assert v["validation/all/c/seeds"]["verdict"] == "below"
    assert v["validation/all/c/videos"]["verdict"] == "within noise"        # high -0.01, margin 0.0327
    assert v["validation/both/b/seeds"]["verdict"] == "includes 0"           # [-0.03, 0.05] beyond +-0.0245
    assert v["validation/no_face/c/videos"] == {"verdict": "n/a", "used": False, "kind": "interval"}
    assert len(v) == 1 + 2 + 2 * 2 * 3  # ranking, two subset winners, 2 heads x 2 kinds x (all + 2 subsets)
    # no margin: the plain rule
    plain = perturbation.verdicts(_comparison(), 0)
    assert plain["validation/all/b/videos"]["verdict"] == "above" and plain["validation/all/c/videos"]["verdict"] == "below"


def test_identical_comparisons_agree_everywhere():
    diff = perturbation.compare_verdicts(_comparison(), _comparison())
    s = diff["summary"]
    assert (s["interval_verdicts"], s["same"], s["withheld"], s["contradicted"], s["holds"]) == (4, 4, 0, 0, True)
    assert s["plain_rule_changed"] == 0 and s["descriptive_changed"] == [] and s["rankings_same"]
    assert all(r["status"] == "same" for r in diff["rows"])


def test_a_contradicted_verdict_fails_the_check_a_withheld_one_does_not():
    other = copy.deepcopy(_comparison())
    res = other["results"]
    # b over seeds: [0.03, 0.07] above -> [-0.01, 0.005]: within noise, withheld
    res["b"]["vs_reference"]["validation"]["seeds"] = _iv(0.0, -0.01, 0.005)
    diff = perturbation.compare_verdicts(_comparison(), other)
    assert diff["withheld"] == ["validation/all/b/seeds"] and diff["contradicted"] == []
    assert diff["summary"]["holds"] and diff["summary"]["plain_rule_changed"] == 1
    # ... -> [-0.05, 0.08]: includes 0 and the whole margin: contradicted
    res["b"]["vs_reference"]["validation"]["seeds"] = _iv(0.015, -0.05, 0.08)
    res["c"]["validation"]["full"]["ccc_mean"]["mean"] = 0.82                     # ranking b > c > a
    res["a"]["availability"]["validation"]["both"]["ccc_mean"]["mean"] = 0.90      # subset winner: a
    diff = perturbation.compare_verdicts(_comparison(), other)
    assert diff["contradicted"] == ["validation/all/b/seeds"] and not diff["summary"]["holds"]
    assert diff["summary"]["descriptive_changed"] == ["validation/both/best", "validation/ranking"]
    assert not diff["summary"]["rankings_same"]
    row = next(r for r in diff["rows"] if r["key"] == "validation/ranking")
    assert (row["original"], row["perturbed"], row["status"]) == ("b > a > c", "b > c > a", "changed")


def test_a_verdict_present_on_one_side_only_is_a_contradiction():
    other = copy.deepcopy(_comparison())
    del other["results"]["b"]["availability"]["validation"]["both"]["vs_reference"]
    diff = perturbation.compare_verdicts(_comparison(), other)
    assert diff["contradicted"] == ["validation/both/b/seeds"]  # the bootstrap there is not used
    row = next(r for r in diff["rows"] if r["key"] == "validation/both/b/videos")
    assert (row["original"], row["perturbed"], row["used"]) == ("within noise", "n/a", False)


def _entry(path, rng, n=300):
    with h5py.File(path, "w") as f:
        f["visual"] = rng.normal(0, 2, (n, 7)).astype(np.float16)
        f["audio"] = np.concatenate([np.zeros((n, 1)), rng.normal(0, 1, (n, 4))], 1).astype(np.float16)
        f["visual_mask"] = rng.random(n) < 0.8
        f["audio_mask"] = rng.random(n) < 0.7
        f["labels"] = rng.uniform(-1, 1, (n, 2)).astype(np.float32)


def test_perturb_cache_moves_every_embedding_value_by_one_ulp(tmp_path):
    src, rng = tmp_path / "src", np.random.default_rng(0)
    src.mkdir()
    for name in ("v1", "v2"):
        _entry(src / f"{name}.h5", rng)
    (src / "report.json").write_text("{}")
    facts = perturbation.perturb_cache(src, tmp_path / "copy", seed=3)
    assert facts == {"files": 2, "values": 2 * 300 * (7 + 5), "seed": 3}
    assert (tmp_path / "copy/report.json").read_text() == "{}"
    ups = []
    for name in ("v1", "v2"):
        with h5py.File(src / f"{name}.h5") as a, h5py.File(tmp_path / f"copy/{name}.h5") as b:
            for key in ("visual_mask", "audio_mask", "labels"):
                assert np.array_equal(a[key][...], b[key][...]), key
            for key in ("visual", "audio"):
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
    assert 0.4 < np.mean(ups) < 0.6
    again = perturbation.perturb_cache(src, tmp_path / "again", seed=3)
    with h5py.File(tmp_path / "copy/v1.h5") as b, h5py.File(tmp_path / "again/v1.h5") as c:
        assert again == facts and np.array_equal(b["visual"][...], c["visual"][...])


def test_perturb_cache_refuses_non_float16_embeddings(tmp_path):
    (tmp_path / "src").mkdir()
    with h5py.File(tmp_path / "src/v.h5", "w") as f:
        f["visual"] = np.zeros((3, 2), np.float32)
        f["audio"] = np.zeros((3, 2), np.float16)
    with pytest.raises(SystemExit, match="visual is float32, expected float16"):
        perturbation.perturb_cache(tmp_path / "src", tmp_path / "copy", seed=0)


def test_perturbed_params_point_at_the_copy_and_keep_everything_else(tmp_path):
    original = {"heads": ["jmt", "concat"], "seeds": [4, 5], "reference": "concat"}
    path = perturbation.perturbed_params(REPO / "params.yaml", tmp_path / "emb", tmp_path, original)
    p, base = load_params(path), load_params(REPO / "params.yaml")
    assert p.path(p.embed.out) == tmp_path / "emb"
    assert p.path(p.corpus.root) == (REPO / base.corpus.root).resolve()
    assert (p.compare.heads, p.compare.seeds, p.compare.reference) == (["jmt", "concat"], [4, 5], "concat")
    for key in ("runs", "metrics", "table"):
        assert p.path(getattr(p.compare, key)).parent == tmp_path
    assert p.model == base.model and p.train.model_dump(exclude={"out", "live_dir"}) == \
        base.train.model_dump(exclude={"out", "live_dir"})
