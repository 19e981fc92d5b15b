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
from pipeline.stage2.heads import HEADS, build_head, count_parameters
from pipeline.stage2.train import head_kwargs

DEFAULT_DIMS = (195, 135)  # logmel_stats, fer_xception: used when there is no cache yet


def list_heads(params: Params) -> tuple[list[dict], tuple[int, int], str]:
    """[(name, parameters, doc line)] for every head, built with params.model at the cache's widths."""
    folder = params.path(params.embed.out)
    dims, source = DEFAULT_DIMS, "default backbones (no cache yet)"
    if cache.entries(folder):
        with cache.open_entry(cache.entry_path(folder, cache.entries(folder)[0])) as f:
            dims, source = (int(f.attrs["audio_dim"]), int(f.attrs["visual_dim"])), str(folder)
    rows = []
    for name in HEADS.names():
        model = params.model.model_copy(update={"fusion": name})
        head = build_head(name, **head_kwargs(model, *dims))
        doc = sys.modules[HEADS.get(name).__module__].__doc__ or ""
        rows.append({"name": name, "parameters": count_parameters(head), "about": doc.strip().split("\n")[0]})
    return rows, dims, source


def command(params: Annotated[Path, typer.Option(help="Params file.")] = DEFAULT_PARAMS) -> None:
    """List the fusion heads with parameter counts for the current params."""
    rows, dims, source = list_heads(load_params(params))
    table = Table(title=f"fusion heads (audio {dims[0]}-d, visual {dims[1]}-d from {source})")
    for col in ("head", "parameters", "about"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], f"{r['parameters']:,}", r["about"])
    console.print(table)
