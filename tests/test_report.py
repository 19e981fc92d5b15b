"""`jmt report` and `jmt readme` on a real (tiny) comparison."""

import json
import re
import shutil

import numpy as np
import pytest
from matplotlib import image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import InputError
from pipeline.report import (README_END, README_START, build_report, load_comparison, readme_section,
                             update_readme)

from .conftest import REPO


def test_report_draws_every_figure_and_links_them(compared):
    params, _ = compared
    figures = params.path(params.report.out) / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    (figures / "stale.png").write_bytes(b"old")
    index = build_report(params)
    names = sorted(p.name for p in figures.glob("*.png"))
    curves = [n for n in names if n.startswith("curves_")]
    assert len(curves) == params.report.videos == 1
    assert set(names) - set(curves) == {"training.png", "comparison.png", "paired.png", "va_scatter.png",
                                            "availability.png"}
    for name in names:
        pixels = image.imread(figures / name)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels[..., :3].std() > 0.05, name
    text = index.read_text()
    linked = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert sorted(linked) == sorted(f"figures/{n}" for n in names)
    assert "Paired difference from `jmt`" in text and "Seeds 0, 1" in text


def test_report_needs_a_comparison_and_its_runs(compared, tmp_path):
    params, _ = compared
    missing = params.model_copy(update={"compare": params.compare.model_copy(
        update={"metrics": str(tmp_path / "none.json")})})
    missing._root = params.root
    with pytest.raises(InputError, match="no comparison yet; run `jmt compare`"):
        load_comparison(missing)
    runs = tmp_path / "runs"
    shutil.copytree(params.path(params.compare.runs), runs)
    shutil.rmtree(runs / "concat-seed1")
    moved = params.model_copy(update={
        "compare": params.compare.model_copy(update={"runs": str(runs)}),
        "report": params.report.model_copy(update={"out": str(tmp_path / "reports")})})
    moved._root = params.root
    with pytest.raises(InputError, match=r"concat-seed1: run missing; run `jmt compare` again"):
        build_report(moved)


def test_readme_block_is_rewritten_only_between_the_markers(compared, tmp_path):
    _, result = compared
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n\n{README_START}\nold numbers\n{README_END}\n\nafter\n")
    assert update_readme(readme, result, check=True) and "old numbers" in readme.read_text()
    assert update_readme(readme, result)
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert readme_section(result) in text and "old numbers" not in text
    assert not update_readme(readme, result)
    readme.write_text("no markers")
    with pytest.raises(InputError, match="no results markers"):
        update_readme(readme, result)


def test_readme_check_command_fails_when_out_of_date(compared, tmp_path):
    params, _ = compared
    readme = tmp_path / "README.md"
    readme.write_text(f"{README_START}\nstale\n{README_END}\n")
    import yaml

    data = yaml.safe_load((params.root / "params.yaml").read_text())
    data["compare"] = {"metrics": str(params.path(params.compare.metrics))}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    args = ["readme", "--params", str(tmp_path / "params.yaml"), "--readme", str(readme)]
    runner = CliRunner()
    assert runner.invoke(app, [*args, "--check"]).exit_code == 1
    assert runner.invoke(app, args).exit_code == 0
    ok = runner.invoke(app, [*args, "--check"])
    assert ok.exit_code == 0 and "up to date" in ok.output


def test_repository_readme_results_come_from_metrics_compare_json():
    """The README's numbers are the committed comparison's (regenerate with `jmt readme`)."""
    result = json.loads((REPO / "metrics/compare.json").read_text())
    text = (REPO / "README.md").read_text()
    assert readme_section(result) in text, "README.md results are stale: run `jmt readme`"
    assert np.isfinite(result["results"][result["reference"]]["validation"]["full"]["ccc_mean"]["mean"])
