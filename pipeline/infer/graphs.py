"""Graph building for `jmt export`: a module as an ONNX graph (torch's dynamo exporter, opset 18),
quietly, with metadata, outputs declared (batch, time, width), weight_norm parametrizations
folded into plain weights, Gemms rewritten for the quantizer, and dynamic int8 quantisation.
Used by the head's export (export.py) and the stage-1 graphs' (export_stage1.py)."""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import torch
import torch.nn as nn

OPSET = 18
INT8_OPS = ("MatMul", "Gemm")   # not Conv: ConvInteger ran the TCN 2-4x slower than fp32 (docs/onnx.md)


def input_names(streams: list[str]) -> list[str]:
    """The graph's inputs: `<stream>`, `<stream>_mask` per stream, in the head's order."""
    return [n for s in streams for n in (s, f"{s}_mask")]


class _Positional(nn.Module):
    """A head with the flat signature a graph has: (x_1, mask_1, ..., x_N, mask_N) -> one output
    per task, in `head.tasks` order."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        streams = {s: xs[2 * i] for i, s in enumerate(self.head.streams)}       # each (B, T, D)
        masks = {s: xs[2 * i + 1] for i, s in enumerate(self.head.streams)}     # each (B, T)
        out = self.head(streams, masks)
        return tuple(out[t] for t in self.head.tasks)                          # each (B, T, width)


def _plain_weights(model: nn.Module) -> nn.Module:
    """A copy in eval mode with every parametrization (the TCN's weight_norm) folded into a plain
    weight: the same values, one initializer in the graph instead of a norm per call. Rebuilt from
    the head's spec, not deep-copied: a copy shares its parametrized classes with the original,
    and removing a parametrization from one would strip the other's weights."""
    from pipeline.stage2.heads import build_head

    copy_ = build_head(model.spec["name"], **model.spec["kwargs"])
    copy_.load_state_dict(model.state_dict())
    return fold_parametrizations(copy_.eval())


def fold_parametrizations(model: nn.Module) -> nn.Module:
    """Folds every parametrization of `model` into a plain weight, in place; returns it."""
    from torch.nn.utils import parametrize

    for module in list(model.modules()):   # listed first: removing changes the module tree
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return model


def sample_inputs(widths: dict[str, int], batch: int, time: int, seed: int = 0):
    """Random features and masks (about 20 % of the frames absent): ({s: (B, T, D)}, {s: (B, T)})."""
    g = torch.Generator().manual_seed(seed)
    streams = {s: torch.randn(batch, time, d, generator=g) for s, d in widths.items()}
    masks = {s: torch.rand(batch, time, generator=g) > 0.2 for s in widths}
    return streams, masks


@contextlib.contextmanager
def quiet():
    """Silences the exporter's and the quantizer's warnings and log lines (tracing notes, "Skipping
    constant folding", "consider pre-processing"): every graph kept is checked against torch
    afterwards, which is what they are about."""
    level = logging.root.manager.disable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(level)


def quiet_export(module: nn.Module, args: tuple, path: Path | None = None, **kwargs):
    """torch.onnx.export (dynamo), quietly (`quiet`)."""
    with quiet():
        return torch.onnx.export(module, args, path, dynamo=True, opset_version=OPSET, verbose=False,
                                 external_data=False, **kwargs)


def set_metadata(proto, meta: dict[str, str]) -> None:
    """The model's metadata_props := its own and `meta`; the exporter's per-node metadata (the
    Python stack trace of every op, with this machine's paths) is dropped."""
    import onnx

    for node in proto.graph.node:
        del node.metadata_props[:]
    old = {p.key: p.value for p in proto.metadata_props}
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {**old, **meta})


def _declare_outputs(proto, widths: dict[str, int]) -> None:
    """Outputs declared (batch, time, width): the exporter's shape inference may keep the traced
    window for a recurrent encoder's outputs, which onnxruntime then warns about on every call;
    intermediate shapes are dropped for the same reason (onnxruntime infers its own)."""
    del proto.graph.value_info[:]
    for out in proto.graph.output:
        dims = out.type.tensor_type.shape.dim
        for d, value in zip(dims, ("batch", "time", widths[out.name])):
            d.Clear()
            if isinstance(value, str):
                d.dim_param = value
            else:
                d.dim_value = value


def export_head(model: nn.Module, path: Path, widths: dict[str, int], window: int, meta: dict[str, str]) -> None:
    """Writes the head as an ONNX graph (inputs, outputs and dynamic axes: module docstring)."""
    import onnx
    from torch.export import Dim

    from pipeline.tasks import TASKS

    wrapper = _Positional(_plain_weights(model)).eval()
    streams, masks = sample_inputs(widths, 2, window)
    args = tuple(v for s in model.streams for v in (streams[s], masks[s]))
    batch, time = Dim("batch"), Dim("time")
    program = quiet_export(wrapper, args, input_names=input_names(model.streams), output_names=list(model.tasks),
                            dynamic_shapes=(tuple({0: batch, 1: time} for _ in args),))   # *xs: one entry
    proto = program.model_proto
    _declare_outputs(proto, {t: TASKS.get(t).width for t in model.tasks})
    set_metadata(proto, meta)
    onnx.checker.check_model(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))


def gemm_to_matmul(proto) -> int:
    """Rewrites every Gemm (alpha = beta = 1, no transA) whose B is an initializer as
    MatMul(A, B') [+ Add(C)] with B' = B transposed as transB asks, one B' per weight, in place;
    returns how many. onnxruntime's quantizer does this rewrite itself but transposes B in place
    once per Gemm ("assume B is not used by any other node", quantization/onnx_model.py), so a
    Linear used twice (JMT's and MT's cross-attentions run one nn.MultiheadAttention per query
    stream against several keys) gets its square weight transposed twice: silently wrong
    outputs. After this pass there is no Gemm left for it to rewrite."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    done: dict[str, str] = {}
    nodes, count = [], 0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if node.op_type != "Gemm" or not plain or node.input[1] not in inits:
            nodes.append(node)
            continue
        b = node.input[1]
        if attrs.get("transB", 0):
            if b not in done:
                done[b] = f"{b}.T"
                graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(inits[b]).T.copy(), done[b]))
            b = done[b]
        bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}.mm" if bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], b], [product], name=f"{node.name}.mm"))
        if bias:
            nodes.append(helper.make_node("Add", [f"{node.output[0]}.mm", node.input[2]], list(node.output),
                                          name=f"{node.name}.add"))
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return count


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation of `src` into `dst` (what it covers: the module docstring); the
    metadata is carried over, with `quantization` saying what was done."""
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    proto = onnx.load(str(src))
    meta = {p.key: p.value for p in proto.metadata_props}
    gemm_to_matmul(proto)
    with tempfile.TemporaryDirectory(prefix="jmt-int8-") as tmp, quiet():
        plain = Path(tmp) / "plain.onnx"
        onnx.save(proto, str(plain))
        quantize_dynamic(str(plain), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=list(INT8_OPS))
    proto = onnx.load(str(dst))
    set_metadata(proto, {**meta, "quantization": f"dynamic: int8 weights of {', '.join(INT8_OPS)}, "
                                                  "uint8 activations per call; the rest float32"})
    onnx.save(proto, str(dst))
