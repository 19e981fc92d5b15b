"""`jmt export --backbones`: each stream's frozen stage-1 backbone and the audio front end
(the log-mel spectrogram) as ONNX graphs of their own, each checked against torch.

Exported where the input is one tensor per frame: a crops backbone (uint8 face crops, dynamic
batch), a log-mel backbone (each frame's window, dynamic batch) and the front end (a waveform,
dynamic samples). Backbones that read whole tracks or clips with per-frame windows are reported
as not tried, with why; so is anything that fails to export or to match torch (STAGE1_ATOL).
MTCNN and ffmpeg stay outside ONNX (docs/onnx.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from pipeline.config import Params
from pipeline.errors import JmtError
from pipeline.infer.graphs import fold_parametrizations, quiet_export, set_metadata
from pipeline.stage1.audio import LOG_FLOOR, mel_spectrogram

STAGE1_ATOL = 1e-3   # max |torch - onnxruntime| of a stage-1 graph (convolutions over 112 px crops, an STFT)


class _LogMel(nn.Module):
    """pipeline.stage1.audio.logmel as a module: waveform (S,) -> (frames, n_mels) log-mel."""

    def __init__(self, params) -> None:
        super().__init__()
        self.mel = mel_spectrogram(params)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.log(self.mel(wave) + LOG_FLOOR).transpose(0, 1)     # (frames, n_mels)


def _try_graph(name: str, module: nn.Module, example: torch.Tensor, dynamic: dict[int, str], path: Path,
               meta: dict[str, str], tests: list[torch.Tensor]) -> dict:
    """Exports one stage-1 graph (input `input`, output `output`) and checks it against torch on
    `tests`: {"name", "path", "max_abs_diff"} or {"name", "path": None, "why"}."""
    import onnx
    import onnxruntime as ort
    from torch.export import Dim

    module = fold_parametrizations(module.eval())   # a backbone built for this export
    try:
        program = quiet_export(module, (example,), input_names=["input"], output_names=["output"],
                                dynamic_shapes=({k: Dim(v) for k, v in dynamic.items()},))
        proto = program.model_proto
        set_metadata(proto, meta)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(path))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        diff = 0.0
        for x in tests:
            with torch.no_grad():
                ref = module(x).float().numpy()
            got = session.run(None, {"input": x.numpy()})[0]
            if got.shape != ref.shape:
                raise JmtError(f"onnxruntime gives shape {got.shape}, torch {ref.shape}")
            diff = max(diff, float(np.abs(ref - got).max()))
        if diff > STAGE1_ATOL:
            raise JmtError(f"onnxruntime differs from torch by {diff:.2e} (> {STAGE1_ATOL:g})")
    except Exception as exc:   # any exporter or runtime failure is a finding to report, not a crash
        path.unlink(missing_ok=True)
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        return {"name": name, "path": None, "why": f"{type(exc).__name__}: {(lines or [''])[0][:200]}"}
    return {"name": name, "path": str(path), "max_abs_diff": diff}


def export_stage1(params: Params, out: Path) -> list[dict]:
    """Each stream's backbone (`<stem>.backbone-<stream>.onnx`, dynamic batch) and the log-mel
    front end (`<stem>.frontend-logmel.onnx`, dynamic samples), each checked against torch;
    one result per graph (`_try_graph`). `params`: the checkpoint's (`Trained.params`)."""
    from pipeline.stage1.backbones import build_backbone, input_of
    from pipeline.stage1.embed import frame_input

    g = torch.Generator().manual_seed(0)
    results = []
    for name, bp in params.embed.streams.items():
        path = out.with_name(f"{out.stem}.backbone-{name}.onnx")
        what = f"{name} ({bp.name})"
        try:
            net = build_backbone(bp, params.root)
        except JmtError as exc:
            results.append({"name": what, "path": None, "why": f"cannot build it here: {exc}"})
            continue
        kind = input_of(net)
        meta = {"stream": name, "backbone": bp.name, "input": kind}
        if kind in ("crops", "logmel"):   # one tensor per frame: (B, *shape), dynamic batch
            shape, dtype = frame_input(kind, net, params)
            if dtype == np.uint8:         # face crops
                xs = [torch.randint(0, 256, (b, *shape), generator=g, dtype=torch.uint8) for b in (2, 1, 5)]
            else:                         # log-mel windows, around a log-mel's values
                xs = [torch.randn(b, *shape, generator=g) * 3 - 8 for b in (2, 1, 5)]
            results.append(_try_graph(what, net, xs[0], {0: "batch"}, path, meta, xs))
        elif kind in ("files", "words"):
            results.append({"name": what, "path": None,
                            "why": f"reads {'features from files' if kind == 'files' else 'a transcript'}: no graph to export"})
        else:
            results.append({"name": what, "path": None,
                            "why": f"reads {kind} (whole tracks or clips, with frame windows): not tried"})
    sr = params.audio.sample_rate
    waves = [torch.randn(n, generator=g) * 0.1 for n in (sr, int(sr * 2.5), sr // 3)]
    results.append(_try_graph("audio front end (log-mel)", _LogMel(params), waves[0], {0: "samples"},
                              out.with_name(f"{out.stem}.frontend-logmel.onnx"),
                              {"input": "waveform", "sample_rate": str(sr), "n_mels": str(params.audio.n_mels)},
                              waves))
    return results
