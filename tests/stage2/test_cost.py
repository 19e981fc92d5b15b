"""What a head costs (`jmt compare`): FLOPs worked by hand, and every head at 2 and 3 streams."""

import pytest

from pipeline.stage2.cost import head_cost
from pipeline.stage2.heads import HEADS, build_head

pytestmark = pytest.mark.usefixtures("one_thread")

STREAMS = {2: {"visual": 7, "audio": 10}, 3: {"visual": 7, "audio": 10, "prosody": 5}}
VA_HEADS = 2 * (2 * 16 * 128 + 2 * 128 * 1)   # valence and arousal: Linear 16->128 + Linear 128->1, per frame


def test_flops_of_a_unimodal_head_worked_by_hand():
    # only:audio, identity temporal model, d=16, audio 10-d: per frame Linear 10->16: 2*10*16 = 320
    # (the visual input is never run), then va's two heads
    head = build_head("only:audio", streams=STREAMS[2], d_model=16, temporal="identity")
    cost = head_cost(head, STREAMS[2], window=8, repeats=1, batch=2)
    assert cost["mflops_per_frame"] == pytest.approx((320 + VA_HEADS) / 1e6)
    assert cost["cpu_ms_per_1000_frames"] > 0 and cost["parameters"] > 0


def test_flops_of_early_fusion_on_three_streams_worked_by_hand():
    # concat, identity temporal model (Linear 3d -> d), d=16: inputs 2*(7+10+5)*16 = 704,
    # temporal 2*48*16 = 1536, then va's heads and expr's Linear 16->128 + Linear 128->8
    head = build_head("concat", streams=STREAMS[3], tasks=["va", "expr"], d_model=16, temporal="identity")
    cost = head_cost(head, STREAMS[3], window=8, repeats=1, batch=2)
    expr = 2 * 16 * 128 + 2 * 128 * 8
    assert cost["mflops_per_frame"] == pytest.approx((704 + 1536 + VA_HEADS + expr) / 1e6)


@pytest.mark.parametrize("n", sorted(STREAMS))
@pytest.mark.parametrize("name", [h for h in HEADS.names() if h != "only"] + ["only:visual"])
def test_every_head_has_a_cost(name, n):
    head = build_head(name, streams=STREAMS[n], d_model=16)
    cost = head_cost(head, STREAMS[n], window=8, repeats=1, batch=2)
    assert cost["mflops_per_frame"] > 0 and cost["parameters"] == sum(p.numel() for p in head.parameters())
