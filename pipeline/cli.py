"""The `jmt` command line: assembles one sub-command per stage (each lives with its stage)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated

import typer

from pipeline import __version__
from pipeline import cache_tools, report
from pipeline.console import console
from pipeline.demo import generate
from pipeline.stage1 import audio, embed, faces, labels, transcribe
from pipeline.infer import export, live, predict
from pipeline.stage2 import compare, evaluate, heads_cli, train, tune
from pipeline.stage2 import ensemble
from pipeline.errors import JmtError

app = typer.Typer(
    name="jmt",
    help="Audio-visual emotion recognition (valence-arousal, expression, action units): stage 1 "
    "caches per-frame embeddings per stream and labels per task, stage 2 trains fusion heads (JMT and "
    "rivals) on them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _clear_errors(fn: Callable) -> Callable:
    """Reports a JmtError as one red line and exit code 2 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except JmtError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"jmt {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """Audio-visual emotion recognition with a two-stage feature cache."""


app.command("demo")(_clear_errors(generate.command))
app.command("faces")(_clear_errors(faces.command))
app.command("audio")(_clear_errors(audio.command))
app.command("labels")(_clear_errors(labels.command))
app.command("transcribe")(_clear_errors(transcribe.command))
app.command("embed")(_clear_errors(embed.command))
app.command("train")(_clear_errors(train.command))
app.command("evaluate")(_clear_errors(evaluate.command))
app.command("heads")(_clear_errors(heads_cli.command))
app.command("predict")(_clear_errors(predict.command))
app.command("export")(_clear_errors(export.command))
app.command("live")(_clear_errors(live.command))
app.command("compare")(_clear_errors(compare.command))
app.command("tune")(_clear_errors(tune.command))
app.command("ensemble")(_clear_errors(ensemble.command))
app.command("report")(_clear_errors(report.command))
app.command("readme")(_clear_errors(report.readme_command))

cache_app = typer.Typer(help="Inspect and check HDF5 caches (info, verify).", no_args_is_help=True)
cache_app.command("info")(_clear_errors(cache_tools.info_command))
cache_app.command("verify")(_clear_errors(cache_tools.verify_command))
app.add_typer(cache_app, name="cache")


def run() -> None:
    """Console-script entry point."""
    app(prog_name="jmt")
