"""`jmt heads`: the registered fusion heads with their parameter counts for the current params."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.table import Table

from pipeline import cache
from pipeline.config import DEFAULT_PARAMS, BackboneParams, Params, load_params
from pipeline.console import console
from pipeline.errors import JmtError
from pipeline.stage1 import backbones
from pipeline.stage1.audio import window_frames
from pipeline.stage2.data import streams_of
from pipeline.stage2.heads import HEADS, build_head, count_parameters
from pipeline.stage2.train import head_kwargs

OTHER_WIDTH = 128  # a stream whose backbone cannot be built here (weights to download, or not on disk yet)


def backbone_width(backbone: BackboneParams, params: Params) -> int | None:
    """The width of the features `jmt embed` writes for a stream: its backbone built from its
    params (options included) and its `dim`, or, for a log-mel backbone without one, the width of
    its output on one silent window (logmel_stats: 3 * audio.n_mels + 3). None when the backbone
    cannot be built offline: pretrained weights (a download), a checkpoint not there yet."""
    if backbone.pretrained:
        return None
    try:
        with warnings.catch_warnings():   # random weights (allow_random) have the same width
            warnings.simplefilter("ignore")
            module = backbones.build_backbone(backbone, params.root)
        width = getattr(module, "dim", None)
        if width is None and backbones.input_of(module) == "logmel":
            with torch.no_grad():   # (1, W, n_mels) -> (1, D)
                width = module(torch.zeros(1, window_frames(params), params.audio.n_mels)).shape[-1]
    except (JmtError, ImportError, OSError):
        return None
    return None if width is None else int(width)


def list_heads(params: Params) -> tuple[list[dict], dict[str, int], str]:
    """[{name, parameters, about}] for every head (`only:<stream>` per stream), built with
    params.model at the cache's streams and widths (or, before there is a cache, the params'
    streams at their backbones' widths: `backbone_width`), for params.train.tasks."""
    folder = params.path(params.embed.out)
    if cache.entries(folder):
        with cache.open_entry(cache.entry_path(folder, cache.entries(folder)[0])) as f:
            streams, source = {s["name"]: int(s["dim"]) for s in streams_of(f)}, str(folder)
    else:
        streams = {s: backbone_width(bp, params) or OTHER_WIDTH for s, bp in params.embed.streams.items()}
        source = f"params (no cache yet; widths of the default backbones, {OTHER_WIDTH} for others)"
    rows = []
    names = [n for n in HEADS.names() if n != "only"] + [f"only:{s}" for s in streams]
    for name in names:
        key = name.partition(":")[0]
        if len(streams) < HEADS.get(key).min_streams:
            continue
        model = params.model.model_copy(update={"fusion": name})
        head = build_head(name, **head_kwargs(model, streams, params.train.tasks))
        doc = sys.modules[HEADS.get(key).__module__].__doc__ or ""
        rows.append({"name": name, "parameters": count_parameters(head), "about": doc.strip().split("\n")[0]})
    return rows, streams, source


def command(params: Annotated[Path, typer.Option(help="Params file.")] = DEFAULT_PARAMS) -> None:
    """List the fusion heads with parameter counts for the current params."""
    p = load_params(params)
    rows, streams, source = list_heads(p)
    widths = ", ".join(f"{s} {d}-d" for s, d in streams.items())
    table = Table(title=f"fusion heads (streams {widths} from {source}; tasks {', '.join(p.train.tasks)})")
    for col in ("head", "parameters", "about"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], f"{r['parameters']:,}", r["about"])
    console.print(table)
