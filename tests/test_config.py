import copy

import pytest
import yaml
from pydantic import ValidationError

from pipeline.config import load_params, parse_params
from pipeline.errors import ParamsError

from .conftest import REPO


@pytest.fixture
def raw():
    return yaml.safe_load((REPO / "params.yaml").read_text())


def write(tmp_path, data, name="params.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_repo_params_load(repo_params):
    assert repo_params.demo.full.train >= 1
    assert repo_params.root == REPO


def test_paths_are_relative_to_the_params_folder(tmp_path, raw):
    sub = tmp_path / "corpusA"
    sub.mkdir()
    params = load_params(write(sub, raw))
    assert params.path(params.demo.out) == sub.resolve() / "data/demo"
    assert params.path("/abs/x") == __import__("pathlib").Path("/abs/x")


def test_unknown_key_names_file_and_key(tmp_path, raw):
    raw["demo"]["full"]["secnds"] = 3
    path = write(tmp_path, raw)
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert str(info.value) == f"{path}: demo.full.secnds: unknown key"


def test_unknown_section(tmp_path, raw):
    raw["trian"] = {"lr": 1}
    with pytest.raises(ParamsError, match=r"params.yaml: trian: unknown key"):
        load_params(write(tmp_path, raw))


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        (("demo", "fps"), "fast", "demo.fps: Input should be a valid number (got 'fast')"),
        (("demo", "fps"), 0, "demo.fps: Input should be greater than 0"),
        (("demo", "width"), 321, "demo.width: Input should be a multiple of 2"),
        (("demo", "width"), 32.0, "demo.width: Input should be a valid integer"),
        (("demo", "seed"), "1", "demo.seed: Input should be a valid integer (got '1')"),
        (("demo", "tiny", "train"), 0, "demo.tiny.train: Input should be greater than or equal to 1"),
        (("demo", "tiny", "occlusion_seconds"), 3.0, "demo.tiny: Value error, the unreliable stretches"),
        (("run", "engine"), "slurm", "run.engine: Input should be 'local' or 'ray'"),
        (("run", "faces", "gpus"), -0.5, "run.faces.gpus: Input should be greater than or equal to 0"),
        (("run", "embed", "actors"), 0, "run.embed.actors: Input should be greater than or equal to 1"),
    ],
)
def test_wrong_types_and_values_name_the_key(tmp_path, raw, key, value, expected):
    data = copy.deepcopy(raw)
    node = data
    for part in key[:-1]:
        node = node[part]
    node[key[-1]] = value
    path = write(tmp_path, data)
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert str(info.value).startswith(f"{path}: {expected}")


def test_several_errors_reported_together(tmp_path, raw):
    raw["demo"]["fps"] = -1
    raw["demo"]["typo"] = 1
    with pytest.raises(ParamsError) as info:
        load_params(write(tmp_path, raw))
    lines = str(info.value).splitlines()
    assert len(lines) == 2 and any("demo.typo: unknown key" in x for x in lines)


def test_missing_section_and_key(tmp_path, raw):
    del raw["demo"]["full"]
    with pytest.raises(ParamsError, match=r"demo.full: Field required"):
        load_params(write(tmp_path, raw))
    with pytest.raises(ParamsError, match=r"demo: Field required"):
        load_params(write(tmp_path, {}))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("demo: [1, 2", "not valid YAML"), ("- a\n- b\n", "expected a mapping of sections, got list"),
     ("", "expected a mapping of sections, got NoneType")],
)
def test_malformed_files(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ParamsError, match=expected) as info:
        load_params(path)
    assert str(info.value).startswith(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")


def test_params_are_frozen(repo_params):
    with pytest.raises(ValidationError):
        repo_params.demo.fps = 3.0


def test_int_accepted_for_float(raw):
    raw["demo"]["fps"] = 25
    assert parse_params(raw).demo.fps == 25.0
