"""Every fusion head and temporal encoder through the one contract, at 1, 2 and 3 streams of
different widths and for one or all tasks: tiny sizes, forward and backward, shapes per task, no
NaN, every stream used, masked frames ignored, the registry's errors."""

import re
import shutil
import subprocess
import sys

import pytest
import torch

from pipeline.registry import RegistryError
from pipeline.stage2.heads import HEADS, build_head, count_parameters, head_names
from pipeline.stage2.layers import TEMPORAL
from pipeline.tasks import TASKS

from ..conftest import REPO

pytestmark = pytest.mark.usefixtures("one_thread")

B, T, D = 3, 12, 8
# every registered head but the unimodal reference, which takes its stream in its name (`only:<stream>`):
# a new head file is tested here with no edit
FUSION = [h for h in HEADS.names() if h != "only"]
ISSUE_HEADS = ["concat", "jca", "jmt", "late", "mt", "only", "rjca"]   # the heads the project set out to compare
# name -> width in the declared (cache) order; at N = 3 the declared order is not the name order
STREAMS = {1: {"visual": 7}, 2: {"visual": 7, "audio": 10}, 3: {"visual": 7, "audio": 10, "prosody": 5}}
TASK_SETS = [["va"], ["va", *(t for t in TASKS.names() if t != "va")]]   # one task; every registered task


def heads_at(n: int) -> list[str]:
    """The heads that take n streams: every fusion head its `min_streams` allows, and the
    unimodal reference on each stream."""
    return [h for h in FUSION if HEADS.get(h).min_streams <= n] + [f"only:{s}" for s in STREAMS[n]]


CASES = [(name, n) for n in STREAMS for name in heads_at(n)]


def case_id(case) -> str:
    return f"{case[0]}-N{case[1]}"


def batch(streams: dict[str, int], seed: int = 0):
    """Random features and masks (about 20 % of each stream's frames absent)."""
    g = torch.Generator().manual_seed(seed)
    x = {s: torch.randn(B, T, d, generator=g) for s, d in streams.items()}
    m = {s: torch.rand(B, T, generator=g) > 0.2 for s in streams}
    return x, m


def tiny(name: str, streams: dict[str, int], tasks=("va",), **kw):
    torch.manual_seed(0)
    return build_head(name, streams=dict(streams), tasks=list(tasks), d_model=D, **kw)


def ignored(name: str, param: str) -> bool:
    """A parameter a unimodal head never uses: another stream's input module."""
    key, _, stream = name.partition(":")
    return key == "only" and param.startswith("inputs.") and not param.startswith(f"inputs.{stream}.")


def test_registry_holds_the_issue_heads():
    assert set(ISSUE_HEADS) <= set(HEADS.names())
    assert {case[0].partition(":")[0] for case in CASES} == set(HEADS.names())   # every head is tested below
    assert HEADS.get("mt").min_streams == 2
    assert all(HEADS.get(h).min_streams == 1 for h in ISSUE_HEADS if h != "mt")


@pytest.mark.parametrize("tasks", TASK_SETS, ids="+".join)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_backward_shapes_no_nan(case, tasks):
    name, n = case
    streams = STREAMS[n]
    head = tiny(name, streams, tasks, dropout=0.1)
    out = head(*batch(streams))
    assert list(out) == tasks
    for t in tasks:
        assert out[t].shape == (B, T, TASKS.get(t).width) and torch.isfinite(out[t]).all(), (name, t)
    sum(y.pow(2).mean() for y in out.values()).backward()
    grads = {p: w.grad for p, w in head.named_parameters()}
    used = {p: g for p, g in grads.items() if not ignored(name, p)}
    assert used and all(g is not None and torch.isfinite(g).all() for g in used.values()), \
        [p for p, g in used.items() if g is None or not torch.isfinite(g).all()]
    assert all(g is None for p, g in grads.items() if ignored(name, p))   # only:<s> reads one stream
    assert count_parameters(head) > 0
    assert head.spec == {"name": name, "kwargs": {"streams": streams, "tasks": tasks, "d_model": D, "dropout": 0.1}}
    assert head.streams == list(streams) and head.tasks == tasks


@pytest.mark.parametrize("case", [c for c in CASES if c[1] > 1], ids=case_id)
def test_fusion_heads_use_every_stream_unimodal_heads_one(case):
    """Changing one stream's features changes every task's output of a fusion head; a
    unimodal head changes only with its own stream."""
    name, n = case
    head = tiny(name, STREAMS[n], TASK_SETS[1]).eval()
    x, m = batch(STREAMS[n])
    base = head(x, m)
    for s in STREAMS[n]:
        out = head({**x, s: x[s] + 1}, m)
        for t in base:
            if name.startswith("only:") and name != f"only:{s}":
                torch.testing.assert_close(out[t], base[t], rtol=0, atol=0)
            else:
                assert not torch.allclose(out[t], base[t]), (name, s, t)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_masked_frames_ignore_their_content(case):
    """Where a stream is masked, its (garbage) features must not change any output."""
    name, n = case
    head = tiny(name, STREAMS[n], TASK_SETS[1]).eval()
    x, m = batch(STREAMS[n])
    base = head(x, m)
    g = torch.Generator().manual_seed(7)
    for s in STREAMS[n]:
        assert (~m[s]).any() and m[s].any()
        noisy = torch.where(m[s][..., None], x[s], 100 * torch.randn(x[s].shape, generator=g))
        out = head({**x, s: noisy}, m)
        for t in base:
            torch.testing.assert_close(out[t], base[t], msg=f"{name}: {s} masked, {t}")


@pytest.mark.parametrize("stream", list(STREAMS[3]))
@pytest.mark.parametrize("name", heads_at(3))
def test_three_streams_one_absent_on_every_frame(name, stream):
    head = tiny(name, STREAMS[3], TASK_SETS[1]).eval()
    x, m = batch(STREAMS[3])
    m[stream] = torch.zeros_like(m[stream])
    out = head(x, m)
    assert all(torch.isfinite(y).all() for y in out.values()), (name, stream)
    assert all(y.shape == (B, T, TASKS.get(t).width) for t, y in out.items())


@pytest.mark.parametrize("name", heads_at(3))
@pytest.mark.parametrize("temporal", TEMPORAL.names())
def test_every_temporal_encoder_in_a_head(temporal, name):
    head = tiny(name, STREAMS[3], TASK_SETS[1], temporal=temporal)
    out = head(*batch(STREAMS[3]))
    assert all(torch.isfinite(y).all() and y.shape == (B, T, TASKS.get(t).width) for t, y in out.items())
    sum(y.pow(2).mean() for y in out.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)


def test_tcn_is_causal():
    enc = TEMPORAL.get("tcn")(4, 8).eval()
    x = torch.randn(1, 20, 4)
    y = x.clone()
    y[:, 15:] += 5  # change the future only
    torch.testing.assert_close(enc(x)[:, :15], enc(y)[:, :15])
    assert not torch.allclose(enc(x)[:, 15:], enc(y)[:, 15:])


@pytest.mark.parametrize("name", FUSION + ["only:audio"])
def test_initial_weights_do_not_depend_on_the_declared_stream_order(name):
    """Per-stream modules are built in stream-name order: one seed gives the same weights
    whatever order params list the streams in (the heads' module docstring)."""
    forward = tiny(name, STREAMS[3]).state_dict()
    backward = tiny(name, dict(reversed(list(STREAMS[3].items())))).state_dict()
    assert list(forward) == list(backward)
    for k in forward:
        assert torch.equal(forward[k], backward[k]), k


def test_head_options_and_errors():
    x, m = batch(STREAMS[2])
    assert tiny("jmt", STREAMS[2], aggregation="fc", heads=2, layers=2)(x, m)["va"].shape == (B, T, 2)
    assert tiny("rjca", STREAMS[2], iterations=3).iterations == 3
    with pytest.raises(ValueError, match="jmt aggregation must be 'self_attention' or 'fc', got 'mean'"):
        tiny("jmt", STREAMS[2], aggregation="mean")
    with pytest.raises(ValueError, match="rjca iterations must be >= 1, got 0"):
        tiny("rjca", STREAMS[2], iterations=0)
    with pytest.raises(ValueError, match=r"MT needs at least 2 streams, got 1 \(visual\)"):
        tiny("mt", STREAMS[1])
    with pytest.raises(ValueError, match="only:face: no stream 'face' among visual, audio"):
        tiny("only:face", STREAMS[2])
    with pytest.raises(RegistryError, match=known("temporal encoder 'lstm'", TEMPORAL)):
        tiny("mt", STREAMS[2], temporal="lstm")
    with pytest.raises(RegistryError, match=known("task 'pain'", TASKS)):
        tiny("concat", STREAMS[2], tasks=["va", "pain"])
    with pytest.raises(ValueError, match="at least one task"):
        tiny("concat", STREAMS[2], tasks=[])
    with pytest.raises(RegistryError, match=known("fusion head 'transformer'", HEADS)):
        build_head("transformer", streams={"visual": 1})


def known(what: str, registry) -> str:
    """The registry's error for an unknown name, listing what it holds (as a regex)."""
    return re.escape(f"unknown {what}; known: {', '.join(registry.names())}") + "$"


def test_head_names_expand_only_star():
    streams = list(STREAMS[3])
    assert head_names(["jmt", "only:*"], streams) == ["jmt", "only:visual", "only:audio", "only:prosody"]
    assert head_names(["only:audio", "mt", "only:*"], streams) == ["only:audio", "mt", "only:visual", "only:prosody"]
    assert head_names(["only:*"], ["visual"]) == ["only:visual"]
    with pytest.raises(ValueError, match="head 'only:face': no stream 'face' in the cache"):
        head_names(["jmt", "only:face"], streams)
    with pytest.raises(RegistryError, match="unknown fusion head 'jnt'"):
        head_names(["jnt"], streams)


NEW_HEAD = '''
"""`mean`: a toy head for the test: the N projected streams averaged, one temporal model.

    fused = temporal(mean_i input_i(s_i))      (B, T, d)
"""

import torch

from pipeline.stage2.heads import HEADS, FusionHead


@HEADS.register("mean")
class Mean(FusionHead):
    def __init__(self, **common) -> None:
        super().__init__(**common)
        self.temporal = self.temporal_encoder()
        self.head = self.task_heads(self.d)

    def forward(self, streams, masks):
        x = self.embed(streams, masks)
        return self.head(self.temporal(torch.stack([x[s] for s in self.streams]).mean(0)))   # (B, T, d)
'''

CHECK = '''
import torch
from pipeline.stage2.heads import HEADS, build_head

assert "mean" in HEADS.names(), HEADS.names()
head = build_head("mean", streams={"a": 3, "b": 2}, tasks=["va"], d_model=8, temporal="identity")
x = {"a": torch.randn(2, 5, 3), "b": torch.randn(2, 5, 2)}
out = head(x, {k: torch.ones(2, 5, dtype=torch.bool) for k in x})
assert out["va"].shape == (2, 5, 2)
print("OK")
'''


def test_a_head_is_one_new_file(tmp_path):
    """A copy of the package with one file dropped into pipeline/stage2/heads/ (nothing else
    edited) has the head in the registry (every module of the folder is imported) and builds it."""
    pkg = tmp_path / "pkg"
    shutil.copytree(REPO / "pipeline", pkg / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "pipeline/stage2/heads/mean.py").write_text(NEW_HEAD)
    proc = subprocess.run([sys.executable, "-c", CHECK], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(pkg), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]
