"""`jmt report` and `jmt readme` on real (tiny) comparisons: the figures per task (availability per
task; with expr the confusion matrix, with au the per-AU F1 bars), index.md linking every figure,
the numbers the figures are drawn from, and README results blocks, one per comparison."""

import json
import re
import shutil

import numpy as np
import pytest
from matplotlib import image
from sklearn.metrics import confusion_matrix
from typer.testing import CliRunner

from pipeline import cache, report
from pipeline.cli import app
from pipeline.errors import InputError
from pipeline.report import (README_END, README_START, build_report, headline, headline_markers, load_comparison, markers,
                             readme_section, update_headline, update_readme)
from pipeline.stage2.compare import folder_name, load_predictions, markdown
from pipeline.tasks.au import AUS

from .conftest import REPO
from .stage2.multitask import PLAN, compared_tasks


def _figures_linked(index, figures):
    names = sorted(p.name for p in figures.glob("*.png"))
    for name in names:
        pixels = image.imread(figures / name)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels[..., :3].std() > 0.05, name
    linked = re.findall(r"!\[[^]]*\]\(([^)]+)\)", index.read_text())
    assert sorted(linked) == sorted(f"figures/{n}" for n in names)   # every figure, once
    return names


def test_report_draws_every_figure_and_links_them(compared):
    params, _ = compared
    figures = params.path(params.report.out) / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    (figures / "stale.png").write_bytes(b"old")
    index = build_report(params)
    names = _figures_linked(index, figures)
    curves = [n for n in names if n.startswith("curves_")]
    assert curves == ["curves_demo_01.png"] and params.report.videos == 1
    assert set(names) - set(curves) == {"training.png", "comparison.png", "paired.png", "va_scatter.png",
                                        "availability_va.png"}
    text = index.read_text()
    assert "Paired difference from `jmt`" in text and "Seeds 0, 1" in text and markdown(load_comparison(params)) in text


@pytest.fixture(scope="module")
def tasks_report(tmp_path_factory):
    """The multi-task comparison's report, drawn into a folder of its own, with the matrix and
    the F1s its expr and au figures were drawn from."""
    params, result = compared_tasks(tmp_path_factory)
    params = params.updated(report={"out": str(tmp_path_factory.mktemp("tasks_report"))})
    drawn = {}
    with pytest.MonkeyPatch.context() as mp:
        for name in ("plot_confusion", "plot_au_f1", "plot_va_scatter"):
            original = getattr(report, name)

            def spy(*args, _name=name, _original=original, **kwargs):
                drawn[_name] = args
                return _original(*args, **kwargs)
            mp.setattr(report, name, spy)
        index = build_report(params)
    return params, result, index, drawn


def members(split, task):
    return sorted(n for n, s in PLAN.items() if s.get(task) == split)


def test_a_multi_task_report_draws_figures_per_task_and_links_them(tasks_report):
    params, result, index, _ = tasks_report
    names = _figures_linked(index, params.path(params.report.out) / "figures")
    assert set(names) == {"training.png", "comparison.png", "paired.png", "va_scatter.png", "expr_confusion.png",
                          "au_f1.png", "curves_mixed.png", *(f"availability_{t}.png" for t in ("va", "expr", "au"))}
    text = index.read_text()
    for task in ("va", "expr", "au"):
        assert f"**By stream availability, {task}, validation**" in text
    assert "Highest validation score" in text


def _cached(params, name, task):
    with cache.open_entry(cache.entry_path(params.path(params.labels.out), name)) as f:
        return f[cache.label_key(task)][...]


def test_the_confusion_matrix_counts_the_references_validation_frames_of_expr(tasks_report):
    """Rows: the true class of expr's validation frames (valid ones); columns: the reference
    head's (first seed) most probable class. An entry in the validation union for another task
    only (`mixed`: va) adds nothing, though its labels file holds expr labels (of training)."""
    params, result, _, drawn = tasks_report
    matrix = drawn["plot_confusion"][1]
    preds = load_predictions(params.path(params.compare.runs) / folder_name(result["reference"], result["seeds"][0]))
    y, p = [], []
    for name in members("validation", "expr"):
        labels = _cached(params, name, "expr")[:, 0]
        keep = labels >= 0
        y.append(labels[keep])
        p.append(preds["validation", "full"][name]["expr"][keep].argmax(1))
    expected = confusion_matrix(np.concatenate(y), np.concatenate(p), labels=range(8))
    assert matrix.sum() == len(members("validation", "expr")) * 55
    np.testing.assert_array_equal(matrix, expected)


def test_the_va_scatter_holds_vas_validation_frames_only(tasks_report):
    params, result, _, drawn = tasks_report
    truth, predicted = drawn["plot_va_scatter"][1:3]
    assert sorted(truth) == sorted(predicted) == members("validation", "va")   # not mixed2 (va: training)
    for name, xy in truth.items():
        labels = _cached(params, name, "va")
        np.testing.assert_array_equal(xy, labels[(labels != -5).all(1)])
        assert predicted[name].shape == xy.shape


def test_the_au_bars_are_each_aus_validation_f1_averaged_over_seeds(tasks_report):
    _, result, _, drawn = tasks_report
    per_head = drawn["plot_au_f1"][1]
    assert list(per_head) == sorted(result["heads"],
                                    key=lambda h: -result["results"][h]["validation"]["score"]["full"]["score"]["mean"])
    for head, f1 in per_head.items():
        runs = [r for r in result["runs"] if r["head"] == head]
        np.testing.assert_allclose(f1, [np.mean([r["validation"]["full"]["au"][f"f1_{a}"] for r in runs]) for a in AUS])


def test_report_needs_a_comparison_and_its_runs(compared, tmp_path):
    params, _ = compared
    with pytest.raises(InputError, match="no comparison yet; run `jmt compare`"):
        load_comparison(params.updated(compare={"metrics": str(tmp_path / "none.json")}))
    runs = tmp_path / "runs"
    shutil.copytree(params.path(params.compare.runs), runs)
    shutil.rmtree(runs / "only_audio-seed1")
    moved = params.updated(compare={"runs": str(runs)}, report={"out": str(tmp_path / "reports")})
    with pytest.raises(InputError, match=r"only_audio-seed1: run missing; run `jmt compare` again"):
        build_report(moved)


def test_readme_block_is_rewritten_only_between_the_markers(compared, tmp_path):
    _, result = compared
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n\n{README_START}\nold numbers\n{README_END}\n\nafter\n")
    assert markers("metrics/compare.json") == (README_START, README_END)
    assert update_readme(readme, result, check=True) and "old numbers" in readme.read_text()
    assert update_readme(readme, result)
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert readme_section(result) in text and "old numbers" not in text
    assert not update_readme(readme, result)
    readme.write_text("no markers")
    with pytest.raises(InputError, match="no results markers"):
        update_readme(readme, result)


def test_readme_section_links_the_reports_figures_or_none(compared, tmp_path_factory):
    _, result = compared
    _, tasks = compared_tasks(tmp_path_factory)
    section = readme_section(tasks, "metrics/compare-tasks.json", "reports/tasks")
    start, end = markers("metrics/compare-tasks.json")
    assert section.startswith(start + "\n") and section.endswith("\n" + end)
    assert start != README_START and end == "<!-- /results metrics/compare-tasks.json -->"
    assert markdown(tasks).rstrip() in section
    for figure in ("comparison.png", *(f"availability_{t}.png" for t in ("va", "expr", "au"))):
        assert f"(reports/tasks/figures/{figure})" in section
    assert "[reports/tasks/index.md](reports/tasks/index.md)" in section
    bare = readme_section(result, "metrics/compare.json", None)
    assert "figures/" not in bare and "index.md" not in bare and "availability_va" not in bare


def test_one_readme_holds_a_block_per_comparison(compared, tmp_path_factory, tmp_path):
    """Updating one comparison's block leaves the other's as it was."""
    _, result = compared
    _, tasks = compared_tasks(tmp_path_factory)
    start, end = markers("metrics/compare-tasks.json")
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{README_START}\nold va\n{README_END}\n\nbetween\n\n"
                      f"{start}\nold tasks\n{end}\n\nend\n")
    assert update_readme(readme, tasks, source="metrics/compare-tasks.json", report="reports/tasks")
    text = readme.read_text()
    assert f"{README_START}\nold va\n{README_END}" in text and "old tasks" not in text
    assert readme_section(tasks, "metrics/compare-tasks.json", "reports/tasks") in text
    assert update_readme(readme, result)
    text = readme.read_text()
    assert "old va" not in text and readme_section(result) in text
    assert readme_section(tasks, "metrics/compare-tasks.json", "reports/tasks") in text
    assert text.startswith("# title\n\n") and "\n\nbetween\n\n" in text and text.endswith("\n\nend\n")
    assert not update_readme(readme, tasks, source="metrics/compare-tasks.json", report="reports/tasks", check=True)
    with pytest.raises(InputError, match="no results markers"):
        update_readme(readme, tasks, source="metrics/compare-3streams.json")


def test_readme_check_command_fails_when_out_of_date(compared, tmp_path):
    params, _ = compared
    metrics = params.path(params.compare.metrics)
    readme = tmp_path / "README.md"
    start, end = markers(str(metrics))   # compare.metrics outside the README's folder: its absolute path
    readme.write_text(f"{start}\nstale\n{end}\n")
    import yaml

    data = yaml.safe_load((params.root / "params.yaml").read_text())
    data["compare"] = {"metrics": str(metrics)}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    args = ["readme", "--params", str(tmp_path / "params.yaml"), "--readme", str(readme)]
    runner = CliRunner()
    assert runner.invoke(app, [*args, "--check"]).exit_code == 1
    assert runner.invoke(app, args).exit_code == 0 and "stale" not in readme.read_text()
    ok = runner.invoke(app, [*args, "--check"])
    assert ok.exit_code == 0 and "up to date" in ok.output


def test_repository_results_come_from_the_committed_comparisons():
    """Each results block of docs/results.md holds its comparison's tables, and README's headline
    table the three-task comparison's (regenerate with `jmt readme`): the default one, and every
    other the page has a block for."""
    text = (REPO / "docs/results.md").read_text()
    sources = re.findall(r"<!-- results: generated by `jmt readme` from (\S+); edit there, not here -->", text)
    assert "../metrics/compare.json" in sources
    for source in sources:
        path = (REPO / "docs" / source).resolve()
        assert path.is_file(), f"docs/results.md has a results block for {source}, which does not exist"
        result = json.loads(path.read_text())
        assert "tasks" in result and "rerun_margin" in result, \
            f"{source} was written by an older `jmt compare`: run `dvc repro compare` and `jmt readme`"
        start, end = markers(source)
        block = text.split(start)[1].split(end)[0]
        assert markdown(result).rstrip() in block, f"docs/results.md results of {source} are stale: run `jmt readme`"
        ref = result["results"][result["reference"]]["validation"]
        assert all(np.isfinite(ref[t]["full"][result["main_metric"][t]]["mean"]) for t in result["tasks"])
    readme = (REPO / "README.md").read_text()
    tasks = json.loads((REPO / "metrics/compare-tasks.json").read_text())
    assert headline(tasks, "metrics/compare-tasks.json") in readme, "README's headline is stale: run `jmt readme`"
    assert len(readme.splitlines()) < 200   # README is the front door; generated tables live in docs/


def test_headline_is_one_row_per_head_sorted_by_validation(compared, tmp_path):
    _, result = compared
    block = headline(result, "m.json")
    rows = [line for line in block.splitlines() if line.startswith("| `") or line.startswith("| **")]
    assert len(rows) == len(result["heads"])
    readme = tmp_path / "README.md"
    readme.write_text("no headline here")
    assert update_headline(readme, result, source="m.json") is None
    start, end = headline_markers("m.json")
    readme.write_text(f"a\n{start}\nold\n{end}\nb")
    assert update_headline(readme, result, source="m.json", check=True)
    assert update_headline(readme, result, source="m.json") and block in readme.read_text()
    assert not update_headline(readme, result, source="m.json")
