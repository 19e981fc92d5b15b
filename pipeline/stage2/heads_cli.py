"""`jmt heads`: the registered fusion heads with their parameter counts for the current params."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipeline import cache
from pipeline.config import DEFAULT_PARAMS, Params, load_params
from pipeline.console import console
from pipeline.stage2.data import streams_of
from pipeline.stage2.heads import HEADS, build_head, count_parameters
from pipeline.stage2.train import head_kwargs

DEFAULT_WIDTHS = {"fer_xception": 135, "logmel_stats": 195, "prosody": 20}  # when there is no cache yet


def list_heads(params: Params) -> tuple[list[dict], dict[str, int], str]:
    """[{name, parameters, about}] for every head (`only:<stream>` per stream), built with
    params.model at the cache's streams and widths (or the params' streams and the default
    backbones' widths before there is a cache), for params.train.tasks."""
    folder = params.path(params.embed.out)
    if cache.entries(folder):
        with cache.open_entry(cache.entry_path(folder, cache.entries(folder)[0])) as f:
            streams, source = {s["name"]: int(s["dim"]) for s in streams_of(f)}, str(folder)
    else:
        streams = {s: DEFAULT_WIDTHS.get(bp.name, 128) for s, bp in params.embed.streams.items()}
        source = "params (no cache yet; widths of the default backbones, 128 for others)"
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
