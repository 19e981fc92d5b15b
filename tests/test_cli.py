"""The `jmt` command line through typer's CliRunner (and once as a real process)."""

import re
import subprocess
import sys

import yaml
from typer.testing import CliRunner

from pipeline import __version__
from pipeline.cli import app

from .conftest import REPO

runner = CliRunner()


def test_help_lists_every_command_with_a_description():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "demo" in result.output and "Generate the demo corpus" in result.output
    commands = app.registered_commands
    assert commands and all(c.callback.__doc__ for c in commands)


def _commands(group=app, prefix=()):
    for c in group.registered_commands:
        yield (*prefix, c.name)
    for g in group.registered_groups:
        yield from _commands(g.typer_instance, (*prefix, g.name))


def test_every_help_text_reads_whole():
    """A `[default: ...]` inside a help text is eaten as rich markup, leaving "Output folder ."."""
    for command in _commands():
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "300"})
        assert result.exit_code == 0, command
        stray = [line for line in result.output.splitlines() if re.search(r"\w \.(\s|$)", line)]
        assert not stray, f"jmt {' '.join(command)} --help: {stray}"


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"jmt {__version__}"


def test_python_dash_m_is_the_same_program():
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--version"], capture_output=True,
                          text=True, check=True)
    assert proc.stdout.strip() == f"jmt {__version__}"


def test_unknown_option_is_a_usage_error():
    result = runner.invoke(app, ["demo", "--tinny"])
    assert result.exit_code == 2
    assert "No such option" in result.output and "--tinny" in result.output


def test_typo_in_params_fails_before_any_work(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["demo"]["sead"] = 1
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    result = runner.invoke(app, ["demo", "--tiny", "--params", str(params)])
    assert result.exit_code == 2
    assert "demo.sead: unknown key" in result.output and str(params) in result.output
    assert not (tmp_path / "data").exists()


def test_missing_params_file(tmp_path, monkeypatch):
    result = runner.invoke(app, ["demo", "--params", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2 and "params file not found" in result.output
    monkeypatch.chdir(tmp_path)   # outside the repository: the file looked for, and how to name one
    result = runner.invoke(app, ["compare", "--show"])
    assert result.exit_code == 2
    assert f"params.yaml: params file not found (looked for {tmp_path / 'params.yaml'}; " in result.output
    assert "pass --params PATH" in result.output


def test_demo_writes_where_params_say(tmp_path):
    """Paths in params are relative to the params file's folder, not to the working dir."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["demo"]["out"] = "corpora/mine"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    result = runner.invoke(app, ["demo", "--tiny", "--seed", "5", "--params", str(params)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "corpora/mine/corpus.json").is_file()
    assert "3 videos" in result.output


def test_demo_refusal_is_one_clear_line(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "data.csv").write_text("1")
    result = runner.invoke(app, ["demo", "--tiny", "--out", str(out),
                                 "--params", str(REPO / "params.yaml")])
    assert result.exit_code == 2
    assert "error:" in result.output and "holds no demo corpus" in result.output
    assert "Traceback" not in result.output


def test_stage1_commands_through_the_cli(tiny_corpus, tmp_path):
    from .stage1.helpers import write_params

    params = write_params(tmp_path, tiny_corpus)
    for stage in ("faces", "audio", "labels", "embed"):
        result = runner.invoke(app, [stage, "--params", str(params)])
        assert result.exit_code == 0, result.output
        assert "4 written" in result.output and f"{stage} ->" in result.output
    for cache in ("embeddings", "labels"):
        result = runner.invoke(app, ["cache", "verify", str(tmp_path / "cache" / cache), "--params", str(params)])
        assert result.exit_code == 0, result.output
    again = runner.invoke(app, ["labels", "--params", str(params)])
    assert again.exit_code == 0 and "0 written, 4 already cached" in again.output


def test_labels_without_faces_reports_every_entry_skipped(tiny_corpus, tmp_path):
    from .stage1.helpers import write_params

    params = write_params(tmp_path, tiny_corpus, labels={"on_error": "fail"})
    result = runner.invoke(app, ["labels", "--params", str(params)])
    assert result.exit_code == 2 and "missing; run `jmt faces` first" in result.output
    assert "Traceback" not in result.output


def test_help_lists_stage1_commands():
    result = runner.invoke(app, ["--help"])
    for name in ("demo", "faces", "audio", "labels", "embed", "cache"):
        assert f" {name} " in result.output
    assert "Read every entry's annotations, per task" in result.output
    labels = runner.invoke(app, ["labels", "--help"])
    assert labels.exit_code == 0 and "--params" in labels.output
