"""What `jmt tune` searches (pipeline/stage2/tune/space.py): the shared part, each head's
`SEARCH_SPACE` and the params' overrides, checked for every registered head; and why editing a
head's `SEARCH_SPACE` retrains nothing: it is left out of the runs' code fingerprint
(compare/runs.py `numeric_source`), while the committed comparisons' runs keep their keys."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import optuna
import pytest

from pipeline.errors import ParamsError
from pipeline.stage2.compare.runs import code_files, code_fingerprint, files_fingerprint
from pipeline.stage2.heads import HEADS, head_names
from pipeline.stage2.tune.space import (SHARED, check_space, configured, distribution, distributions, fixed,
                                        head_space, space_of)

from ..conftest import REPO

HEAD_FILES = sorted((REPO / "pipeline" / "stage2" / "heads").glob("*.py"))


def every_head() -> list[str]:
    """Every registered head, `only` as one unimodal head."""
    return head_names([*(n for n in HEADS.names() if n != "only"), "only:audio"], ["visual", "audio"])


# ------------------------------------------------------------------- the space

@pytest.mark.parametrize("head", every_head())
def test_every_heads_space_is_shared_then_its_own_part_and_loads(head, repo_params):
    own = head_space(head)
    space = space_of(head)
    assert list(space)[:len(SHARED)] == list(SHARED)
    assert space == {**SHARED, **own}
    for key, spec in space.items():
        assert spec == (own[key] if key in own else SHARED[key])
    check_space(repo_params, head, space)   # every key a params field, every bound and choice accepted
    assert set(distributions(space)) | set(fixed(space)) == set(space)
    module = __import__(HEADS.get(head.partition(":")[0]).__module__, fromlist=["x"])
    assert own == getattr(module, "SEARCH_SPACE", {})


def test_heads_own_parts():
    assert head_space("jmt")["model.aggregation"] == ["self_attention", "fc"]
    assert head_space("rjca") == {"model.iterations": [1, 2, 3]}
    assert head_space("only:visual") == head_space("only:audio") == {"train.modality_dropout": 0.0}
    assert head_space("concat") == {}
    assert fixed(space_of("only:audio")) == {"train.modality_dropout": 0.0}
    assert "train.modality_dropout" in distributions(space_of("concat"))


def test_overrides_win_over_the_head_and_the_shared_part(repo_params):
    over = {"model.heads": 2, "model.d_model": [8, 16], "train.lr": {"low": 1e-3, "high": 1e-2}, "train.patience": [3]}
    space = space_of("jmt", over)
    assert space["model.heads"] == 2 and "model.heads" in fixed(space)               # the head's part overridden
    assert space["model.d_model"] == [8, 16] and space["train.lr"] == {"low": 1e-3, "high": 1e-2}  # shared overridden
    assert space["model.aggregation"] == ["self_attention", "fc"]                     # the head's part kept
    assert space["train.patience"] == [3]                                            # a key of neither part added
    check_space(repo_params, "jmt", space)
    assert space_of("jmt") == {**SHARED, **head_space("jmt")}                        # nothing leaked


@pytest.mark.parametrize(("key", "spec", "match"), [
    ("model.nope", [1], "model.nope"), ("tune.trials", [2], "tune.trials"), ("train", [1], "train"),
    ("compare.seeds", 3, "compare.seeds"), ("model.temporal", ["nope"], "temporal"),
    ("model.d_model", {"low": 0, "high": 8}, "d_model"), ("train.lr", {"low": -1.0, "high": 1.0}, "lr"),
    ("train.batch_size", ["four"], "batch_size"), ("train.lr", {"low": 1e-3}, "lr"),
    # set by the trial step, or what the heads are compared on
    ("model.fusion", ["jmt"], "model.fusion cannot"), ("train.epochs", [3], "train.epochs cannot"),
    ("train.tasks", [["va", "expr"]], "train.tasks cannot"), ("train.out", "x.pt", "train.out cannot")])
def test_a_bad_override_is_a_params_error_naming_it(repo_params, key, spec, match):
    with pytest.raises(ParamsError, match=match):
        check_space(repo_params, "concat", space_of("concat", {key: spec}))


@pytest.mark.parametrize(("spec", "problem"), [([], "empty"), ({"low": 1}, "range"), ({"low": 2, "high": 1}, "low < high"),
                                               ({"low": 0.0, "high": 1.0, "log": True}, "low > 0"),
                                               ({"low": 0, "high": 1, "by": 2}, "range")])
def test_a_malformed_entry_is_named(spec, problem):
    with pytest.raises(ParamsError, match=rf"train\.lr.*{problem}"):
        distributions({"train.lr": spec})


def test_distributions_of_each_form():
    assert distribution("k", [1, 2]) == optuna.distributions.CategoricalDistribution([1, 2])
    assert distribution("k", {"low": 1, "high": 4}) == optuna.distributions.IntDistribution(1, 4)
    assert distribution("k", {"low": 1, "high": 9, "step": 2}) == optuna.distributions.IntDistribution(1, 9, step=2)
    assert distribution("k", {"low": 1e-4, "high": 1e-2, "log": True}) == optuna.distributions.FloatDistribution(
        1e-4, 1e-2, log=True)
    assert distribution("k", {"low": 0, "high": 0.5}) == optuna.distributions.FloatDistribution(0.0, 0.5)
    assert distribution("k", 0.3) is None and distribution("k", "tcn") is None


def test_configured_lays_a_configuration_over_the_params(repo_params):
    p = configured(repo_params, {"model.d_model": 32, "train.window": 48, "train.lr": 0.002})
    assert (p.model.d_model, p.train.window, p.train.hop, p.train.lr) == (32, 48, 24, 0.002)
    assert p.model.fusion == repo_params.model.fusion and p.train.epochs == repo_params.train.epochs
    assert configured(repo_params, {"train.window": 33}).train.hop == 16                    # window // 2
    assert configured(repo_params, {"train.window": 48, "train.hop": 12}).train.hop == 12    # set: kept
    assert configured(repo_params, {"model.d_model": 32}).train.hop == repo_params.train.hop  # no window: kept
    with pytest.raises(ParamsError, match="eval.x"):
        configured(repo_params, {"eval.x": 1})
    with pytest.raises(ParamsError, match="nope"):
        configured(repo_params, {"model.nope": 1})
    with pytest.raises(ParamsError):
        configured(repo_params, {"train.window": 0})


# ------------------------------------------------------------------- SEARCH_SPACE is not in the run keys

def without_space(text: str) -> str:
    """A head file with its top-level `SEARCH_SPACE = {...}` block and the blank lines just above
    it removed, by lines (not by parsing): the block starts at `SEARCH_SPACE = {` at column 0 and
    ends at the first `}` at column 0."""
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("SEARCH_SPACE = {"))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("}"))
    while start > 0 and not lines[start - 1].strip():
        start -= 1
    return "".join(lines[:start] + lines[end + 1:])


def fingerprint_by_hand(files: dict[str, bytes]) -> str:
    """sha256 over each name and the sha256 of its bytes (files_fingerprint's rule on plain bytes)."""
    h = hashlib.sha256()
    for name, data in files.items():
        h.update(name.encode() + b"\0")
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


@pytest.mark.parametrize("path", HEAD_FILES, ids=lambda p: p.name)
def test_a_heads_search_space_is_left_out_of_its_fingerprint(path, tmp_path):
    text = path.read_text()
    (tmp_path / "as_is").mkdir()
    (tmp_path / "as_is" / path.name).write_text(text)
    expected = fingerprint_by_hand({path.name: (without_space(text) if "\nSEARCH_SPACE = {" in text else text).encode()})
    assert files_fingerprint([tmp_path / "as_is" / path.name]) == expected
    if "\nSEARCH_SPACE = {" not in text:
        return
    edited = tmp_path / "edited" / path.name   # a value inside the block changed, an entry added
    edited.parent.mkdir()
    block_end = text.index("\n}\n", text.index("\nSEARCH_SPACE = {"))
    edited.write_text(text[:block_end] + '\n    "train.lr": {"low": 1e-5, "high": 1e-1, "log": True},' + text[block_end:])
    assert files_fingerprint([edited]) == expected
    code = tmp_path / "code" / path.name   # the code after it changed: another fingerprint
    code.parent.mkdir()
    code.write_text(text.replace("super().__init__(**common)", "super().__init__(**common)  # edited", 1))
    assert code.read_text() != text
    assert files_fingerprint([code]) != expected
    above = tmp_path / "above" / path.name   # a line of code just above the block is kept
    above.parent.mkdir()
    above.write_text(text.replace("\nSEARCH_SPACE = {", "\nEXTRA = 1\nSEARCH_SPACE = {", 1))
    assert files_fingerprint([above]) != expected


def test_only_a_top_level_search_space_is_left_out(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    nested = "def f():\n    SEARCH_SPACE = {'x': [1]}\n    return SEARCH_SPACE\n"
    (tmp_path / "a" / "m.py").write_text(nested)
    (tmp_path / "b" / "m.py").write_text(nested.replace("[1]", "[2]"))
    assert files_fingerprint([tmp_path / "a" / "m.py"]) == fingerprint_by_hand({"m.py": nested.encode()})
    assert files_fingerprint([tmp_path / "a" / "m.py"]) != files_fingerprint([tmp_path / "b" / "m.py"])


@pytest.mark.parametrize("tasks", [("va",), ("va", "expr", "au")])
@pytest.mark.parametrize("head", every_head())
def test_the_code_fingerprint_is_the_one_of_the_code_without_search_spaces(head, tasks, tmp_path):
    """The package copied with every head file's SEARCH_SPACE removed by hand: the same files, the
    same fingerprint as the real package's."""
    root = tmp_path / "copy"
    shutil.copytree(REPO / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for path in HEAD_FILES:
        if "\nSEARCH_SPACE = {" in path.read_text():
            (root / "pipeline/stage2/heads" / path.name).write_text(without_space(path.read_text()))
    files = code_files(head, tasks, root)
    assert [f.relative_to(root) for f in files] == [f.relative_to(REPO) for f in code_files(head, tasks)]
    assert files_fingerprint(files, root) == fingerprint_by_hand(
        {str(f.relative_to(root)): f.read_bytes() for f in files}) == code_fingerprint(head, tasks)


COMMITTED = ["metrics/compare.json", "metrics/compare-tasks.json", "metrics/compare-3streams.json"]


@pytest.mark.parametrize("name", COMMITTED)
def test_the_committed_comparisons_runs_keep_their_code_fingerprints(name):
    """Adding SEARCH_SPACE to the head files left every committed run's key as it was: the
    committed comparison (as git holds it) names each head's current code fingerprint."""
    shown = subprocess.run(["git", "show", f"HEAD:{name}"], cwd=REPO, capture_output=True, text=True, check=True)
    committed = json.loads(shown.stdout)
    code = committed["fingerprints"]["code"]
    assert set(code) == set(committed["results"])
    for head, fingerprint in code.items():
        assert code_fingerprint(head, committed["tasks"]) == fingerprint, head
