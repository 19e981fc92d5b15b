import pytest

from pipeline.stage2.cost import head_cost
from pipeline.stage2.heads import HEADS, build_head


def test_flops_of_a_head_worked_by_hand():
    # audio_only, identity temporal model, d=16, audio 10-d: per frame
    # Linear 10->16: 2*10*16 = 320; two heads of Linear 16->128 (4096) + Linear 128->1 (256)
    head = build_head("audio_only", audio_dim=10, visual_dim=7, d_model=16, temporal="identity")
    cost = head_cost(head, 10, 7, window=8, repeats=1, batch=2)
    assert cost["mflops_per_frame"] == pytest.approx((320 + 2 * (4096 + 256)) / 1e6)
    assert cost["cpu_ms_per_1000_frames"] > 0 and cost["parameters"] > 0


@pytest.mark.parametrize("name", HEADS.names())
def test_every_head_has_a_cost(name):
    head = build_head(name, audio_dim=10, visual_dim=7, d_model=16)
    cost = head_cost(head, 10, 7, window=8, repeats=1, batch=2)
    assert cost["mflops_per_frame"] > 0
