import copy
import typing

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from pipeline.config import PATH_KEYS, Params, load_params, parse_params
from pipeline.errors import ParamsError
from pipeline.tasks import TASKS

from .conftest import REPO


@pytest.fixture
def raw():
    return yaml.safe_load((REPO / "params.yaml").read_text())


def write(tmp_path, data, name="params.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False) if not isinstance(data, str) else data)
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


def test_missing_file(tmp_path, monkeypatch):
    """Run outside the folder of params.yaml, every command says which file it looked for and how
    to name another; a missing `base:` names the file that names it."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParamsError) as info:
        load_params()
    assert str(info.value) == (f"params.yaml: params file not found (looked for {tmp_path / 'params.yaml'}; "
                               "run jmt in the folder that holds it, or pass --params PATH)")
    variant = write(tmp_path, {"base": "gone.yaml"}, name="v.yaml")
    with pytest.raises(ParamsError) as info:
        load_params(variant)
    assert str(info.value) == (f"{tmp_path / 'gone.yaml'}: params file not found (looked for "
                               f"{tmp_path / 'gone.yaml'}; named by `base:` in {variant})")


def test_params_are_frozen(repo_params):
    with pytest.raises(ValidationError):
        repo_params.demo.fps = 3.0


def test_int_accepted_for_float(raw):
    raw["demo"]["fps"] = 25
    assert parse_params(raw).demo.fps == 25.0


# ---------------------------------------------------------------- streams and tasks as data

def test_default_streams_tasks_and_labels(repo_params):
    assert list(repo_params.embed.streams) == ["visual", "audio"]            # JMT's order
    assert repo_params.embed.streams["visual"].name == "fer_xception"
    assert repo_params.embed.streams["audio"].name == "logmel_stats"
    assert repo_params.train.tasks == ["va"] and repo_params.train.task_weights == {}
    assert repo_params.labels.out == "data/cache/labels" and repo_params.labels.on_error == "skip"
    assert set(type(repo_params.tasks).model_fields) == set(TASKS.names())  # every task has its options
    assert repo_params.tasks.va.clip is True and repo_params.tasks.expr.class_weights is False
    assert repo_params.tasks.au.pos_weight is False and repo_params.tasks.au.tune_thresholds is False


def test_streams_keep_their_order_and_any_number(tmp_path, raw):
    raw["embed"]["streams"] = {"prosody": {"name": "prosody"}, "visual": {"name": "fer_xception"},
                               "audio_2": {"name": "logmel_stats"}}
    params = load_params(write(tmp_path, raw))
    assert list(params.embed.streams) == ["prosody", "visual", "audio_2"]
    raw["embed"]["streams"] = {"face": {"name": "fer_xception"}}
    assert list(load_params(write(tmp_path, raw)).embed.streams) == ["face"]


PATTERN = "String should match pattern '^[a-z][a-z0-9_]{0,31}$'"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d["embed"]["streams"].update({"Visual2": {"name": "fer_xception"}}),
         f"embed.streams.Visual2.[key]: {PATTERN} (got 'Visual2')"),
        (lambda d: d["embed"]["streams"].update({"no-audio": {"name": "logmel_stats"}}),
         f"embed.streams.no-audio.[key]: {PATTERN} (got 'no-audio')"),
        (lambda d: d["embed"]["streams"].update({"2d": {"name": "logmel_stats"}}),
         f"embed.streams.2d.[key]: {PATTERN} (got '2d')"),
        (lambda d: d["embed"]["streams"].update({"x" * 33: {"name": "logmel_stats"}}),
         f"embed.streams.{'x' * 33}.[key]: {PATTERN}"),
        (lambda d: d["embed"].update(streams={}), "embed.streams: Dictionary should have at least 1 item"),
        (lambda d: d["embed"]["streams"]["audio"].update(nme="x"), "embed.streams.audio.nme: unknown key"),
        (lambda d: d["embed"]["streams"]["audio"].pop("name"), "embed.streams.audio.name: Field required"),
        (lambda d: d["embed"].update(visual={"name": "fer_xception"}), "embed.visual: unknown key"),  # the old layout
        (lambda d: d["train"].update(tasks=["va", "vad"]),
         f"train.tasks: Value error, unknown task 'vad'; known: {', '.join(TASKS.names())} (got ['va', 'vad'])"),
        (lambda d: d["train"].update(tasks=["VA"]), "train.tasks.0: String should match pattern"),
        (lambda d: d["train"].update(tasks=[]), "train.tasks: List should have at least 1 item"),
        (lambda d: d["train"].update(tasks=["va", "expr", "va"]), "train: Value error, tasks has duplicates"),
        (lambda d: d["train"].update(task_weights={"expr": 2.0}),
         "train: Value error, task_weights names expr, not among tasks ['va']"),
        (lambda d: d["train"].update(task_weights={"va": 0}), "train.task_weights.va: Input should be greater than 0"),
        (lambda d: d["tasks"]["va"].update(clip="yes"), "tasks.va.clip: Input should be a valid boolean (got 'yes')"),
        (lambda d: d["tasks"]["va"].update(smooth_arousal=-1), "tasks.va: Value error, smooth_arousal must be >= 0"),
        (lambda d: d["tasks"]["expr"].update(class_weights=1), "tasks.expr.class_weights: Input should be a valid boolean"),
        (lambda d: d["tasks"]["au"].update(threshold=0.3), "tasks.au.threshold: unknown key"),
        (lambda d: d["tasks"].update(vad={}), "tasks.vad: unknown key"),
        (lambda d: d["evaluate"].update(clip=True), "evaluate.clip: unknown key"),   # moved to tasks.va
        (lambda d: d["labels"].update(on_error="ignore"), "labels.on_error: Input should be 'skip' or 'fail'"),
        (lambda d: d["corpus"].update(label_tolerance=-1),
         "corpus.label_tolerance: Input should be greater than or equal to 0"),
    ],
)
def test_streams_tasks_and_task_options_are_validated(tmp_path, raw, edit, expected):
    edit(raw)
    path = write(tmp_path, raw)
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert str(info.value).startswith(f"{path}: {expected}")


def test_several_tasks_with_weights(tmp_path, raw):
    raw["train"].update(tasks=["expr", "au", "va"], task_weights={"au": 0.5})
    raw["tasks"]["expr"]["class_weights"] = True
    params = load_params(write(tmp_path, raw))
    assert params.train.tasks == ["expr", "au", "va"] and params.train.task_weights == {"au": 0.5}
    assert params.tasks.expr.class_weights is True


def test_tasks_section_may_be_left_out(tmp_path, raw):
    del raw["tasks"], raw["labels"]
    params = load_params(write(tmp_path, raw))
    assert params.tasks.va.clip is True and params.labels.out == "data/cache/labels"


def test_updated_returns_a_validated_copy_with_the_same_root(tmp_path, raw):
    sub = tmp_path / "elsewhere"
    sub.mkdir()
    params = load_params(write(sub, raw))
    new = params.updated(model={"fusion": "mt"}, train={"seed": 3, "tasks": ["va", "au"]},
                         run={"compare.cpus": 2.0}, embed={"streams.audio.name": "prosody"}, tasks={"va.clip": False})
    assert new.root == params.root == sub.resolve() and new.path("x") == sub.resolve() / "x"
    assert (new.model.fusion, new.train.seed, new.train.tasks) == ("mt", 3, ["va", "au"])
    assert new.run.compare.cpus == 2.0 and new.embed.streams["audio"].name == "prosody"
    assert new.tasks.va.clip is False and new.embed.streams["visual"] == params.embed.streams["visual"]
    assert (params.model.fusion, params.train.seed, params.run.compare.cpus) == ("jmt", 0, 1.0)   # unchanged
    assert params.embed.streams["audio"].name == "logmel_stats" and params.tasks.va.clip is True
    with pytest.raises(ParamsError, match=r"params \(updated\): train.tasks: Value error, unknown task 'vad'"):
        params.updated(train={"tasks": ["vad"]})
    with pytest.raises(ParamsError, match=r"params \(updated\): model.fusoin: unknown key"):
        params.updated(model={"fusoin": "mt"})
    with pytest.raises(ParamsError, match="updated: unknown section 'modle'"):
        params.updated(modle={"fusion": "mt"})


def test_a_variant_lays_its_keys_over_its_base(tmp_path, raw):
    write(tmp_path, raw)
    sub = tmp_path / "variants"
    sub.mkdir()
    variant = write(sub, {"base": "../params.yaml", "train": {"tasks": ["va", "expr"]},
                          "embed": {"streams": {"prosody": {"name": "prosody"}}}}, name="v.yaml")
    params = load_params(variant)
    assert params.train.tasks == ["va", "expr"] and params.train.epochs == raw["train"]["epochs"]   # merged
    assert list(params.embed.streams) == ["prosody"]                     # streams: taken whole
    assert params.embed.batch_size == raw["embed"]["batch_size"]
    assert params.root == sub.resolve()                                  # paths: from the variant's folder
    write(sub, {"base": "w.yaml"}, name="v2.yaml")
    write(sub, {"base": "v2.yaml"}, name="w.yaml")
    with pytest.raises(ParamsError, match="makes a loop"):
        load_params(sub / "v2.yaml")
    bad = write(sub, {"base": "../params.yaml", "train": {"tasks": ["vad"]}}, name="bad.yaml")
    with pytest.raises(ParamsError, match=f"{bad}: train.tasks: Value error, unknown task 'vad'"):
        load_params(bad)


def test_the_schema_marks_every_path_once():
    assert {("corpus", "root"), ("corpus", "manifest"), ("embed", "out"), ("embed", "streams", "*", "checkpoint"),
            ("train", "live_dir"), ("compare", "runs"), ("report", "out")} <= set(PATH_KEYS)
    assert ("model", "fusion") not in PATH_KEYS and ("run", "address") not in PATH_KEYS


def test_a_base_in_another_folder_keeps_its_paths(tmp_path, raw):
    """Each relative path is taken from the folder of the file that writes it: the base's paths
    from the base's folder, the variant's own keys from the variant's; absolute paths stay."""
    (jmt := tmp_path / "jmt").mkdir()
    (other := tmp_path / "other").mkdir()
    raw["embed"]["streams"]["visual"]["checkpoint"] = "weights/visual.pt"
    raw["compare"] = {"runs": "/abs/runs", "table": "~/compare.md"}
    write(jmt, raw)
    params = load_params(write(other, {"base": "../jmt/params.yaml", "train": {"out": "models/mine.pt"}}))
    assert params.root == other.resolve()
    assert params.embed.out == "../jmt/data/cache/embeddings"
    assert params.path(params.embed.out) == jmt.resolve() / "data/cache/embeddings"   # inside the base's folder
    assert params.path(params.corpus.root) == jmt.resolve() / "data/demo"
    assert params.path(params.embed.streams["visual"].checkpoint) == jmt.resolve() / "weights/visual.pt"
    assert params.path(params.train.out) == other.resolve() / "models/mine.pt"      # the variant's own key
    assert params.path(params.train.live_dir) == jmt.resolve() / "dvclive/train"
    assert (params.compare.runs, params.compare.table) == ("/abs/runs", "~/compare.md")


def test_a_chain_of_bases_in_three_folders(tmp_path, raw):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c" / "deep"
    for folder in (a, b, c):
        folder.mkdir(parents=True)
    write(a, raw)
    write(b, {"base": "../a/params.yaml", "labels": {"out": "labels"}, "evaluate": {"out": "eval"}})
    params = load_params(write(c, {"base": "../../b/params.yaml", "evaluate": {"metrics": "m.json"}}))
    where = {key: params.path(value) for key, value in (
        ("embed", params.embed.out), ("labels", params.labels.out), ("eval", params.evaluate.out),
        ("metrics", params.evaluate.metrics))}
    assert where == {"embed": a.resolve() / "data/cache/embeddings", "labels": b.resolve() / "labels",
                     "eval": b.resolve() / "eval", "metrics": c.resolve() / "m.json"}
    middle = load_params(b / "params.yaml")
    assert (middle.labels.out, middle.embed.out) == ("labels", "../a/data/cache/embeddings")


def test_a_base_in_the_same_folder_changes_no_path(tmp_path, raw):
    write(tmp_path, raw)
    variant = load_params(write(tmp_path, {"base": "params.yaml", "train": {"out": "models/v.pt"}}, name="v.yaml"))
    plain = load_params(tmp_path / "params.yaml")
    assert variant.model_dump() == plain.updated(train={"out": "models/v.pt"}).model_dump()
    assert variant.embed.out == "data/cache/embeddings" and variant.root == plain.root


def test_the_repositorys_variants_load():
    tasks = load_params(REPO / "params-tasks.yaml")
    assert tasks.train.tasks == ["va", "expr", "au"] and list(tasks.embed.streams) == ["visual", "audio"]
    three = load_params(REPO / "params-3streams.yaml")
    assert list(three.embed.streams) == ["visual", "audio", "prosody"] and three.train.tasks == ["va"]
    assert three.embed.out != tasks.embed.out == "data/cache/embeddings"


def test_a_backbone_option_left_unset_stays_out_of_its_identity():
    """The embed stage hashes `BackboneParams.identity()`: options added later (reduction, clip,
    clip_stride, append_outputs) must not change the hash of a cache made before they existed."""
    from pipeline.config import BackboneParams

    plain = BackboneParams(name="fer_xception")
    assert plain.identity() == {"name": "fer_xception", "pretrained": False, "checkpoint": None,
                                "allow_random": False, "layer": None}
    clip = BackboneParams(name="r2plus1d_18", allow_random=True, clip=8, reduction="avg")
    assert clip.identity()["clip"] == 8 and clip.identity()["reduction"] == "avg"
    assert "clip_stride" not in clip.identity() and "append_outputs" not in clip.identity()


# ---------------------------------------------------------------- one source for every default

def _section(tp: typing.Any) -> type[BaseModel] | None:
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _members(tp: typing.Any) -> type[BaseModel] | None:
    """The section type of a mapping of sections (`embed.streams`: name -> BackboneParams)."""
    return _section(typing.get_args(tp)[1]) if typing.get_origin(tp) is dict else None


def _required_only(model: type[BaseModel], data: dict) -> dict:
    """A params file's `data` cut to the keys the schema `model` has no default for, down to
    every section and every member of a mapping of sections: what a params file must state."""
    out = {}
    for name, field in model.model_fields.items():
        if field.is_required() and name in data:
            value, section, members = data[name], _section(field.annotation), _members(field.annotation)
            out[name] = (_required_only(section, value) if section else
                         {k: _required_only(members, v) for k, v in value.items()} if members else value)
    return out


def _unwritten(model: type[BaseModel], data: dict, at: str = "") -> list[str]:
    """The keys of `model`'s fields (every section's, at any depth) that `data` does not write."""
    out = []
    for name, field in model.model_fields.items():
        if name not in data:
            out.append(at + name)
        elif section := _section(field.annotation):
            out += _unwritten(section, data[name], f"{at}{name}.")
    return out


def _flat(dumped: dict, at: str = "") -> dict:
    out = {}
    for key, value in dumped.items():
        out.update(_flat(value, f"{at}{key}.") if isinstance(value, dict) and value else {at + key: value})
    return out


def test_every_default_is_the_value_params_yaml_gives(raw, repo_params):
    """config.py's defaults and params.yaml hold the same value for every key of every section
    (task options included): a params file that states only the keys without a default loads
    exactly the repository's params, and a partial params file gets params.yaml's values."""
    minimal = _required_only(Params, raw)
    assert "train" in minimal and "epochs" not in minimal["train"] and "compare" not in minimal   # cut down
    defaults, written = _flat(parse_params(minimal).model_dump()), _flat(repo_params.model_dump())
    assert defaults.keys() == written.keys()
    differ = [f"{key}: default {defaults[key]!r}, params.yaml {written[key]!r}"
              for key in written if defaults[key] != written[key] or type(defaults[key]) is not type(written[key])]
    assert not differ, "pipeline/config.py's defaults disagree with params.yaml:\n" + "\n".join(differ)


def test_params_yaml_writes_every_key(raw):
    """params.yaml states every key of every section, so no default lives in config.py alone
    (a stream's backbone options excepted: each backbone takes its own, unset by default)."""
    assert _unwritten(Params, raw) == []


def test_the_protocols_subset_threshold_is_the_one_in_params_yaml(repo_params):
    """pipeline/stage2/protocol.py keeps its own `MIN_SUBSET_FRAMES` (its bytes are part of the
    keys of committed runs, so it stays as it is); the params' compare.min_subset_frames is the
    value every command uses: the two must not drift."""
    from pipeline.stage2.protocol import MIN_SUBSET_FRAMES

    assert MIN_SUBSET_FRAMES == repo_params.compare.min_subset_frames
