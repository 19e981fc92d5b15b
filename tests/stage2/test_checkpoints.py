"""Checkpoints are files from others: loading one never runs code from it, and a bad one gets a
one-line error naming the file (pipeline/stage2/checkpoints.py)."""

import hashlib
import os

import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import JmtError
from pipeline.stage2 import checkpoints
from pipeline.stage2.evaluate import evaluate_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/stage2/conftest.py


class RunsAShellCommand:
    """What a crafted checkpoint holds: unpickling it calls os.system (pickle's __reduce__)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def crafted(tmp_path, trained):
    """A real checkpoint with one extra value that would run `touch MARKER` if unpickled."""
    ckpt = torch.load(trained.path(trained.train.out), weights_only=True)
    ckpt["extra"] = RunsAShellCommand(tmp_path / "MARKER")
    path = tmp_path / "crafted.pt"
    torch.save(ckpt, path)
    return path


def test_a_trained_checkpoint_is_plain_data_and_describes_its_streams_and_tasks(trained):
    path = trained.path(trained.train.out)
    contents = torch.load(path, weights_only=True)   # the file itself: plain data and tensors
    assert set(checkpoints.REQUIRED) <= set(contents)
    ckpt = checkpoints.read(path)                    # the file, typed
    assert ckpt.head == "jmt" and ckpt.head_kwargs == contents["head"]["kwargs"]
    assert list(ckpt.widths.items()) == [(s["name"], s["dim"]) for s in ckpt.streams]
    assert ckpt.tasks == ["va"] == list(ckpt.params.train.tasks)
    assert ckpt.window == ckpt.params.train.window == contents["params"]["train"]["window"]
    assert ckpt.streams == checkpoints.provenance(trained.path(trained.embed.out))["streams"]
    assert [s["name"] for s in ckpt.streams] == ["visual", "audio"]
    assert ckpt.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    model, loaded = checkpoints.load(path, trained.path(trained.embed.out))
    assert (model.streams, model.tasks) == (["visual", "audio"], ["va"]) and loaded.head == "jmt"
    assert all(torch.equal(v, contents["state_dict"][k]) for k, v in model.state_dict().items())


def test_a_checkpoint_without_recorded_streams_is_refused(trained, tmp_path):
    contents = torch.load(trained.path(trained.train.out), weights_only=True)
    del contents["cache"]["streams"]
    torch.save(contents, tmp_path / "old.pt")
    ckpt = checkpoints.read(tmp_path / "old.pt")
    assert ckpt.streams is None
    with pytest.raises(JmtError, match="old.pt: a checkpoint of an older jmt \\(no streams recorded\\); retrain it"):
        ckpt.check_cache(trained.path(trained.embed.out))


def test_a_checkpoint_without_recorded_tasks_has_those_of_the_head_it_builds(trained, tmp_path):
    contents = torch.load(trained.path(trained.train.out), weights_only=True)
    del contents["head"]["kwargs"]["tasks"]
    torch.save(contents, tmp_path / "untasked.pt")
    assert checkpoints.read(tmp_path / "untasked.pt").tasks == ["va"]   # the heads' default


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(crafted, trained, tiny_corpus, tmp_path):
    with pytest.raises(JmtError, match="refused: the file holds objects that would run code") as info:
        checkpoints.read(crafted)
    assert "\n" not in str(info.value) and str(crafted) in str(info.value)
    video = tiny_corpus / "videos/batch2/demo_02.mp4"
    result = CliRunner().invoke(app, ["predict", str(video), "--checkpoint", str(crafted), "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code == 2 and "refused" in result.output
    assert len(result.output.strip().splitlines()) == 1
    with pytest.raises(JmtError, match="refused"):
        evaluate_model(trained, checkpoint=crafted, write=False)
    assert not (tmp_path / "MARKER").exists()  # the command never ran
    assert not (tmp_path / "out").exists()      # nothing was done for the video either


@pytest.mark.parametrize(("content", "message"), [
    ({"state_dict": {}}, "missing head, params, cache"),
    ([1, 2, 3], "holds a list, not a dict"),
    ({"head": {"kwargs": {}}, "state_dict": {}, "params": {"train": {"window": 8}}, "cache": {}},
     "'head' lacks its name or kwargs"),
    ({"head": {"name": "jmt", "kwargs": {}}, "state_dict": {}, "params": {}, "cache": {}}, "params lack train.window"),
])
def test_a_malformed_checkpoint_gets_one_line_naming_file_and_gap(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    torch.save(content, path)
    with pytest.raises(JmtError, match=message) as info:
        checkpoints.read(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_junk_and_missing_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(JmtError, match="junk.pt: not a"):
        checkpoints.read(tmp_path / "junk.pt")
    with pytest.raises(JmtError, match="checkpoint not found"):
        checkpoints.read(tmp_path / "none.pt")


def test_cli_malformed_checkpoint_is_one_line(trained, tmp_path):
    torch.save({"head": {"name": "jmt"}}, tmp_path / "bad.pt")
    result = CliRunner().invoke(app, ["evaluate", "--params", str(trained.root / "params.yaml"),
                                      "--checkpoint", str(tmp_path / "bad.pt")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "bad.pt: not a jmt checkpoint: missing state_dict, params, cache" in result.output
