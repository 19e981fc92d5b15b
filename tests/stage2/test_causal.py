"""The causal protocol (pipeline/stage2/windows.py) for every head on the tiny demo cache: frame t
depends on frames <= t only, each frame's output is its own window's last one, live's rolling
window computes the same one frame at a time, and evaluate and compare select it without
touching the offline results."""

import json

import numpy as np
import pytest
import torch

from pipeline.config import load_params
from pipeline.stage2.causal import protocol_paths
from pipeline.stage2.data import feature_key, mask_key, read_window
from pipeline.stage2.evaluate import command as evaluate_command
from pipeline.stage2.evaluate import evaluate_model
from pipeline.stage2.heads import build_head
from pipeline.stage2.windows import RollingWindow, inference_hop, predict_entry, predict_entry_causal, predict_split
from pipeline.tasks import tasks_of

from .test_heads import FUSION
from .test_train import tiny_entries

pytestmark = pytest.mark.usefixtures("one_thread")

WINDOW = 16
HEADS = FUSION + ["only:visual", "only:audio"]
CPU = torch.device("cpu")


def model_for(name: str, entry, tasks=("va",)):
    torch.manual_seed(0)
    model = build_head(name, streams={s: entry.widths[s] for s in entry.streams}, tasks=list(tasks), d_model=16)
    return model.eval()


def perturbed_after(entry, t0: int, seed: int = 1):
    """A copy of a preloaded entry whose features and masks after frame t0 are redrawn."""
    rng = np.random.default_rng(seed)
    arrays = dict(entry.arrays)
    for s in entry.streams:
        x = arrays[feature_key(s)].astype(np.float32).copy()
        x[t0 + 1:] = rng.normal(size=x[t0 + 1:].shape)
        m = arrays[mask_key(s)].copy()
        m[t0 + 1:] = rng.random(len(m) - t0 - 1) > 0.5
        arrays[feature_key(s)], arrays[mask_key(s)] = x, m
    copy = type(entry)(**{**entry.__dict__, "arrays": arrays})
    return copy


@pytest.mark.parametrize("name", HEADS)
def test_frame_t_never_sees_later_frames(tiny_cache, name):
    entry = tiny_entries(tiny_cache)[0]
    model = model_for(name, entry)
    t0 = entry.n // 2
    before = predict_entry_causal(model, entry, WINDOW, CPU)["va"]
    after = predict_entry_causal(model, perturbed_after(entry, t0), WINDOW, CPU)["va"]
    np.testing.assert_array_equal(before[:t0 + 1], after[:t0 + 1])
    assert np.abs(before[t0 + 1:] - after[t0 + 1:]).max() > 1e-4   # the later frames did change
    assert np.isfinite(before).all() and before.shape == (entry.n, 2)


def test_offline_protocol_does_see_later_frames(tiny_cache):
    """What the causal test guards against: JMT's offline windows attend to later frames."""
    entry = tiny_entries(tiny_cache)[0]
    model = model_for("jmt", entry)
    t0 = entry.n // 2
    before = predict_entry(model, entry, WINDOW, inference_hop(WINDOW), CPU)["va"]
    after = predict_entry(model, perturbed_after(entry, t0), WINDOW, inference_hop(WINDOW), CPU)["va"]
    assert np.abs(before[:t0 + 1] - after[:t0 + 1]).max() > 1e-4


@pytest.mark.parametrize("name", ["jmt", "rjca"])
def test_each_frame_is_the_last_output_of_its_own_window(tiny_cache, name):
    entry = tiny_entries(tiny_cache)[0]
    model = model_for(name, entry, ("va", "expr", "au"))
    out = predict_entry_causal(model, entry, WINDOW, CPU)
    for t in (0, 1, WINDOW - 2, WINDOW - 1, WINDOW + 3, entry.n - 1):
        length = min(t + 1, WINDOW)
        w = read_window(entry, t - length + 1, length)
        x = {k: {s: v.unsqueeze(0) for s, v in w[k].items()} for k in ("streams", "masks")}
        with torch.no_grad():
            ref = model(x["streams"], x["masks"])
        for task in ("va", "expr", "au"):
            np.testing.assert_allclose(out[task][t], ref[task][0, -1].numpy(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["jmt", "rjca"])
def test_the_rolling_window_is_the_causal_protocol_one_frame_at_a_time(tiny_cache, name):
    """Live's RollingWindow fed an entry frame by frame, frame 5 dropped (`skip`), gives the
    causal protocol's outputs of the entry with nothing present at frame 5."""
    entry = tiny_entries(tiny_cache)[0]
    model = model_for(name, entry, ("va", "expr", "au"))
    gone = 5
    arrays = dict(entry.arrays)
    for s in entry.streams:
        x, m = arrays[feature_key(s)].copy(), arrays[mask_key(s)].copy()
        x[gone], m[gone] = 0, False
        arrays[feature_key(s)], arrays[mask_key(s)] = x, m
    absent = type(entry)(**{**entry.__dict__, "arrays": arrays})
    want = predict_entry_causal(model, absent, WINDOW, CPU)
    rolling = RollingWindow(model, WINDOW, {s: entry.widths[s] for s in entry.streams})
    got: dict[str, list] = {t: [] for t in want}
    for t in range(entry.n):
        if t == gone:
            rolling.skip()
            continue
        frame = absent.read(t, t + 1)
        out = rolling.push({s: frame[feature_key(s)][0].astype(np.float32) for s in entry.streams},
                           {s: bool(frame[mask_key(s)][0]) for s in entry.streams})
        for task, y in out.items():
            got[task].append(y[0].numpy())
    assert len(rolling.frames) == WINDOW and entry.n > 2 * WINDOW
    kept = [t for t in range(entry.n) if t != gone]
    for task in ("va", "expr", "au"):
        np.testing.assert_allclose(np.stack(got[task]), want[task][kept], atol=1e-6, rtol=0)


def test_a_dropped_stream_is_masked_in_every_causal_window(tiny_cache):
    entry = tiny_entries(tiny_cache)[0]
    model = model_for("jmt", entry)
    tasks = tasks_of(["va"])
    dropped = predict_split(model, [entry], WINDOW, inference_hop(WINDOW), CPU, tasks, drop="audio", protocol="causal")
    arrays = dict(entry.arrays)
    arrays[mask_key("audio")] = np.zeros_like(arrays[mask_key("audio")])
    masked = type(entry)(**{**entry.__dict__, "arrays": arrays})
    ref = predict_split(model, [masked], WINDOW, inference_hop(WINDOW), CPU, tasks, protocol="causal")
    np.testing.assert_array_equal(dropped[entry.name]["va"], ref[entry.name]["va"])
    with pytest.raises(ValueError, match="offline, causal"):
        predict_split(model, [entry], WINDOW, inference_hop(WINDOW), CPU, tasks, protocol="future")


def test_protocol_paths_never_reuse_the_params_outputs():
    assert protocol_paths({"metrics": "metrics/eval.json", "out": "reports/eval", "table": "reports/compare.md"},
                          "causal") == {"metrics": "metrics/eval-causal.json", "out": "reports/eval-causal",
                                        "table": "reports/compare-causal.md"}


def test_evaluate_protocol_causal_writes_beside_the_offline_metrics(trained, tmp_path, monkeypatch):
    offline = evaluate_model(trained, write=False)
    causal = evaluate_model(trained.updated(evaluate={"protocol": "causal"}), write=False)
    assert offline["protocol"] == "offline" and causal["protocol"] == "causal"
    assert causal["validation"]["va"]["post"]["frames"] == offline["validation"]["va"]["post"]["frames"]
    assert causal["validation"]["va"]["ccc_mean"] != offline["validation"]["va"]["ccc_mean"]
    # the command line: another protocol than the params' goes to its own files
    params_file = tmp_path / "params.yaml"
    import yaml
    data = trained.model_dump()
    data["evaluate"] = {**data["evaluate"], "metrics": str(tmp_path / "eval.json"), "out": str(tmp_path / "eval")}
    params_file.write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)
    evaluate_command(params=params_file, checkpoint=trained.path(trained.train.out), show=False, protocol="causal")
    written = json.loads((tmp_path / "eval-causal.json").read_text())
    assert written["protocol"] == "causal" and not (tmp_path / "eval.json").exists()
    assert written["validation"]["va"]["post"] == pytest.approx(causal["validation"]["va"]["post"])
    assert (tmp_path / "eval-causal" / "predictions" / "validation").is_dir()
    assert load_params(params_file).evaluate.protocol == "offline"


def test_compare_protocol_causal_trains_the_same_models_and_scores_them_causally(compared, tmp_path):
    from pipeline.stage2.compare import run_compare, run_folder

    params, offline = compared
    paths = protocol_paths({"runs": str(tmp_path / "runs"), "metrics": str(tmp_path / "compare.json"),
                            "table": str(tmp_path / "compare.md")}, "causal")
    causal = run_compare(params.updated(compare={"heads": ["jmt", "concat"], "seeds": [0], "protocol": "causal",
                                                 **paths}))
    assert causal["protocol"] == "causal" and "protocol" not in offline
    assert causal["fingerprints"]["code"] == {h: offline["fingerprints"]["code"][h] for h in ("jmt", "concat")}
    assert causal["timing"]["trained"] == 2   # its own runs: the offline ones' keys differ
    run_dir = run_folder(params.updated(compare={"runs": str(tmp_path / "runs-causal")}), causal, "jmt", 0)
    ours = torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]
    theirs = torch.load(run_folder(params, offline, "jmt", 0) / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)       # the same training
    by_seed = {r["head"]: r for r in causal["runs"] if r["seed"] == 0}
    ref = {r["head"]: r for r in offline["runs"] if r["seed"] == 0}
    assert by_seed["jmt"]["validation"]["full"]["score"] != ref["jmt"]["validation"]["full"]["score"]
    assert "**Causal protocol**" in (tmp_path / "compare-causal.md").read_text()
