"""dvc.yaml stays true to the code: every stage runs a real `jmt` command, reads params keys
that exist, and the compare stage lists exactly the keys its runs depend on."""

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.cli import app
from pipeline.config import ModelParams, TrainParams

from .conftest import REPO

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def test_pipeline_runs_from_the_demo_corpus_to_the_report():
    assert list(STAGES) == ["demo", "faces", "audio", "embed", "train", "evaluate", "compare", "report"]
    commands = {c.name for c in app.registered_commands}
    for name, stage in STAGES.items():
        words = stage["cmd"].split()
        assert words[0] == "jmt" and words[1] in commands, name
        assert stage.get("desc"), name


def _outs(stage):
    return [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])]


def test_each_stage_depends_on_what_the_previous_ones_write():
    written = set()
    for name, stage in STAGES.items():
        data_deps = [d for d in stage.get("deps", []) if not d.startswith("pipeline")]
        assert all(d in written for d in data_deps), (name, data_deps, written)
        written |= set(_outs(stage)) | {next(iter(m)) for m in stage.get("metrics", [])}


def test_listed_params_exist():
    for name, stage in STAGES.items():
        for key in stage.get("params", []):
            node = PARAMS
            for part in key.split("."):
                assert part in node, f"{name}: params key {key} not in params.yaml"
                node = node[part]


def test_compare_depends_on_every_key_its_runs_hash_except_fusion_and_seed():
    listed = set(STAGES["compare"]["params"])
    model = {f"model.{k}" for k in ModelParams.model_fields} - {"model.fusion"}
    train = {f"train.{k}" for k in TrainParams.model_fields} - {
        "train.seed", "train.out", "train.live_dir", "train.preload_max_mb"}
    evaluate = {"evaluate.clip", "evaluate.smooth_valence", "evaluate.smooth_arousal"}
    assert listed == model | train | evaluate | {"compare", "run.compare.cpus"}


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
