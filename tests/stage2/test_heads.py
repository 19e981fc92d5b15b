"""Every fusion head and temporal encoder: tiny sizes, forward and backward, shapes, no NaN."""

import pytest
import torch

from pipeline.registry import RegistryError
from pipeline.stage2.heads import HEADS, build_head, count_parameters
from pipeline.stage2.layers import TEMPORAL

B, T, DA, DV = 3, 12, 10, 7
FUSION = {"jmt", "mt", "jca", "rjca", "concat", "late"}


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    audio, visual = torch.randn(B, T, DA, generator=g), torch.randn(B, T, DV, generator=g)
    am, vm = torch.rand(B, T, generator=g) > 0.2, torch.rand(B, T, generator=g) > 0.2
    return audio, visual, am, vm


def tiny(name, **kw):
    torch.manual_seed(0)
    return build_head(name, audio_dim=DA, visual_dim=DV, d_model=16, **kw)


def test_registry_holds_the_issue_heads():
    assert set(HEADS.names()) == FUSION | {"audio_only", "visual_only"}


@pytest.mark.parametrize("name", HEADS.names())
def test_forward_backward_shape_no_nan(name):
    head = tiny(name, dropout=0.1)
    out = head(*batch())
    assert out.shape == (B, T, 2) and torch.isfinite(out).all()
    out.pow(2).mean().backward()
    grads = {n: p.grad for n, p in head.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for n, g in grads.items()
               if not (n.startswith("audio_in") and name == "visual_only")
               and not (n.startswith("visual_in") and name == "audio_only")), name
    assert count_parameters(head) > 0
    assert head.spec == {"name": name, "kwargs": {"audio_dim": DA, "visual_dim": DV, "d_model": 16, "dropout": 0.1}}


@pytest.mark.parametrize("name", sorted(FUSION))
def test_fusion_heads_use_both_modalities(name):
    head = tiny(name).eval()
    audio, visual, am, vm = batch()
    base = head(audio, visual, am, vm)
    assert not torch.allclose(base, head(audio + 1, visual, am, vm))
    assert not torch.allclose(base, head(audio, visual + 1, am, vm))


@pytest.mark.parametrize("name", HEADS.names())
def test_masked_frames_ignore_their_content(name):
    """Where a modality is masked, its (garbage) features must not change the output."""
    head = tiny(name).eval()
    audio, visual, am, vm = batch()
    vm = torch.zeros_like(vm)
    noisy = visual + 100 * torch.randn_like(visual)
    torch.testing.assert_close(head(audio, visual, am, vm), head(audio, noisy, am, vm))


@pytest.mark.parametrize("temporal", TEMPORAL.names())
def test_every_temporal_encoder_in_a_head(temporal):
    out = tiny("jmt", temporal=temporal)(*batch())
    assert out.shape == (B, T, 2) and torch.isfinite(out).all()


def test_tcn_is_causal():
    enc = TEMPORAL.get("tcn")(4, 8).eval()
    x = torch.randn(1, 20, 4)
    y = x.clone()
    y[:, 15:] += 5  # change the future only
    torch.testing.assert_close(enc(x)[:, :15], enc(y)[:, :15])


def test_jmt_options_and_errors():
    assert tiny("jmt", aggregation="fc", heads=2, layers=2)(*batch()).shape == (B, T, 2)
    with pytest.raises(ValueError, match="aggregation"):
        tiny("jmt", aggregation="mean")
    with pytest.raises(ValueError, match="iterations"):
        tiny("rjca", iterations=0)
    with pytest.raises(RegistryError, match="unknown temporal encoder 'lstm'"):
        tiny("mt", temporal="lstm")
    with pytest.raises(RegistryError, match="unknown fusion head 'transformer'; known: audio_only"):
        build_head("transformer", audio_dim=1, visual_dim=1)
