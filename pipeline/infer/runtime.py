"""The exported head in onnxruntime (`OnnxModel`), in the torch model's place."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pipeline.errors import InputError, JmtError


class OnnxModel:
    """An exported head in onnxruntime, in the torch model's place: `m(streams, masks)` with torch
    tensors ({s: (B, T, D)}, {s: (B, T) bool}) -> {task: (B, T, width) float32 tensor}; `.tasks`,
    `.streams` and `.meta` (the graph's metadata); `.eval()` and `.to()` do nothing (it runs on
    the CPU). `threads`: onnxruntime's intra-op threads (default: torch's count in this process);
    `spinning` False: its threads sleep between calls instead of spinning (`jmt live`, where
    PyTorch's stage 1 runs between two calls and needs the cores)."""

    def __init__(self, path: Path, *, threads: int | None = None, spinning: bool = True) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: ONNX model not found; make it with `jmt export`")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        if not spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for a bad file
            raise JmtError(f"{path}: onnxruntime cannot load it ({str(exc).splitlines()[0][:160]})") from None
        self.path = path
        self.meta = self.session.get_modelmeta().custom_metadata_map
        if "streams" not in self.meta or "tasks" not in self.meta:
            raise JmtError(f"{path}: not a `jmt export` model (no streams/tasks metadata)")
        self.widths: dict[str, int] = json.loads(self.meta["streams"])
        self.streams, self.tasks = list(self.widths), json.loads(self.meta["tasks"])
        self._inputs = {i.name for i in self.session.get_inputs()}   # the exporter may drop an unused one

    def __call__(self, streams: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feed = {}
        for s in self.streams:
            feed[s] = streams[s].detach().to("cpu", torch.float32).numpy()
            feed[f"{s}_mask"] = masks[s].detach().to("cpu", torch.bool).numpy()
        out = self.session.run(self.tasks, {k: v for k, v in feed.items() if k in self._inputs})
        return {t: torch.from_numpy(y) for t, y in zip(self.tasks, out)}

    def eval(self) -> OnnxModel:
        return self

    def to(self, *args, **kwargs) -> OnnxModel:
        return self
