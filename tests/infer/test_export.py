"""ONNX export of the fusion heads, run in onnxruntime (no stand-in): every registered head on the
tiny demo cache's real features, all three tasks at once, the same numbers as torch within 1e-4 at
the traced window and at other windows and batch sizes, with absent frames; recurrent temporal
encoders; the metadata; int8 quantisation (a Linear shared by two attentions included), its error
measured on the cache's features and a graph above the bound refused unless `--force`; `jmt
export` through the CLI; `jmt predict --runtime onnx` against the torch CSV."""

import csv
import hashlib
import json

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import JmtError
from pipeline.stage2 import checkpoints
from pipeline.stage2.data import load_entries, read_window, stream_widths
from pipeline.stage2.windows import inference_hop, predict_entry
from pipeline.infer.export import INT8_BOUND, export_checkpoint
from pipeline.infer.graphs import export_head, gemm_to_matmul, input_names, quantize_int8
from pipeline.infer.model import from_checkpoint
from pipeline.infer.runtime import OnnxModel
from pipeline.stage2.heads import HEADS, build_head
from pipeline.infer.predict import predict_video
from pipeline.stage2.train import train_model
from pipeline.tasks import TASKS

from ..stage2.multitask import params_for, synthetic_cache

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/stage2/conftest.py

ATOL = 1e-4
TASKS_ALL = ["va", "expr", "au"]
WINDOW = 64
# every registered head; the unimodal reference on the visual stream
HEAD_NAMES = [f"{h}:visual" if h == "only" else h for h in HEADS.names()]


@pytest.fixture(scope="module")
def entries(tiny_cache):
    params, _ = tiny_cache
    return load_entries(params.path(params.embed.out), None, ["va"])


def real_batch(entries, batch: int, time: int, start: int = 0):
    """`batch` windows of `time` frames of the cache's real features, one per entry from `start`
    (padded past an entry's end: masked); in the first window a stretch of frames is also marked
    absent in every stream, so the graph's missing-stream path runs."""
    items = [read_window(e, start, time) for e in entries[:batch]]
    x = {part: {k: torch.stack([it[part][k] for it in items]) for k in items[0][part]} for part in ("streams", "masks")}
    for s in x["masks"]:
        x["masks"][s][0, 3:9] = False
    return x["streams"], x["masks"]


def max_diff(a: dict, b: dict) -> float:
    assert list(a) == list(b)
    return max(float((a[t] - b[t]).abs().max()) for t in a)


def exported(name: str, widths: dict, folder, **kw):
    torch.manual_seed(0)
    model = build_head(name, streams=widths, tasks=TASKS_ALL, d_model=16, **kw).eval()
    path = folder / "head.onnx"
    export_head(model, path, widths, WINDOW, {"streams": json.dumps(widths), "tasks": json.dumps(TASKS_ALL)})
    return model, path


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_every_head_matches_torch_at_any_window_and_batch(name, entries, tmp_path):
    widths = stream_widths(entries)
    model, path = exported(name, widths, tmp_path)
    m = OnnxModel(path, threads=1)
    assert m.streams == list(widths) and m.tasks == TASKS_ALL
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == input_names(list(widths))   # every stream's inputs, even unused
    for out in graph.output:   # declared dynamic, as the inputs
        assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == \
            ["batch", "time", TASKS.get(out.name).width]
    for batch, time in [(3, WINDOW), (1, WINDOW), (3, 37), (1, 37), (2, 100)]:
        streams, masks = real_batch(entries, batch, time, start=5)
        assert not all(m.all() for m in masks.values())
        with torch.no_grad():
            ref = model(streams, masks)
        got = m(streams, masks)
        for t in TASKS_ALL:
            assert got[t].shape == (batch, time, TASKS.get(t).width) and got[t].dtype == torch.float32
        assert max_diff(ref, got) <= ATOL, (name, batch, time, max_diff(ref, got))
        assert max(float(v.std()) for v in ref.values()) > 1e-3   # not a trivially constant output


@pytest.mark.parametrize("temporal", ["gru", "bilstm"])
def test_recurrent_temporal_encoders_export_with_a_dynamic_window(temporal, entries, tmp_path):
    widths = stream_widths(entries)
    model, path = exported("rjca", widths, tmp_path, temporal=temporal)
    m = OnnxModel(path, threads=1)
    for batch, time in [(2, WINDOW), (3, 37)]:
        streams, masks = real_batch(entries, batch, time)
        with torch.no_grad():
            assert max_diff(model(streams, masks), m(streams, masks)) <= ATOL


def test_the_comparison_can_fail(entries, tmp_path):
    """The parity check sees a wrong graph: another seed's weights differ far beyond ATOL."""
    widths = stream_widths(entries)
    _, path = exported("concat", widths, tmp_path)
    torch.manual_seed(1)
    other = build_head("concat", streams=widths, tasks=TASKS_ALL, d_model=16).eval()
    streams, masks = real_batch(entries, 2, WINDOW)
    with torch.no_grad():
        assert max_diff(other(streams, masks), OnnxModel(path, threads=1)(streams, masks)) > 100 * ATOL


def test_int8_shared_linear_and_tolerance(entries, tmp_path):
    """JMT runs one nn.MultiheadAttention per query stream against several keys, so its out_proj
    Gemm weights are shared: onnxruntime's own Gemm rewrite would transpose them twice. After
    gemm_to_matmul the int8 graph stays near torch (max |difference| over the three tasks' raw outputs:
    3-5e-3 measured on the demo cache's features; asserted below 0.05)."""
    widths = stream_widths(entries)
    model, path = exported("jmt", widths, tmp_path)
    proto = onnx.load(str(path))
    shared = [n.input[1] for n in proto.graph.node if n.op_type == "Gemm"]
    assert len(shared) > len(set(shared))          # the case the rewrite is for
    assert gemm_to_matmul(proto) == len(shared)
    assert not [n for n in proto.graph.node if n.op_type == "Gemm"]
    int8 = tmp_path / "head.int8.onnx"
    quantize_int8(path, int8)
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear", "Conv"} <= ops   # MatMuls int8; the TCN's Convs fp32
    assert int8.stat().st_size < path.stat().st_size
    m = OnnxModel(int8, threads=1)
    assert "int8" in m.meta["quantization"]
    for batch, time in [(3, WINDOW), (1, 37)]:
        streams, masks = real_batch(entries, batch, time)
        with torch.no_grad():
            ref = model(streams, masks)
        diff = max_diff(ref, m(streams, masks))
        assert 1e-6 < diff < 0.05, diff     # quantised (not the fp32 graph), close


def test_cli_export_then_predict_with_onnxruntime(trained, tiny_corpus, tiny_cache, tmp_path):
    """`jmt export --int8 --backbones` on the trained checkpoint, then `jmt predict --runtime onnx`
    on a demo video: the same CSV as the torch head within 1e-4."""
    ckpt = trained.path(trained.train.out)
    out = tmp_path / "model.onnx"
    result = CliRunner().invoke(app, ["export", "--checkpoint", str(ckpt), "--out", str(out), "--int8", "--backbones"])
    assert result.exit_code == 0, result.output
    text = "".join(result.output.split())   # the console wraps lines, even inside a path
    assert "exportint8" in text and "model.int8.onnx" in text
    assert f"bound{INT8_BOUND:g}" in text and "framesofthecache'sfeatures" in text
    assert json.loads(OnnxModel(tmp_path / "model.int8.onnx").meta["int8_error"])["max_abs"] <= INT8_BOUND
    m = OnnxModel(out)
    c = checkpoints.read(ckpt)
    assert m.meta["head"] == "jmt" and int(m.meta["window"]) == c.window
    assert m.widths == c.widths and m.tasks == c.tasks
    assert m.meta["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    # the stage-1 graphs of the default streams and the front end all export (checked against torch
    # inside export_stage1); a graph that failed would be reported as "not exported" instead
    assert "notexported" not in text
    for part in ("backbone-visual", "backbone-audio", "frontend-logmel"):
        assert (tmp_path / f"model.{part}.onnx").is_file() and f"model.{part}.onnx" in text, part
    video = tiny_corpus / "videos/batch2/demo_02.mp4"
    ref = predict_video(video, ckpt, tmp_path / "torch")
    got = predict_video(video, ckpt, tmp_path / "onnx", runtime="onnx", onnx=out)

    def table(path):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return list(rows[0]), np.array([[float(v) for v in r.values()] for r in rows])

    (cols_a, a), (cols_b, b) = table(ref.csv), table(got.csv)
    assert cols_a == cols_b and a.shape == b.shape and len(a) == 60
    assert a[:, cols_a.index("valence")].std() > 0
    # the CSV holds 4 decimals: a difference of 1e-7 can still round one unit apart
    assert np.abs(a - b).max() <= ATOL + 1e-9 and (a == b).mean() > 0.99
    # unrounded, through the same windowed prediction code (predict_entry), on the tiny cache
    params, _ = tiny_cache
    entry = load_entries(params.path(params.embed.out), None, ["va"])[0]
    window = c.window
    torch_out = predict_entry(c.build().eval(), entry, window, inference_hop(window), torch.device("cpu"))
    onnx_out = predict_entry(from_checkpoint(ckpt, "onnx", out).model, entry, window, inference_hop(window), torch.device("cpu"))
    assert np.abs(torch_out["va"] - onnx_out["va"]).max() <= ATOL


def test_predict_refuses_a_graph_of_another_checkpoint(trained, tmp_path):
    ckpt = trained.path(trained.train.out)
    c = checkpoints.read(ckpt)
    model = c.build()
    widths = c.widths
    path = tmp_path / "other.onnx"
    export_head(model, path, widths, 16, {"streams": json.dumps(widths), "tasks": '["va"]',
                                          "checkpoint_sha256": "0" * 64})
    with pytest.raises(JmtError, match="not exported from"):
        from_checkpoint(ckpt, "onnx", path).model
    result = CliRunner().invoke(app, ["predict", "x.mp4", "--checkpoint", str(ckpt), "--runtime", "onnx",
                                      "--onnx", str(tmp_path / "missing.onnx")])
    assert result.exit_code == 2 and "not found" in result.output


def int8_meta(path) -> dict:
    return json.loads(OnnxModel(path).meta["int8_error"])


def test_cli_int8_is_refused_above_the_bound_unless_forced(every_task, tmp_path):
    """The three-task checkpoint (concat: va, expr, au on the tiny cache's real features): within
    the default bound it is written with the measured error in its metadata and in the success
    line; with the bound lowered below its error it is refused (one line naming the error, the
    bound, the task and output, and --force) and nothing is written; --force writes it with a
    warning and `forced` in its metadata."""
    out = tmp_path / "model.onnx"
    int8 = tmp_path / "model.int8.onnx"
    base = ["export", "--checkpoint", str(every_task), "--out", str(out), "--int8"]
    ok = CliRunner().invoke(app, base)
    assert ok.exit_code == 0, ok.output
    meta = int8_meta(int8)
    assert 1e-6 < meta["max_abs"] <= INT8_BOUND and meta["bound"] == INT8_BOUND and not meta["forced"]
    assert set(meta["per_task"]) == {"va", "expr", "au"} and meta["max_abs"] == max(meta["per_task"].values())
    assert meta["output"] in TASKS.get(meta["task"]).outputs and meta["frames"] > 0 and meta["raw_max_abs"] > 0
    assert meta["on"].startswith("activated") and "/" not in json.dumps(meta)    # no local path in the graph
    text = "".join(ok.output.split())
    assert f"max|torch-int8|{meta['max_abs']:.2e}at{meta['task']}`{meta['output']}`,bound0.05" in text
    assert "warning" not in text
    int8.unlink()

    bound = meta["max_abs"] / 2     # below what this graph measures: refused
    refused = CliRunner().invoke(app, [*base, "--int8-bound", str(bound)])
    assert refused.exit_code == 2, refused.output
    line = " ".join(refused.output.split())
    assert line.startswith("error:") and "not written" in line and f"the bound {bound:g}" in line, line
    assert f"{meta['max_abs']:.3g} at {meta['task']} `{meta['output']}`" in line and "`--force` writes it" in line
    assert not int8.exists() and out.is_file()     # the fp32 graph, checked, is kept

    forced = CliRunner().invoke(app, [*base, "--int8-bound", str(bound), "--force"])
    assert forced.exit_code == 0, forced.output
    meta_forced = int8_meta(int8)
    assert meta_forced["forced"] and meta_forced["bound"] == bound and meta_forced["max_abs"] == meta["max_abs"]
    text = " ".join(forced.output.split())
    assert "warning:" in text and "--force" in text and f"{meta['max_abs']:.3g}" in text

    assert CliRunner().invoke(app, [*base, "--cache", str(tmp_path / "none")]).exit_code == 2
    wrong = CliRunner().invoke(app, ["export", "--checkpoint", str(every_task), "--out", str(out), "--force"])
    assert wrong.exit_code == 2 and "--int8 only" in wrong.output


def test_int8_above_the_default_bound_is_refused(tmp_path):
    """A real case: `only:visual` trained on va, expr and au (tests/stage2/multitask.py's synthetic
    cache, d_model 8) quantises badly: max |torch - int8| 0.095 on va's arousal (measured), above
    INT8_BOUND. export_checkpoint refuses it; force=True writes it and records the error."""
    root = synthetic_cache(tmp_path / "cache")
    params = params_for(root, model={"fusion": "only:visual", "d_model": 8})
    train_model(params, quiet=True)
    ckpt, out = params.path(params.train.out), tmp_path / "head.onnx"
    with pytest.raises(JmtError, match=r"not written: max \|torch - int8\| .* is above the bound 0.05; `--force`"):
        export_checkpoint(ckpt, out, int8=True)
    assert out.is_file() and not (tmp_path / "head.int8.onnx").exists()
    r = export_checkpoint(ckpt, out, int8=True, force=True)
    assert r.int8_error.max_abs > 1.5 * INT8_BOUND and r.int8_error.forced
    assert int8_meta(r.int8) == json.loads(r.int8_error.to_meta())
