"""Applying a trained model: `jmt predict` (stage 1 and the model on new videos, predict.py, with
overlay.py drawing the outputs on the video), `jmt live` (frame by frame, live/), `jmt export`
(the head and the stage-1 backbones as ONNX graphs: export.py, export_stage1.py, graphs.py) and
the runtime they share: `model.from_checkpoint` (a checkpoint read once, typed, with its runtime) and
`runtime.OnnxModel` (an exported head in onnxruntime, in the torch head's place)."""
