"""The run store of `jmt compare` (pipeline/stage2/compare/runs.py): each run's code found from
its imports (its own head and tasks, never the others'), a new head file that leaves every
other run reused, and `jmt compare --gc`."""

import importlib
import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.stage2.compare import collect_garbage, run_compare
from pipeline.stage2.compare.runs import NOT_NUMERIC, code_files, files_fingerprint
from pipeline.stage2.heads import HEADS

from .test_compare import HEADS as COMPARED, compare_params

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/stage2/conftest.py

PACKAGE = Path(__file__).resolve().parents[2] / "pipeline"
PROBE = "probe_added_by_tests"   # a head file a test adds, then removes


@pytest.fixture
def tree(tmp_path):
    """A copy of the `pipeline` package to edit; returns (root holding it, fingerprint(head, tasks))."""
    shutil.copytree(PACKAGE, tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))

    def fingerprint(head, tasks=("va",)):
        return files_fingerprint(code_files(head, tasks, root=tmp_path), tmp_path)
    return tmp_path, fingerprint


def _edit(path: Path) -> None:
    path.write_text(path.read_text() + "\n# an edit\n")


def test_a_run_executes_its_own_head_and_tasks_and_the_shared_stage2_code():
    names = {str(p.relative_to(PACKAGE.parent)) for p in code_files("jca", ["va", "expr"])}
    shared = {"pipeline/stage2/compare/execute.py", "pipeline/stage2/train.py", "pipeline/stage2/data.py",
              "pipeline/stage2/layers.py", "pipeline/stage2/protocol.py", "pipeline/stage2/windows.py",
              "pipeline/stage2/heads/__init__.py", "pipeline/tasks/__init__.py", "pipeline/metrics.py"}
    assert shared <= names
    assert {"pipeline/stage2/heads/jca.py", "pipeline/tasks/va.py", "pipeline/tasks/expr.py"} <= names
    others = {f"pipeline/stage2/heads/{m.__module__.rpartition('.')[2]}.py" for m in map(HEADS.get, HEADS.names())}
    assert names & others == {"pipeline/stage2/heads/jca.py"}
    assert "pipeline/tasks/au.py" not in names
    assert not names & {"pipeline/stage2/compare/runs.py", "pipeline/stage2/compare/tables.py", "pipeline/report.py"}
    assert not names & {m.replace(".", "/") + ".py" for m in NOT_NUMERIC}
    # a head that imports another head's module runs that code too
    assert "pipeline/stage2/heads/jca.py" in {str(p.relative_to(PACKAGE.parent)) for p in code_files("rjca", ["va"])}


def test_a_runs_code_fingerprint_follows_the_files_it_imports(tree):
    root, fingerprint = tree
    heads = ["concat", "jca", "rjca", "only:audio"]
    before = {h: fingerprint(h) for h in heads}
    (root / "pipeline/stage2/heads" / f"{PROBE}.py").write_text(
        (root / "pipeline/stage2/heads/concat.py").read_text().replace('"concat"', f'"{PROBE}"'))
    assert {h: fingerprint(h) for h in heads} == before          # a new head file: no run changes
    _edit(root / "pipeline/stage2/compare/tables.py")
    _edit(root / "pipeline/config.py")                            # NOT_NUMERIC
    assert {h: fingerprint(h) for h in heads} == before
    _edit(root / "pipeline/stage2/heads/jca.py")                  # jca's file: jca and rjca (which imports it)
    now = {h: fingerprint(h) for h in heads}
    assert [h for h in heads if now[h] != before[h]] == ["jca", "rjca"]
    va_only, with_expr = fingerprint("concat"), fingerprint("concat", ("va", "expr"))
    _edit(root / "pipeline/tasks/expr.py")
    assert fingerprint("concat") == va_only and fingerprint("concat", ("va", "expr")) != with_expr
    _edit(root / "pipeline/stage2/layers.py")                     # shared code: every run
    assert all(fingerprint(h) != now[h] for h in heads)


def test_adding_a_head_file_leaves_every_other_run_reused(tiny_cache, tmp_path, compared):
    """A real new file in pipeline/stage2/heads/ (removed afterwards): the comparison grown by that
    head trains its two runs and reuses the six others."""
    params, first = compared
    shutil.copytree(params.path(params.compare.runs), tmp_path / "runs")
    path = PACKAGE / "stage2/heads" / f"{PROBE}.py"
    path.write_text((PACKAGE / "stage2/heads/concat.py").read_text()
                    .replace('"concat"', f'"{PROBE}"').replace("class Concat", "class Probe"))
    try:
        importlib.import_module(f"pipeline.stage2.heads.{PROBE}")
        result = run_compare(compare_params(tiny_cache, tmp_path).updated(compare={"heads": [*COMPARED, PROBE]}))
    finally:
        path.unlink()
        HEADS._items.pop(PROBE, None)
        sys.modules.pop(f"pipeline.stage2.heads.{PROBE}", None)
    assert [(r["head"], r["reused"]) for r in result["runs"]] == \
        [(h, True) for h in COMPARED for _ in (0, 1)] + [(PROBE, False)] * 2
    assert [r["key"] for r in result["runs"][:6]] == [r["key"] for r in first["runs"]]


def test_gc_removes_the_runs_no_params_file_names(tiny_cache, tmp_path, compared):
    params, first = compared
    runs = tmp_path / "runs"
    shutil.copytree(params.path(params.compare.runs), runs)
    full = compare_params(tiny_cache, tmp_path)
    some = full.updated(compare={"heads": ["jmt"], "seeds": [1]})
    old = runs / "concat-seed0"            # a folder of the layout before content keys
    shutil.copytree(runs / first["runs"][2]["folder"], old)
    (old / "run.json").write_text(json.dumps({**json.loads((old / "run.json").read_text()), "key": "0" * 64}))
    (runs / ".jmt-seed5-0123456789ab.tmp").mkdir()        # left by a killed run
    (runs / "notes.txt").write_text("not a run")
    assert [f.name for f, _ in collect_garbage(some, [full], dry_run=True)] == [".jmt-seed5-0123456789ab.tmp",
                                                                              "concat-seed0"]
    assert len(list(runs.iterdir())) == 6 + 3                           # a dry run removes nothing
    kept = next(r["folder"] for r in first["runs"] if (r["head"], r["seed"]) == ("jmt", 1))
    some_file = tmp_path / "some.yaml"
    import yaml
    data = yaml.safe_load((full.root / "params.yaml").read_text())
    data["compare"] = {**data["compare"], "heads": ["jmt"], "seeds": [1]}
    some_file.write_text(yaml.safe_dump(data))
    out = CliRunner().invoke(app, ["compare", "--gc", "--params", str(some_file)])
    assert out.exit_code == 0, out.output
    assert sorted(p.name for p in runs.iterdir()) == [kept, "notes.txt"]
    assert "7 run folder(s)" in out.output


@pytest.mark.parametrize("name", ["..", "../elsewhere", "a/b", "", "/abs"])
def test_a_run_folder_read_from_compare_json_must_be_a_plain_name(compared, name):
    from pipeline.errors import InputError
    from pipeline.stage2.compare import run_folder

    params, result = compared
    rows = [{**r, "folder": name} if r["head"] == "jmt" and r["seed"] == 0 else r for r in result["runs"]]
    with pytest.raises(InputError, match="is not a folder name inside compare.runs"):
        run_folder(params, {**result, "runs": rows}, "jmt", 0)
    assert run_folder(params, result, "jmt", 0).parent == params.path(params.compare.runs)
