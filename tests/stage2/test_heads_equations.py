"""Each fusion head (JMT aside: test_jmt_reference.py) against its paper's equations, computed
independently in numpy on tiny hand-built inputs.

Every head is built at tiny sizes with the identity temporal encoder (so the check isolates
the fusion), every parameter is overwritten with known random values, and the expected output
is computed in float64 numpy from the equations in SPEC.md section 1 and each head's
docstring. A wiring change (a stream swapped, a residual dropped, a weight reused, the
recursion skipped) changes the output and fails here.
"""

import numpy as np
import pytest
import torch

from pipeline.stage2.heads import build_head

B, T, DA, DV, D = 2, 5, 6, 5, 4


# ---- numpy building blocks, from the equations -------------------------------------------

def linear(x, W, name):
    """y = x W^T + b (a Linear named `name`; bias optional)."""
    y = x @ W[f"{name}.weight"].T
    return y + W[f"{name}.bias"] if f"{name}.bias" in W else y


def relu(x):
    return np.maximum(x, 0)


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def layer_norm(x, W, name, eps=1e-5):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * W[f"{name}.weight"] + W[f"{name}.bias"]


def modality_in(W, name, x, mask):
    """Standardise each feature with the training split's (mean, std), L2-normalise on the
    feature axis, project to d; the learned 'missing' vector where masked."""
    x = (x - W[f"{name}.mean"]) / W[f"{name}.std"]
    x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return np.where(mask[..., None], linear(x, W, f"{name}.proj"), W[f"{name}.missing"])


def mha(W, name, query, key, heads):
    """Scaled dot-product multi-head attention, key = value: softmax(Q K^T / sqrt(d_h)) V per
    head, heads concatenated, output projection. (B, Tq, d), (B, Tk, d) -> (B, Tq, d)."""
    d = query.shape[-1]
    wq, wk, wv = np.split(W[f"{name}.in_proj_weight"], 3)
    bq, bk, bv = np.split(W[f"{name}.in_proj_bias"], 3)
    q, k, v = query @ wq.T + bq, key @ wk.T + bk, key @ wv.T + bv
    dh = d // heads
    out = []
    for h in range(heads):
        s = slice(h * dh, (h + 1) * dh)
        att = softmax(q[..., s] @ np.swapaxes(k[..., s], -1, -2) / np.sqrt(dh))  # (B, Tq, Tk)
        out.append(att @ v[..., s])
    return linear(np.concatenate(out, -1), W, f"{name}.out_proj")


def encoder_block(W, name, x, heads):
    """Post-norm: x = LN(x + MHA(x, x, x)); x = LN(x + FFN(x)), FFN = Linear, ReLU, Linear."""
    x = layer_norm(x + mha(W, f"{name}.attn", x, x, heads), W, f"{name}.norm1")
    ffn = linear(relu(linear(x, W, f"{name}.ffn.0")), W, f"{name}.ffn.3")
    return layer_norm(x + ffn, W, f"{name}.norm2")


def encoder(W, name, x, heads, layers):
    for i in range(layers):
        x = encoder_block(W, f"{name}.{i}", x, heads)
    return x


def regression(W, name, x):
    """Separate valence and arousal heads: Linear(d, 128), ReLU, Linear(128, 1) each."""
    return np.concatenate([linear(relu(linear(x, W, f"{name}.{axis}.0")), W, f"{name}.{axis}.3")
                           for axis in ("valence", "arousal")], -1)


def joint_attention(W, name, x, joint):
    """JCA for one modality X (T, d) and joint J = [A, V] (T, 2d), with the repository's
    documented deviation: J' = W_j J; C = tanh(X J'^T / sqrt(d)); H = ReLU(W_x X + W_c (C J' / T));
    attended X = W_h H + X (residual)."""
    jd = linear(joint, W, f"{name}.w_j")                                    # (B, T, d)
    c = np.tanh(x @ np.swapaxes(jd, -1, -2) / np.sqrt(x.shape[-1]))         # (B, T, T)
    h = relu(linear(x, W, f"{name}.w_x") + linear(c @ jd / x.shape[1], W, f"{name}.w_c"))
    return linear(h, W, f"{name}.w_h") + x


# ---- the heads, from their papers --------------------------------------------------------

def ref_unimodal(W, audio, visual, am, vm, modality):
    x = modality_in(W, "audio_in", audio, am) if modality == "audio" else modality_in(W, "visual_in", visual, vm)
    return regression(W, "head", x)


def ref_concat(W, audio, visual, am, vm):
    x = np.concatenate([modality_in(W, "audio_in", audio, am), modality_in(W, "visual_in", visual, vm)], -1)
    return regression(W, "head", linear(x, W, "temporal.proj"))             # identity: Linear(2d -> d)


def ref_late(W, audio, visual, am, vm):
    pa = regression(W, "head_a", modality_in(W, "audio_in", audio, am))
    pv = regression(W, "head_v", modality_in(W, "visual_in", visual, vm))
    w = softmax(W["mix"], axis=0)                                           # (modality, axis)
    return w[0] * pa + w[1] * pv


def ref_mt(W, audio, visual, am, vm, heads, layers):
    a = encoder(W, "enc_a", modality_in(W, "audio_in", audio, am), heads, layers)
    v = encoder(W, "enc_v", modality_in(W, "visual_in", visual, vm), heads, layers)
    va = mha(W, "cross_v", v, a, heads)                                     # V queries A
    av = mha(W, "cross_a", a, v, heads)                                     # A queries V
    return regression(W, "head", np.concatenate([va, av], -1))


def ref_jca(W, audio, visual, am, vm, iterations):
    a, v = modality_in(W, "audio_in", audio, am), modality_in(W, "visual_in", visual, vm)
    for _ in range(iterations):                                             # shared weights
        joint = np.concatenate([a, v], -1)
        a, v = joint_attention(W, "block.audio", a, joint), joint_attention(W, "block.visual", v, joint)
    return regression(W, "head", np.concatenate([a, v], -1))


CASES = {
    "audio_only": ({}, lambda W, *x: ref_unimodal(W, *x, "audio")),
    "visual_only": ({}, lambda W, *x: ref_unimodal(W, *x, "visual")),
    "concat": ({}, ref_concat),
    "late": ({}, ref_late),
    "mt": ({"heads": 1, "layers": 1}, lambda W, *x: ref_mt(W, *x, 1, 1)),
    "mt-2heads-2layers": ({"heads": 2, "layers": 2}, lambda W, *x: ref_mt(W, *x, 2, 2)),
    "jca": ({}, lambda W, *x: ref_jca(W, *x, 1)),
    "rjca": ({"iterations": 2}, lambda W, *x: ref_jca(W, *x, 2)),
    "rjca-3": ({"iterations": 3}, lambda W, *x: ref_jca(W, *x, 3)),
}


def hand_set(head, seed=0):
    """Overwrites every parameter with known values (N(0, 0.5)) and sets the input statistics
    (per-feature mean and std) by hand; returns them all as float64 numpy, by name."""
    rng = np.random.default_rng(seed)
    weights = {}
    with torch.no_grad():
        for name, p in head.named_parameters():
            value = rng.normal(0, 0.5, tuple(p.shape))
            p.copy_(torch.as_tensor(value))
            weights[name] = value
    stats = {m: (rng.normal(0, 0.5, dim), rng.uniform(0.5, 2.0, dim)) for m, dim in (("audio", DA), ("visual", DV))}
    head.set_input_stats(stats["audio"], stats["visual"])
    for m, (mean, std) in stats.items():
        weights[f"{m}_in.mean"], weights[f"{m}_in.std"] = mean, std
    return weights


def inputs(seed=1):
    """Tiny inputs with some frames masked in each modality."""
    rng = np.random.default_rng(seed)
    audio, visual = rng.normal(size=(B, T, DA)), rng.normal(size=(B, T, DV))
    am = np.ones((B, T), bool)
    vm = np.ones((B, T), bool)
    am[0, 1], am[1, 3], vm[0, 3], vm[1, 0] = False, False, False, False
    return audio, visual, am, vm


def as_torch(audio, visual, am, vm):
    return (torch.as_tensor(audio, dtype=torch.float32), torch.as_tensor(visual, dtype=torch.float32),
            torch.as_tensor(am), torch.as_tensor(vm))


@pytest.mark.parametrize("case", CASES)
def test_head_matches_its_equations_in_numpy(case):
    kwargs, reference = CASES[case]
    name = case.split("-")[0]
    head = build_head(name, audio_dim=DA, visual_dim=DV, d_model=D, temporal="identity", dropout=0.0,
                      **kwargs).eval()
    W = hand_set(head)
    audio, visual, am, vm = inputs()
    with torch.no_grad():
        got = head(*as_torch(audio, visual, am, vm)).double().numpy()
    expected = reference(W, audio, visual, am, vm)
    assert expected.shape == (B, T, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4, err_msg=case)


@pytest.mark.parametrize(("name", "own", "other"), [("audio_only", 0, 1), ("visual_only", 1, 0)])
def test_unimodal_heads_read_only_their_stream(name, own, other):
    torch.manual_seed(0)
    head = build_head(name, audio_dim=DA, visual_dim=DV, d_model=D).eval()
    x = as_torch(*inputs())
    base = head(*x)
    changed = list(x)
    changed[other] = torch.randn_like(x[other])
    torch.testing.assert_close(head(*changed), base)
    changed = list(x)
    changed[own] = torch.randn_like(x[own])
    assert not torch.allclose(head(*changed), base)


def test_jca_attended_feature_is_w_h_h_plus_the_residual():
    """With W_h = 0 the attended features are the inputs themselves: the head then equals its
    regression of concat(A', V') alone (the residual path), whatever W_x, W_c, W_j are."""
    head = build_head("jca", audio_dim=DA, visual_dim=DV, d_model=D, temporal="identity").eval()
    W = hand_set(head)
    with torch.no_grad():
        head.block.audio.w_h.weight.zero_()
        head.block.visual.w_h.weight.zero_()
    audio, visual, am, vm = inputs()
    a, v = modality_in(W, "audio_in", audio, am), modality_in(W, "visual_in", visual, vm)
    expected = regression(W, "head", np.concatenate([a, v], -1))
    with torch.no_grad():
        got = head(*as_torch(audio, visual, am, vm)).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
