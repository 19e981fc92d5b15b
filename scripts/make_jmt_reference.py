"""Makes tests/stage2/fixtures/jmt_reference.npz: the AUTHORS' JMT fusion module run on stored
inputs with stored weights, to test pipeline/stage2/heads/jmt.py against (run once, by hand).

Their code never enters this repo. Fetch models/mm_multi_transformers.py from the public
repository PoloWlg/Joint-Multimodal-Transformer-6th-ABAW to /tmp, then:

    .venv/bin/python scripts/make_jmt_reference.py /tmp/jmt_authors/mm_multi_transformers.py \
        tests/stage2/fixtures/jmt_reference.npz

The script imports their file as a module (any import it needs that is not installed is
replaced by an empty stub module at runtime), builds their MultimodalTransformer_w_JR at
small sizes for both output formats ('SELF_ATTEN' -> our 'self_attention', 'FC' -> 'fc'),
fills every parameter by a seed rule independent of torch's initialisers, and runs it in eval
mode on random inputs.

Small sizes: their class hard-codes the width 512 in four modules (cross_attention_pv,
out_layer_pv 1024 -> 512, final_self_attention, out_layer1 3072 -> 1024). After building it
with visual_dim = audio_dim = D, those four are replaced by the same module types at D
(1024 -> 2D, 3072 -> 6D); final_encoder (a 3072-wide encoder that their forward never calls) is
deleted. Their FFN width stays 512 (hidden_dim=512, as their Two_transformers passes), since
ours is fixed at 512.

Weight rule, in sorted parameter-name order from one numpy Generator(default_rng(SEED + k)),
k = 0 for self-attention, 1 for fc; z = standard_normal(shape):
LayerNorm weights 1 + 0.1 z; other 1-D parameters (biases) 0.1 z; matrices z / sqrt(fan_in).

Inputs: raw audio and visual (B, T, D) from default_rng(SEED + 2), standard normal * 3, not
normalised. Like their Two_transformers.forward, both are L2-normalised on the feature axis
(F.normalize) before their module sees them; the fixture stores the RAW inputs.

Fixture keys: `audio`, `visual` (B, T, D) raw; `<agg>/out` their module's output, batch-first
(B, T, D) for self_attention and (B, T, 2D) for fc: their fc path returns sequence-first
(T, B, 2D), transposed here; `<agg>/w/<their parameter name>` the weights; `<agg>/layers`,
`heads`, `d`, `seed`, `source_sha256` (sha256 of their file).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SEED, D, HEADS, FFN, B, T = 9, 16, 2, 512, 2, 5
LAYERS = {"self_attention": 2, "fc": 1}  # 2 layers exercise the depth of every encoder, incl. the final one
FORMAT = {"self_attention": "SELF_ATTEN", "fc": "FC"}


def import_their_module(path: Path) -> types.ModuleType:
    """Imports a file as a module; a missing import becomes an empty stub whose attributes are
    placeholders (their fusion code needs none of them)."""
    for _ in range(50):
        spec = importlib.util.spec_from_file_location("authors_jmt", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
            return module
        except ModuleNotFoundError as err:
            if not err.name or err.name in sys.modules:
                raise
            stub = types.ModuleType(err.name)
            stub.__path__ = []  # a package, so its submodules can be stubbed as well
            stub.__getattr__ = lambda name: type(name, (), {})
            sys.modules[err.name] = stub
            print(f"stubbed missing import {err.name!r}")
    raise RuntimeError(f"{path}: too many missing imports")


def build_theirs(module: types.ModuleType, aggregation: str) -> nn.Module:
    """Their MultimodalTransformer_w_JR at width D, with the hard-coded 512s scaled to D."""
    m = module.MultimodalTransformer_w_JR(visual_dim=D, audio_dim=D, num_heads=HEADS, hidden_dim=FFN,
                                          num_layers=LAYERS[aggregation], output_format=FORMAT[aggregation])
    m.cross_attention_pv = nn.MultiheadAttention(D, HEADS)
    m.out_layer_pv = nn.Linear(2 * D, D)
    if aggregation == "self_attention":
        m.final_self_attention = nn.MultiheadAttention(D, HEADS)
    else:
        m.out_layer1 = nn.Linear(6 * D, 2 * D)
    del m.final_encoder  # built but never used by their forward
    return m


def seeded_weights(m: nn.Module, seed: int) -> dict[str, np.ndarray]:
    """The weight rule of the module docstring, keyed by their parameter names."""
    rng, out = np.random.default_rng(seed), {}
    shapes = dict((n, tuple(p.shape)) for n, p in m.named_parameters())
    for name in sorted(shapes):
        z = rng.standard_normal(shapes[name])
        if "layer_norm" in name and name.endswith("weight"):
            w = 1 + 0.1 * z
        elif z.ndim == 1:
            w = 0.1 * z
        else:
            w = z / np.sqrt(z.shape[1])
        out[name] = w.astype(np.float32)
    return out


def main(source: str, out: str) -> None:
    path = Path(source)
    module = import_their_module(path)
    rng = np.random.default_rng(SEED + 2)
    audio = (3 * rng.standard_normal((B, T, D))).astype(np.float32)
    visual = (3 * rng.standard_normal((B, T, D))).astype(np.float32)
    fixture = {"audio": audio, "visual": visual, "d": np.int64(D), "heads": np.int64(HEADS),
               "seed": np.int64(SEED), "source_sha256": np.str_(hashlib.sha256(path.read_bytes()).hexdigest())}
    for k, aggregation in enumerate(["self_attention", "fc"]):
        m = build_theirs(module, aggregation)
        weights = seeded_weights(m, SEED + k)
        m.load_state_dict({n: torch.from_numpy(w) for n, w in weights.items()}, strict=True)
        m.eval()
        with torch.no_grad():  # their Two_transformers.forward: normalise, then (video, audio)
            y = m(F.normalize(torch.from_numpy(visual), dim=-1), F.normalize(torch.from_numpy(audio), dim=-1))
        if aggregation == "fc":
            y = y.transpose(0, 1)  # their fc path is sequence-first (T, B, 2D): undo it
        fixture[f"{aggregation}/out"] = y.numpy()
        fixture[f"{aggregation}/layers"] = np.int64(LAYERS[aggregation])
        fixture.update({f"{aggregation}/w/{n}": w for n, w in weights.items()})
        print(f"{aggregation}: {len(weights)} tensors, {sum(w.size for w in weights.values())} weights, "
              f"out {tuple(y.shape)}")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **fixture)
    print(f"wrote {out}: {Path(out).stat().st_size} bytes")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: make_jmt_reference.py THEIR/mm_multi_transformers.py OUT.npz")
    main(sys.argv[1], sys.argv[2])
