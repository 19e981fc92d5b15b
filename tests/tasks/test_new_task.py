"""Adding a task is one new file: a copy of the package with one file dropped into
pipeline/tasks/ (and nothing else edited) has the task in the registry, in the params
(`tasks.<name>` options, `train.tasks`), in the Aff-Wild2 adapter (its folder), in the heads
(its output width), in the training objective, and shown by its own words and names (predict's
plot, the comparison tables' heading)."""

import shutil
import subprocess
import sys
import textwrap

from ..conftest import REPO

NEW_TASK = '''
"""`arousal_only`: a toy task for the test, arousal alone from its own folder."""

from dataclasses import dataclass

import numpy as np

from pipeline.metrics import ccc, ccc_from_sums, ccc_sums, ccc_torch
from pipeline.tasks import TASKS, Task, TaskOptions


@dataclass(frozen=True)
class ArousalOptions(TaskOptions):
    scale: float = 1.0


@TASKS.register("arousal_only")
class ArousalOnly(Task):
    name = "arousal_only"
    width = 1
    columns = ("arousal",)
    values = 1
    folders = ("Arousal_Challenge",)
    invalid = -5.0
    metric = "ccc"
    metrics = ("ccc",)
    outputs = ("arousal",)
    submission = ("arousal",)
    Options = ArousalOptions
    kind = "dimensional"
    title = "arousal"
    table_title = "Arousal (CCC)"
    names = ("arousal",)
    item = "axis"
    bounds = (-1.0, 1.0)
    panel_width = 124

    def parse_line(self, parts):
        return [float(parts[0])]

    def format_annotation(self, labels):
        return "arousal\\n" + "".join(f"{v:.4f}\\n" for v in np.asarray(labels).ravel())

    def loss(self, pred, labels, valid, state):
        m = valid.reshape(-1)
        return None if int(m.sum()) < 2 else 1 - ccc_torch(pred.reshape(-1)[m], labels.reshape(-1)[m])

    def sums(self, pred, labels):
        return ccc_sums(pred[:, 0], labels[:, 0])

    def from_sums(self, sums):
        return ccc_from_sums(sums)

    def from_sums_all(self, sums):
        return {"ccc": float(ccc_from_sums(sums))}

    def submission_rows(self, pred):
        return [f"{v:.4f}" for v in pred[:, 0]]
'''

CHECK = '''
import numpy as np, torch, yaml
from pathlib import Path
from pipeline.config import parse_params
from pipeline.corpus.entries import affwild2
from pipeline.stage2.heads import build_head
from pipeline.stage2.train import Objective
from pipeline.tasks import TASKS, tasks_of

assert "arousal_only" in TASKS.names(), TASKS.names()
data = yaml.safe_load(open(REPO_PARAMS))
data["train"]["tasks"] = ["va", "arousal_only"]
data["tasks"]["arousal_only"] = {"scale": 2.0}
params = parse_params(data, source="p")
assert params.tasks.arousal_only.scale == 2.0
tasks = tasks_of(params.train.tasks, params.tasks)
assert tasks["arousal_only"].options.scale == 2.0

root = Path(CORPUS)
(root / "videos").mkdir(parents=True)
(root / "videos/x.mp4").write_bytes(b"x")
tasks["arousal_only"].write_annotation(root / "annotations/Arousal_Challenge/Train_Set/x.txt", np.zeros((3, 1)))
corpus = affwild2(root)
assert [(e.name, e.split("arousal_only")) for e in corpus.entries] == [("x", "train")], corpus.entries

head = build_head("concat", streams={"a": 3, "b": 2}, tasks=params.train.tasks, d_model=8, temporal="identity")
x = {"a": torch.randn(2, 5, 3), "b": torch.randn(2, 5, 2)}
m = {k: torch.ones(2, 5, dtype=torch.bool) for k in x}
out = head(x, m)
assert out["arousal_only"].shape == (2, 5, 1) and out["va"].shape == (2, 5, 2)
batch = {"labels": {"va": torch.rand(2, 5, 2), "arousal_only": torch.rand(2, 5, 1)},
         "valid": {"va": torch.ones(2, 5, dtype=torch.bool), "arousal_only": torch.ones(2, 5, dtype=torch.bool)}}
loss = Objective(tasks).loss(out, batch)
assert torch.isfinite(loss)
loss.backward()

from pipeline.infer.predict import plot
from pipeline.stage2.compare.tables import title
plot(root / "plot.png", np.arange(4) / 25, tasks, {t: np.zeros((4, tasks[t].width)) for t in tasks},
     {"a": np.ones(4, bool)}, "toy")
assert (root / "plot.png").stat().st_size > 1000 and title("arousal_only") == "Arousal (CCC)"
print("OK")
'''


def test_a_task_is_one_new_file(tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(REPO / "pipeline", pkg / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "pipeline/tasks/arousal_only.py").write_text(textwrap.dedent(NEW_TASK))
    code = f"REPO_PARAMS = {str(REPO / 'params.yaml')!r}\nCORPUS = {str(tmp_path / 'corpus')!r}\n" + CHECK
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(pkg), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]
    assert not (REPO / "pipeline/tasks/arousal_only.py").exists()   # the repository's package is untouched
