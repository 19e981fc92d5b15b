"""dvc.yaml stays true to the code: every stage runs a real `jmt` command, reads params keys
that exist, and the compare stage lists exactly the keys its runs depend on."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.cli import app
from pipeline.config import ModelParams, TrainParams

from .conftest import REPO

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def test_pipeline_runs_from_the_demo_corpus_to_the_report():
    assert list(STAGES) == ["demo", "faces", "audio", "labels", "embed", "train", "evaluate", "compare", "report",
                            "compare_tasks", "report_tasks", "tune", "compare_tuned", "ensemble_tuned", "report_tuned"]
    commands = {c.name for c in app.registered_commands}
    for name, stage in STAGES.items():
        words = stage["cmd"].split()
        assert words[0] == "jmt" and words[1] in commands, name
        assert stage.get("desc"), name


def _outs(stage):
    return [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])]


def _inside(path: str, folders: set[str]) -> bool:
    """The path is one of the folders or lies inside one (data/demo/videos inside data/demo)."""
    return any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders)


def test_each_stage_depends_on_what_the_previous_ones_write():
    written = set()
    for name, stage in STAGES.items():
        data_deps = [d for d in stage.get("deps", []) if not d.startswith("pipeline")]
        assert all(_inside(d, written) for d in data_deps), (name, data_deps, written)
        written |= set(_outs(stage)) | {next(iter(m)) for m in stage.get("metrics", [])}
    assert _inside("data/demo/videos", {"data/demo"}) and not _inside("data/demo2", {"data/demo"})


def test_every_code_dependency_exists():
    for name, stage in STAGES.items():
        for dep in stage.get("deps", []):
            if dep.startswith("pipeline"):
                assert (REPO / dep).exists(), f"{name}: dependency {dep} does not exist"


# Code a stage's command imports but leaves out of its deps on purpose (with what only it
# imports), and why.
NOT_DEPS = {
    "faces": {"pipeline.tasks": "the corpus names each entry's task folders; a task's code never changes a face "
                                "crop, and annotations reach the labels stage alone (test below)"},
    "audio": {"pipeline.tasks": "as for faces: a task's code never changes a spectrogram"},
}


def _command_module(stage: dict) -> str:
    """The module of the `jmt` command a stage runs (`jmt compare --params x` -> its command's module)."""
    commands = {c.name: c.callback for c in app.registered_commands}
    return commands[stage["cmd"].split()[1]].__module__


def _collapsed(files: set[str]) -> set[str]:
    """Files under pipeline/ written as DVC deps: a folder when every .py file under it is in
    `files` (the outermost such folder), else the file."""
    out = set()
    for f in files:
        parts = Path(f).parts
        folders = [Path(*parts[:i]) for i in range(2, len(parts))]   # below pipeline/, outermost first
        whole = [d for d in folders if all(str(p.relative_to(REPO)) in files for p in (REPO / d).rglob("*.py"))]
        out.add(str(whole[0]) if whole else f)
    return out


def derived_code_deps(name: str) -> set[str]:
    """The code deps a stage must list: every `pipeline` module its command imports, at any
    depth, as Python runs it (pipeline.imports.closure: parent packages, registries' members), less the modules no output
    depends on (compare/runs.NOT_NUMERIC: the params loader, printing, errors, where a step
    executes) and the stage's NOT_DEPS."""
    from pipeline.imports import closure, module_file
    from pipeline.stage2.compare.runs import NOT_NUMERIC

    modules = closure([_command_module(STAGES[name])], skip={*NOT_NUMERIC, *NOT_DEPS.get(name, {})}, as_imported=True)
    return _collapsed({str(module_file(m).relative_to(REPO)) for m in modules})


def _code_deps(stage: dict) -> set[str]:
    return {d for d in stage.get("deps", []) if d.startswith("pipeline")}


@pytest.mark.parametrize("name", list(STAGES))
def test_a_stages_code_deps_are_exactly_the_code_its_command_imports(name):
    """dvc.yaml's code deps cannot drift from the code: a module a stage imports and does not list
    (an edit DVC would not see: `dvc status` "up to date" over a stale output) fails, and so does
    a listed file or folder the stage does not run (an edit that reruns it for nothing: inference
    code under a comparison stage)."""
    listed, derived = _code_deps(STAGES[name]), derived_code_deps(name)
    assert not derived - listed, f"{name}: imports code its deps do not list: {sorted(derived - listed)}"
    assert not listed - derived, f"{name}: lists code it does not run: {sorted(listed - derived)}"


def test_the_comparison_stages_do_not_depend_on_inference_code():
    for name in ("compare", "compare_tasks", "tune", "compare_tuned"):
        assert not any(_inside(d, {"pipeline/infer"}) for d in derived_code_deps(name)), name


@pytest.mark.parametrize("name", ["compare", "compare_tasks", "tune", "compare_tuned"])
def test_a_comparison_stage_depends_on_the_code_of_every_run_it_can_make(name):
    """Every file a run's key fingerprints (found from the imports, any head, any task) is inside
    one of the stage's code deps: an edit that retrains runs also makes DVC rerun the stage."""
    from pipeline.stage2.compare.runs import code_files
    from pipeline.stage2.heads import HEADS
    from pipeline.tasks import TASKS

    deps = [REPO / d for d in STAGES[name]["deps"] if d.startswith("pipeline")]
    for head in HEADS.names():
        for path in code_files(head, TASKS.names()):
            assert any(path == d or path.is_relative_to(d) for d in deps), (name, head, path)


def test_annotations_reach_the_labels_stage_alone():
    """Editing an annotation (or the label tolerance) reruns `labels` and what reads its cache,
    never faces, audio or embed: those read the videos, and params keys that are theirs."""
    for name in ("faces", "audio"):
        deps = STAGES[name]["deps"]
        assert "data/demo/videos" in deps and "data/demo" not in deps and "data/demo/annotations" not in deps
        assert "pipeline/tasks" not in deps
        assert {"corpus.root", "corpus.layout", "corpus.manifest", name} == set(STAGES[name]["params"])
    assert "data/cache/labels" not in STAGES["embed"]["deps"] and STAGES["embed"]["params"] == ["embed"]
    labels = STAGES["labels"]
    assert {"data/demo/annotations", "data/cache/faces", "pipeline/stage1/labels.py", "pipeline/tasks"} <= \
        set(labels["deps"])
    assert set(labels["params"]) == {"corpus", "labels"} and _outs(labels) == [PARAMS["labels"]["out"]]
    for name in ("train", "evaluate", "compare", "report"):
        assert "data/cache/labels" in STAGES[name]["deps"] and "data/cache/embeddings" in STAGES[name]["deps"]


def _params_of(stage) -> dict[str, set[str]]:
    """params file -> the keys a stage lists from it (plain entries: params.yaml)."""
    out: dict[str, set[str]] = {"params.yaml": set()}
    for entry in stage.get("params", []):
        if isinstance(entry, dict):
            for file, keys in entry.items():
                out.setdefault(file, set()).update(keys)
        else:
            out["params.yaml"].add(entry)
    return out


def test_listed_params_exist():
    for name, stage in STAGES.items():
        for file, keys in _params_of(stage).items():
            # a variant file (`base: params.yaml`) holds its keys over params.yaml's
            data = yaml.safe_load((REPO / file).read_text())
            layered = {**PARAMS, **data} if data.get("base") == "params.yaml" else data
            for key in keys:
                node = layered if file != "params.yaml" else PARAMS
                for part in key.split("."):
                    assert part in node, f"{name}: params key {key} not in {file}"
                    node = node[part]


RUN_KEYS = ({f"model.{k}" for k in ModelParams.model_fields} - {"model.fusion"}) | (
    {f"train.{k}" for k in TrainParams.model_fields} - {"train.seed", "train.out", "train.live_dir", "train.preload_max_mb"})


def test_compare_depends_on_every_key_its_runs_hash_except_fusion_and_seed():
    assert {"train.tasks", "train.task_weights"} <= RUN_KEYS and "model.standardize" in RUN_KEYS
    assert _params_of(STAGES["compare"]) == {"params.yaml": RUN_KEYS | {"tasks", "compare", "run.compare.cpus"}}
    assert "tasks" in STAGES["train"]["params"] and "tasks" in STAGES["evaluate"]["params"]


@pytest.mark.parametrize("name", [n for n, s in STAGES.items() if s["cmd"].startswith("jmt compare --params")])
def test_a_variants_compare_depends_on_the_same_keys_from_wherever_they_come(name):
    """A compare on a variant file (`base: params.yaml`): each key its runs depend on is listed,
    from the variant where it sets the key, from params.yaml where it does not."""
    variant = STAGES[name]["cmd"].split("--params")[1].split()[0]
    data = yaml.safe_load((REPO / variant).read_text())
    assert data["base"] == "params.yaml"

    def set_there(key):
        node = data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    listed = _params_of(STAGES[name])
    assert set(listed) == {"params.yaml", variant}
    wanted = RUN_KEYS | {"tasks", "compare", "run.compare.cpus"}
    for key in wanted:
        assert key in listed["params.yaml"] or (key in listed[variant] and set_there(key)), key
    assert {key for key in wanted if set_there(key)} <= listed[variant]
    assert listed["params.yaml"] | listed[variant] <= wanted


def test_compare_runs_persist_and_metrics_are_declared():
    compare = STAGES["compare"]
    runs = next(o for o in compare["outs"] if isinstance(o, dict) and "runs/compare" in o)
    assert runs["runs/compare"]["persist"] is True
    assert [next(iter(m)) for m in compare["metrics"]] == [PARAMS["compare"]["metrics"]]
    assert next(iter(STAGES["report"]["plots"][0])) == f"{PARAMS['report']['out']}/figures"


def dvc_executable() -> str:
    """dvc from this interpreter's environment (`make setup` installs it in the venv), which
    need not be on PATH (`.venv/bin/python -m pytest`); PATH only as a fallback."""
    here = Path(sys.executable).parent / "dvc"
    found = str(here) if here.is_file() else shutil.which("dvc")
    assert found, f"dvc is not installed next to {sys.executable} nor on PATH: run `make setup`"
    return found


def test_dvc_parses_the_pipeline():
    proc = subprocess.run([dvc_executable(), "stage", "list"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[0] for line in proc.stdout.splitlines() if line.strip()] == list(STAGES)


def test_the_search_depends_on_every_key_its_trials_start_from():
    """`tune` reruns when a key every trial's configuration starts from changes (the keys the
    space does not search reach every trial as they are), and when the search's own keys do."""
    listed = _params_of(STAGES["tune"])
    assert listed == {"params.yaml": RUN_KEYS | {"tasks", "run.compare.cpus"},
                      "params-tune.yaml": {"tune", "compare.heads"}}
    assert "metrics/tune.json" in STAGES["compare_tuned"]["deps"]
