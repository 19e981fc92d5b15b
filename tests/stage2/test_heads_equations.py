"""Each fusion head against its N-stream rule as its docstring writes it, computed
independently in float64 numpy on tiny hand-built inputs, at N = 2 and N = 3 streams.

Every head is built at tiny sizes with the identity temporal encoder (so the check isolates
the fusion), every parameter is overwritten with known random values, and the expected output
of every task is computed from the equations in each head's docstring (SPEC.md section 1).
The streams are declared in an order other than their names' (visual, audio[, prosody]), so
a concatenation or pairing in the wrong order fails here, as does a stream swapped, a residual
dropped, a weight reused or the recursion skipped. JMT at N = 2 is also matched to the
authors' module (test_jmt_reference.py).
"""

import numpy as np
import pytest
import torch

from pipeline.stage2.heads import build_head

pytestmark = pytest.mark.usefixtures("one_thread")

B, T, D = 2, 5, 4
STREAMS = {2: {"visual": 5, "audio": 6}, 3: {"visual": 5, "audio": 6, "prosody": 3}}   # declared order
TASKS = ["va", "expr", "au"]


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


def mlp(W, name, x):
    """Linear(d, 128), ReLU, (Dropout), Linear(128, k)."""
    return linear(relu(linear(x, W, f"{name}.0")), W, f"{name}.3")


def task_heads(W, name, x, tasks):
    """Each task's head (pipeline/tasks): va's separate valence and arousal MLPs (width 1 each,
    concatenated), expr's and au's one MLP (8 logits, 12 logits)."""
    out = {}
    for t in tasks:
        if t == "va":
            out[t] = np.concatenate([mlp(W, f"{name}.va.{axis}", x) for axis in ("valence", "arousal")], -1)
        else:
            out[t] = mlp(W, f"{name}.{t}", x)
    return out


def joint_attention(W, name, x, joint):
    """JCA for one stream X (B, T, d) and the joint feature J (B, T, N d), with the documented
    deviation: J' = W_j J; C = tanh(X J'^T / sqrt(d)); H = ReLU(W_x X + W_c (C J' / T));
    attended X = W_h H + X (residual)."""
    jd = linear(joint, W, f"{name}.w_j")                                    # (B, T, d)
    c = np.tanh(x @ np.swapaxes(jd, -1, -2) / np.sqrt(x.shape[-1]))         # (B, T, T)
    h = relu(linear(x, W, f"{name}.w_x") + linear(c @ jd / x.shape[1], W, f"{name}.w_c"))
    return linear(h, W, f"{name}.w_h") + x


def inputs_np(W, x, m, streams):
    """x_i = input_i(s_i) for each stream, by name (identity temporal encoders)."""
    return {s: modality_in(W, f"inputs.{s}", x[s], m[s]) for s in streams}


# ---- the heads, from their docstrings ----------------------------------------------------

def ref_unimodal(W, x, m, streams, tasks, stream):
    """fused = temporal(input_k(s_k)) for the named stream s_k."""
    return task_heads(W, "head", modality_in(W, f"inputs.{stream}", x[stream], m[stream]), tasks)


def ref_concat(W, x, m, streams, tasks):
    """fused = temporal(concat(input_1(s_1), ..., input_N(s_N))), identity: Linear(N d -> d)."""
    e = inputs_np(W, x, m, streams)
    return task_heads(W, "head", linear(np.concatenate([e[s] for s in streams], -1), W, "temporal.proj"), tasks)


def ref_late(W, x, m, streams, tasks):
    """out[task] = sum_i w_i[task] p_i[task], w[task] = softmax over the streams of mix[task]."""
    e = inputs_np(W, x, m, streams)
    p = {s: task_heads(W, f"predict.{s}", e[s], tasks) for s in streams}
    out = {}
    for t in tasks:
        w = softmax(W[f"mix.{t}"], axis=0)                                  # (N, width), rows: declared order
        out[t] = sum(w[i] * p[s][t] for i, s in enumerate(streams))
    return out


def ref_mt(W, x, m, streams, tasks, heads, layers):
    """a(i -> j) = MHA_i(e_i, e_j); fused = concat(a(i -> j), i in 1..N, j in 1..N, j != i)."""
    e = {s: encoder(W, f"enc.{s}", v, heads, layers) for s, v in inputs_np(W, x, m, streams).items()}
    attended = [mha(W, f"cross.{q}", e[q], e[k], heads) for q in streams for k in streams if k != q]
    return task_heads(W, "head", np.concatenate(attended, -1), tasks)


def ref_jca(W, x, m, streams, tasks, iterations):
    """J = concat(x_1, ..., x_N); x_i <- JCA_i(x_i, J), `iterations` times with shared weights;
    fused = concat(x'_1, ..., x'_N)."""
    e = inputs_np(W, x, m, streams)
    for _ in range(iterations):
        joint = np.concatenate([e[s] for s in streams], -1)
        e = {s: joint_attention(W, f"block.{s}", e[s], joint) for s in streams}
    return task_heads(W, "head", np.concatenate([e[s] for s in streams], -1), tasks)


def jmt_tokens(streams):
    """The docstring's token order, written out: each pair i < j as s_i -> s_j, s_j -> s_i,
    then J -> s_k, s_k -> J for each k."""
    n = len(streams)
    pairs = []
    for i in range(n):
        for j in range(i + 1, n):
            pairs += [(streams[i], streams[j]), (streams[j], streams[i])]
    for k in range(n):
        pairs += [("J", streams[k]), (streams[k], "J")]
    return pairs


def ref_jmt(W, x, m, streams, tasks, heads, layers, aggregation):
    """J = Linear(concat(x_1..x_N)); e_i = Enc_i(x_i), e_J = Enc_J(J); the N(N+1) cross-
    attentions (one MHA per query stream); self_attention: encoder + self-attention over the
    tokens of each frame, the last token kept; fc: Linear over their concatenation."""
    v = inputs_np(W, x, m, streams)
    e = {s: encoder(W, f"enc.{s}", v[s], heads, layers) for s in streams}
    e["J"] = encoder(W, "enc_joint", linear(np.concatenate([v[s] for s in streams], -1), W, "joint"), heads, layers)
    tokens = [mha(W, "cross_joint" if q == "J" else f"cross.{q}", e[q], e[k], heads) for q, k in jmt_tokens(streams)]
    if aggregation == "fc":
        return task_heads(W, "head", linear(np.concatenate(tokens, -1), W, "agg_fc"), tasks)
    stacked = np.stack(tokens, 2).reshape(B * T, len(tokens), D)            # (B*T, N(N+1), d): a frame's tokens
    stacked = encoder(W, "agg_block", stacked, heads, layers)
    kept = mha(W, "agg_attn", stacked, stacked, heads)[:, -1]               # the last token, s_N -> J
    return task_heads(W, "head", kept.reshape(B, T, D), tasks)


CASES = {
    "only:visual": ({}, lambda W, *a: ref_unimodal(W, *a, "visual")),
    "only:audio": ({}, lambda W, *a: ref_unimodal(W, *a, "audio")),
    "concat": ({}, ref_concat),
    "late": ({}, ref_late),
    "mt": ({"heads": 1, "layers": 1}, lambda W, *a: ref_mt(W, *a, 1, 1)),
    "mt-2heads-2layers": ({"heads": 2, "layers": 2}, lambda W, *a: ref_mt(W, *a, 2, 2)),
    "jca": ({}, lambda W, *a: ref_jca(W, *a, 1)),
    "rjca": ({"iterations": 2}, lambda W, *a: ref_jca(W, *a, 2)),
    "rjca-3": ({"iterations": 3}, lambda W, *a: ref_jca(W, *a, 3)),
    "jmt": ({"aggregation": "self_attention"}, lambda W, *a: ref_jmt(W, *a, 1, 1, "self_attention")),
    "jmt-2heads-2layers": ({"aggregation": "self_attention", "heads": 2, "layers": 2},
                           lambda W, *a: ref_jmt(W, *a, 2, 2, "self_attention")),
    "jmt-fc": ({"aggregation": "fc"}, lambda W, *a: ref_jmt(W, *a, 1, 1, "fc")),
}


def hand_set(head, streams, seed=0):
    """Overwrites every parameter with known values (N(0, 0.5)) and sets the input statistics
    (per-feature mean and std) by hand; returns them all as float64 numpy, by name."""
    rng = np.random.default_rng(seed)
    weights = {}
    with torch.no_grad():
        for name, p in head.named_parameters():
            value = rng.normal(0, 0.5, tuple(p.shape))
            p.copy_(torch.as_tensor(value))
            weights[name] = value
    stats = {s: (rng.normal(0, 0.5, dim), rng.uniform(0.5, 2.0, dim)) for s, dim in streams.items()}
    head.set_input_stats(stats)
    for s, (mean, std) in stats.items():
        weights[f"inputs.{s}.mean"], weights[f"inputs.{s}.std"] = mean, std
    return weights


def inputs(streams, seed=1):
    """Tiny inputs with some frames masked in each stream (different frames per stream)."""
    rng = np.random.default_rng(seed)
    x = {s: rng.normal(size=(B, T, d)) for s, d in streams.items()}
    m = {s: np.ones((B, T), bool) for s in streams}
    for i, s in enumerate(streams):
        m[s][0, (1 + i) % T] = m[s][1, (3 + 2 * i) % T] = False
    return x, m


def as_torch(x, m):
    return ({s: torch.as_tensor(v, dtype=torch.float32) for s, v in x.items()},
            {s: torch.as_tensor(v) for s, v in m.items()})


def build(name, streams, **kwargs):
    torch.manual_seed(0)
    return build_head(name, streams=streams, tasks=TASKS, d_model=D, temporal="identity", dropout=0.0,
                      **kwargs).eval()


@pytest.mark.parametrize("n", sorted(STREAMS))
@pytest.mark.parametrize("case", CASES)
def test_head_matches_its_equations_in_numpy(case, n):
    kwargs, reference = CASES[case]
    streams = STREAMS[n]
    head = build(case.split("-")[0], streams, **kwargs)
    W = hand_set(head, streams)
    x, m = inputs(streams)
    with torch.no_grad():
        got = {t: y.double().numpy() for t, y in head(*as_torch(x, m)).items()}
    expected = reference(W, x, m, list(streams), TASKS)
    assert list(got) == list(expected) == TASKS
    for t in TASKS:
        assert expected[t].shape == got[t].shape == (B, T, {"va": 2, "expr": 8, "au": 12}[t])
        np.testing.assert_allclose(got[t], expected[t], rtol=1e-4, atol=1e-4, err_msg=f"{case}, N = {n}, {t}")


def test_the_references_tell_the_declared_order_from_the_name_order():
    """The check above can fail: the same head, its streams declared in another order (same
    weights by name), gives other outputs, and the reference follows."""
    streams = STREAMS[3]
    flipped = dict(reversed(list(streams.items())))
    x, m = inputs(streams)
    for name in ("concat", "jca", "mt", "late", "jmt"):
        head = build(name, streams)
        W = hand_set(head, streams)
        other = build(name, flipped)
        other.load_state_dict(head.state_dict())
        ref = dict(CASES)[name][1]
        with torch.no_grad():
            got = other(*as_torch(x, m))["va"].double().numpy()
        np.testing.assert_allclose(got, ref(W, x, m, list(flipped), TASKS)["va"], rtol=1e-4, atol=1e-4)
        assert not np.allclose(got, ref(W, x, m, list(streams), TASKS)["va"], rtol=1e-3, atol=1e-3), name


@pytest.mark.parametrize("n", sorted(STREAMS))
def test_unimodal_heads_read_only_their_stream(n):
    streams = STREAMS[n]
    x, m = as_torch(*inputs(streams))
    for own in streams:
        head = build(f"only:{own}", streams)
        base = head(x, m)
        for s in streams:
            changed = head({**x, s: torch.randn_like(x[s])}, m)
            for t in TASKS:
                if s == own:
                    assert not torch.allclose(changed[t], base[t]), (own, s, t)
                else:
                    torch.testing.assert_close(changed[t], base[t], rtol=0, atol=0)


@pytest.mark.parametrize("n", sorted(STREAMS))
def test_jca_attended_feature_is_w_h_h_plus_the_residual(n):
    """With W_h = 0 the attended features are the inputs themselves: the head then equals its
    task heads on concat(x_1, ..., x_N) alone (the residual path), whatever W_x, W_c, W_j are."""
    streams = STREAMS[n]
    head = build("jca", streams)
    W = hand_set(head, streams)
    with torch.no_grad():
        for block in head.block.values():
            block.w_h.weight.zero_()
    x, m = inputs(streams)
    e = inputs_np(W, x, m, streams)
    expected = task_heads(W, "head", np.concatenate([e[s] for s in streams], -1), TASKS)
    with torch.no_grad():
        got = head(*as_torch(x, m))
    for t in TASKS:
        np.testing.assert_allclose(got[t].double().numpy(), expected[t], rtol=1e-4, atol=1e-4)
