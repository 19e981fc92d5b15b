"""Our `jmt` head against the authors' function (MultimodalTransformer_w_JR).

fixtures/jmt_reference.npz holds their module's weights (their parameter names), raw inputs and
outputs, made by scripts/make_jmt_reference.py from their own file (see its docstring). Here
the weights are copied into our head, built at the same sizes on the streams (visual, audio) in
that order, with an identity temporal encoder, identity input projections (our ModalityInput
L2-normalises as their wrapper does) and all frames present; the input of our task heads must
equal their module's output. Then the token order at N = 3, as jmt.py's docstring states it.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.stage2.heads import build_head
from pipeline.stage2.heads.jmt import JOINT, order

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURE = Path(__file__).parent / "fixtures" / "jmt_reference.npz"

# Their module names -> ours (pipeline/stage2/heads/jmt.py, layers.EncoderBlock).
MODULES = {
    "visual_encoder.layers.": "enc.visual.",
    "physiological_encoder.layers.": "enc.audio.",
    "joint_representation_encoder.layers.": "enc_joint.",
    "final_visual_encoder.layers.": "agg_block.",     # aggregation encoder (self_attention)
    "cross_attention_v.": "cross.visual.",            # V queries: V->A, V->J
    "cross_attention_p.": "cross.audio.",             # A queries: A->V, A->J
    "cross_attention_pv.": "cross_joint.",            # J queries: J->V, J->A
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
    head = build_head("jmt", streams={"visual": d, "audio": d}, tasks=["va"], d_model=d, temporal="identity",
                      heads=int(ref["heads"]), layers=int(ref[f"{aggregation}/layers"]), dropout=0.0,
                      aggregation=aggregation)
    state = head.state_dict()
    new = {}
    for theirs, w in their_weights(ref, aggregation).items():
        ours = our_name(theirs)
        assert ours in state, f"{theirs} -> {ours}: not a parameter of our head"
        assert tuple(state[ours].shape) == w.shape, f"{theirs} -> {ours}: {w.shape} vs {tuple(state[ours].shape)}"
        new[ours] = torch.from_numpy(w)
    for stream in ("visual", "audio"):  # identity projection after our L2 norm
        new[f"inputs.{stream}.proj.weight"], new[f"inputs.{stream}.proj.bias"] = torch.eye(d), torch.zeros(d)
    # Ours alone: va's output heads (not in their module), the 'missing' vectors (unused: no mask)
    # and the standardisation buffers (left at their identity defaults: mean 0, std 1).
    left = sorted(set(state) - set(new))
    assert all(n.startswith("head.va.") or n.endswith((".missing", ".mean", ".std")) for n in left), left
    assert any(n.startswith("head.va.valence.") for n in left) and any(n.startswith("head.va.arousal.") for n in left)
    head.load_state_dict(new, strict=False)
    return head.eval()


def fusion_output(head: torch.nn.Module, ref: dict) -> np.ndarray:
    """The input of our task heads, (B, T, d or 2d), with every frame present."""
    streams = {"visual": torch.from_numpy(ref["visual"]), "audio": torch.from_numpy(ref["audio"])}
    present = {s: torch.ones(x.shape[:2], dtype=torch.bool) for s, x in streams.items()}
    seen = {}
    hook = head.head.register_forward_pre_hook(lambda module, args: seen.update(x=args[0]))
    with torch.no_grad():
        head(streams, present)
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


# ---- N streams: the token order jmt.py's docstring states ---------------------------------

STREAMS3 = {"visual": 5, "audio": 6, "prosody": 3}   # declared order, not the names' order
# the docstring's list for (s_1, s_2, s_3): [1->2, 2->1, 1->3, 3->1, 2->3, 3->2, J->1, 1->J, J->2, 2->J, J->3, 3->J]
TOKENS3 = [("visual", "audio"), ("audio", "visual"), ("visual", "prosody"), ("prosody", "visual"),
           ("audio", "prosody"), ("prosody", "audio"), ("J", "visual"), ("visual", "J"), ("J", "audio"),
           ("audio", "J"), ("J", "prosody"), ("prosody", "J")]


def test_token_order_is_the_docstrings():
    assert JOINT == "J"
    # N = 2: the authors' order, [V->A, A->V, J->V, V->J, J->A, A->J]
    assert order(["visual", "audio"]) == [("visual", "audio"), ("audio", "visual"), ("J", "visual"),
                                          ("visual", "J"), ("J", "audio"), ("audio", "J")]
    assert order(list(STREAMS3)) == TOKENS3
    assert order(["visual"]) == [("J", "visual"), ("visual", "J")]
    head = build_head("jmt", streams=STREAMS3, d_model=8)
    assert head.pairs == TOKENS3                       # the declared order, not stream-name order
    fc = build_head("jmt", streams=STREAMS3, d_model=8, aggregation="fc")
    assert (fc.agg_fc.in_features, fc.agg_fc.out_features) == (12 * 8, 2 * 8)


@pytest.mark.parametrize("aggregation", ["self_attention", "fc"])
def test_three_streams_tokens_in_order_and_the_last_one_kept(aggregation):
    """In a real forward pass at N = 3: the aggregation receives the N(N+1) cross-attentions in
    the docstring's order (each recomputed from the encoders' outputs with the module that
    should make it), and self_attention keeps the output at the last token, s_N -> J."""
    torch.manual_seed(0)
    head = build_head("jmt", streams=STREAMS3, d_model=8, heads=2, temporal="identity",
                      aggregation=aggregation).eval()
    g = torch.Generator().manual_seed(1)
    x = {s: torch.randn(2, 5, d, generator=g) for s, d in STREAMS3.items()}
    m = {s: torch.rand(2, 5, generator=g) > 0.2 for s in STREAMS3}
    seen, hooks = {}, []
    for s in STREAMS3:
        hooks.append(head.enc[s].register_forward_hook(lambda mod, args, out, s=s: seen.update({s: out})))
    hooks.append(head.enc_joint.register_forward_hook(lambda mod, args, out: seen.update(J=out)))
    agg = head.agg_fc if aggregation == "fc" else head.agg_block
    hooks.append(agg.register_forward_pre_hook(lambda mod, args: seen.update(agg_in=args[0])))
    hooks.append(head.head.register_forward_pre_hook(lambda mod, args: seen.update(fused=args[0])))
    with torch.no_grad():
        head(x, m)
        for h in hooks:
            h.remove()
        tokens = [(head.cross_joint if q == "J" else head.cross[q])(seen[q], seen[k], seen[k], need_weights=False)[0]
                  for q, k in TOKENS3]                                              # 12 x (B, T, d)
        if aggregation == "fc":
            torch.testing.assert_close(seen["agg_in"], torch.cat(tokens, -1))       # (B, T, 12 d), in order
            return
        stacked = torch.stack(tokens, 2).reshape(10, 12, 8)                          # (B*T, 12, d)
        torch.testing.assert_close(seen["agg_in"], stacked)
        mixed = head.agg_block(stacked)
        out = head.agg_attn(mixed, mixed, mixed, need_weights=False)[0]             # (B*T, 12, d)
    fused = seen["fused"].reshape(10, 8)
    torch.testing.assert_close(fused, out[:, -1])                                    # prosody -> J
    assert TOKENS3[-1] == ("prosody", "J")
    assert not any(torch.allclose(fused, out[:, k], atol=1e-4) for k in range(11))
