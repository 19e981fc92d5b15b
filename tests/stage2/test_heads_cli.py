"""`jmt heads` before a cache exists: each stream's width comes from its backbone as the params
build it (pipeline/stage2/heads_cli.py), the width `jmt embed` then writes."""

from pipeline.stage2.heads_cli import OTHER_WIDTH, backbone_width, list_heads


def test_without_a_cache_the_heads_are_listed_at_the_widths_embed_writes(tiny_cache, tmp_path):
    params, _ = tiny_cache
    rows, widths, source = list_heads(params)                                    # the cache's own widths
    assert source == str(params.path(params.embed.out))
    before = params.updated(embed={"out": str(tmp_path / "no-cache")})
    assert list_heads(before) == (rows, widths, f"params (no cache yet; widths of the default backbones, "
                                                f"{OTHER_WIDTH} for others)")


def test_a_width_follows_the_params_and_a_backbone_that_needs_a_download_is_not_built(repo_params):
    fewer_bands = repo_params.updated(audio={"n_mels": 40})
    assert backbone_width(fewer_bands.embed.streams["audio"], fewer_bands) == 3 * 40 + 3    # logmel_stats
    three = repo_params.updated(embed={"streams": {"prosody": {"name": "prosody"},
                                                   "clips": {"name": "r2plus1d_18", "checkpoint": "none.pt"},
                                                   "hub": {"name": "timm:resnet18", "pretrained": True}}})
    assert {s: backbone_width(bp, three) for s, bp in three.embed.streams.items()} == \
        {"prosody": 20, "clips": None, "hub": None}
    _, widths, _ = list_heads(three.updated(embed={"out": "/nonexistent/cache"}))
    assert widths == {"prosody": 20, "clips": OTHER_WIDTH, "hub": OTHER_WIDTH}
