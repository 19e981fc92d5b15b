"""Our `jmt` head against the authors' function (MultimodalTransformer_w_JR).

fixtures/jmt_reference.npz holds their module's weights (their parameter names), raw inputs and
outputs, made by scripts/make_jmt_reference.py from their own file (see its docstring). Here
the weights are copied into our head, built at the same sizes with an identity temporal
encoder, identity input projections (our ModalityInput L2-normalises as their wrapper does)
and all frames present; the input of our regression heads must equal their module's output.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.stage2.heads import build_head

FIXTURE = Path(__file__).parent / "fixtures" / "jmt_reference.npz"

# Their module names -> ours (pipeline/stage2/heads/jmt.py, layers.EncoderBlock).
MODULES = {
    "visual_encoder.layers.": "enc_v.",
    "physiological_encoder.layers.": "enc_a.",
    "joint_representation_encoder.layers.": "enc_j.",
    "final_visual_encoder.layers.": "agg_block.",     # aggregation encoder (self_attention)
    "cross_attention_v.": "cross_v.",                 # V queries: V->A, V->J
    "cross_attention_p.": "cross_a.",                 # A queries: A->V, A->J
    "cross_attention_pv.": "cross_j.",                # J queries: J->V, J->A
    "out_layer_pv.": "joint.",                        # J = Linear(concat(V, A))
    "final_self_attention.": "agg_attn.",             # self_attention over the six tokens
    "out_layer1.": "agg_fc.",                         # fc: Linear(6d -> 2d)
}
# Inside an encoder layer (theirs: attention, feed_forward = Linear, ReLU, Linear;
# ours: attn, ffn = Linear, ReLU, Dropout, Linear).
IN_LAYER = {".attention.": ".attn.", ".feed_forward.0.": ".ffn.0.", ".feed_forward.2.": ".ffn.3.",
            ".layer_norm1.": ".norm1.", ".layer_norm2.": ".norm2."}


def our_name(theirs: str) -> str:
    """Their parameter name -> ours; KeyError for a name the table does not know."""
    prefix = next((p for p in MODULES if theirs.startswith(p)), None)
    if prefix is None:
        raise KeyError(f"no mapping for their parameter {theirs!r}")
    name = MODULES[prefix] + theirs[len(prefix):]
    for old, new in IN_LAYER.items():
        name = name.replace(old, new)
    return name


@pytest.fixture(scope="module")
def ref() -> dict:
    with np.load(FIXTURE) as f:
        return {k: f[k] for k in f.files}


def their_weights(ref: dict, aggregation: str) -> dict[str, np.ndarray]:
    tag = f"{aggregation}/w/"
    return {k[len(tag):]: v for k, v in ref.items() if k.startswith(tag)}


def ours_with_their_weights(ref: dict, aggregation: str) -> torch.nn.Module:
    d = int(ref["d"])
    torch.manual_seed(0)
    head = build_head("jmt", audio_dim=d, visual_dim=d, d_model=d, temporal="identity", heads=int(ref["heads"]),
                      layers=int(ref[f"{aggregation}/layers"]), dropout=0.0, aggregation=aggregation)
    state = head.state_dict()
    new = {}
    for theirs, w in their_weights(ref, aggregation).items():
        ours = our_name(theirs)
        assert ours in state, f"{theirs} -> {ours}: not a parameter of our head"
        assert tuple(state[ours].shape) == w.shape, f"{theirs} -> {ours}: {w.shape} vs {tuple(state[ours].shape)}"
        new[ours] = torch.from_numpy(w)
    for stream in ("audio_in", "visual_in"):  # identity projection after our L2 norm
        new[f"{stream}.proj.weight"], new[f"{stream}.proj.bias"] = torch.eye(d), torch.zeros(d)
    # Ours alone: the regression heads (not in their module), the 'missing' vectors (unused: no mask)
    # and the standardisation buffers (left at their identity defaults: mean 0, std 1).
    left = sorted(set(state) - set(new))
    assert all(n.startswith("head.") or n.endswith((".missing", ".mean", ".std")) for n in left), left
    head.load_state_dict(new, strict=False)
    return head.eval()


def fusion_output(head: torch.nn.Module, ref: dict) -> np.ndarray:
    """The input of our regression heads, (B, T, d or 2d), with every frame present."""
    audio, visual = torch.from_numpy(ref["audio"]), torch.from_numpy(ref["visual"])
    present = torch.ones(audio.shape[:2], dtype=torch.bool)
    seen = {}
    hook = head.head.register_forward_pre_hook(lambda module, args: seen.update(x=args[0]))
    with torch.no_grad():
        head(audio, visual, present, present)
    hook.remove()
    return seen["x"].numpy()


@pytest.mark.parametrize("aggregation", ["self_attention", "fc"])
def test_every_weight_of_theirs_has_a_place_in_ours(ref, aggregation):
    names = [our_name(n) for n in their_weights(ref, aggregation)]
    assert len(names) == len(set(names)) > 0


@pytest.mark.parametrize("aggregation", ["self_attention", "fc"])
def test_matches_the_authors_function(ref, aggregation):
    head = ours_with_their_weights(ref, aggregation)
    want = ref[f"{aggregation}/out"]  # (B, T, d) self_attention, (B, T, 2d) fc; batch-first
    got = fusion_output(head, ref)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
