"""Each task's Aff-Wild2 annotation file (pipeline/tasks): the published headers, format -> write
-> read round trips, and bad files refused with the file and the line named."""

import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.tasks import TASKS, build_task, folders_of, tasks_of
from pipeline.tasks.au import AUOptions
from pipeline.tasks.expr import ExprOptions
from pipeline.tasks.va import VAOptions

NAMES = TASKS.names()          # every registered task: the tests of what any task must do
AFFWILD2 = ["au", "expr", "va"]   # the challenge's tasks, whose files and labels the tests below spell out

# The headers of the challenge's files, as published (ABAW / Aff-Wild2)
HEADERS = {
    "va": "valence,arousal",
    "expr": "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other",
    "au": "AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26",
}
INVALID = {"va": -5.0, "expr": -1.0, "au": -1.0}


def labels_of(name: str, n: int = 40, seed: int = 0) -> np.ndarray:
    """Valid labels of a task with a few invalid frames (rows 3-5)."""
    rng = np.random.default_rng(seed)
    task = TASKS.get(name)()
    if name == "va":
        y = np.round(rng.uniform(-1, 1, (n, 2)), 4)
    elif name == "expr":
        y = rng.integers(0, 8, (n, 1)).astype(np.float64)
    else:
        y = (rng.random((n, 12)) < 0.3).astype(np.float64)
    y[3:6] = task.invalid
    return y


def test_the_registry_holds_the_three_tasks():
    assert set(AFFWILD2) <= set(NAMES)   # a new task file adds to them, with no edit here
    assert folders_of("va") == ("VA_Estimation_Challenge",)
    assert folders_of("expr") == ("EXPR_Recognition_Challenge", "EXPR_Classification_Challenge")
    assert folders_of("au") == ("AU_Detection_Challenge",)


@pytest.mark.parametrize("name", AFFWILD2)
def test_published_header_invalid_marker_and_widths(name, tmp_path):
    task = TASKS.get(name)()
    assert task.name == name
    assert ",".join(task.columns) == HEADERS[name]
    assert task.invalid == INVALID[name]
    assert task.values == {"va": 2, "expr": 1, "au": 12}[name]
    assert task.width == {"va": 2, "expr": 8, "au": 12}[name]
    assert task.metric in task.metrics
    task.write_annotation(tmp_path / "a.txt", labels_of(name, 3))
    assert (tmp_path / "a.txt").read_text().splitlines()[0] == HEADERS[name]


@pytest.mark.parametrize("name", AFFWILD2)
def test_round_trip(name, tmp_path):
    task = TASKS.get(name)()
    labels = labels_of(name)
    path = tmp_path / "sub" / "deeper" / "v.txt"          # folders made as needed
    task.write_annotation(path, labels)
    back = task.read_annotation(path)
    assert back.shape == (40, task.values) and back.dtype == np.float32
    np.testing.assert_allclose(back, labels, atol=5e-5 if name == "va" else 0)
    assert (back[3:6] == task.invalid).all()
    np.testing.assert_array_equal(task.valid(back), np.r_[[True] * 3, [False] * 3, [True] * 34])
    assert task.format_annotation(back) == path.read_text()  # a second pass changes nothing


def test_va_format_is_affwild2():
    task = TASKS.get("va")()
    labels = np.array([[0.5, -0.25], [-5, -5], [np.nan, 0.1], [1.0, -1.0], [0.3, -5]])
    assert task.format_annotation(labels) == (
        "valence,arousal\n0.5000,-0.2500\n-5,-5\n-5,-5\n1.0000,-1.0000\n-5,-5\n")


def test_expr_and_au_formats_by_hand():
    expr, au = TASKS.get("expr")(), TASKS.get("au")()
    assert expr.format_annotation(np.array([[4], [-1], [0], [7]])) == f"{HEADERS['expr']}\n4\n-1\n0\n7\n"
    row = np.zeros(12)
    row[[3, 6]] = 1                                  # AU6 and AU12: a smile
    half = np.zeros(12)
    half[0] = -1                                     # any -1 makes the whole frame invalid
    assert au.format_annotation(np.stack([row, half])) == (
        f"{HEADERS['au']}\n0,0,0,1,0,0,1,0,0,0,0,0\n" + ",".join(["-1"] * 12) + "\n")


@pytest.mark.parametrize(("name", "bad", "message"), [
    ("va", np.zeros(3), r"shape \(N, 2\), got \(3,\)"),
    ("va", np.zeros((2, 3)), r"shape \(N, 2\), got \(2, 3\)"),
    ("va", np.array([[1.5, 0.0]]), "outside"),
    ("expr", np.array([[8]]), "class index 8 is not in 0..7 or -1"),
    ("expr", np.array([[-2]]), "class index -2"),
    ("au", np.zeros((2, 11)), r"shape \(N, 12\), got \(2, 11\)"),
    ("au", np.full((1, 12), 2), "AU values must be 0 or 1"),
])
def test_format_refuses_what_no_annotation_file_may_hold(name, bad, message):
    with pytest.raises(ValueError, match=message):
        TASKS.get(name)().format_annotation(bad)


def _lines(name: str, frames: list[str]) -> str:
    return HEADERS[name] + "\n" + "\n".join(frames) + "\n"


BAD_FILES = [
    # wrong header
    ("va", "0.1,0.2\n", 1, "expected header 'valence,arousal', got '0.1,0.2'"),
    ("va", "", 1, "expected header 'valence,arousal', got 'an empty file'"),
    ("expr", "valence,arousal\n4\n", 1, f"expected header '{HEADERS['expr']}'"),
    ("au", HEADERS["au"].replace("AU26", "AU27") + "\n" + ",".join(["0"] * 12) + "\n", 1,
     f"expected header '{HEADERS['au']}'"),
    # bad value
    ("va", _lines("va", ["0.1,0.2", "abc,0.3"]), 3, "could not convert"),
    ("va", _lines("va", ["0.1,2.0"]), 2, "value 2.0 outside [-1, 1] and not -5"),
    ("expr", _lines("expr", ["4", "happy"]), 3, "invalid literal"),
    ("expr", _lines("expr", ["4", "1", "8"]), 4, "class index 8 is not in 0..7 or -1"),
    ("expr", _lines("expr", ["2.5"]), 2, "invalid literal"),
    ("au", _lines("au", [",".join(["0"] * 11 + ["2"])]), 2, "value 2 is not 0, 1 or -1"),
    ("au", _lines("au", [",".join(["0"] * 12), ",".join(["0"] * 11 + ["x"])]), 3, "invalid literal"),
    # wrong count
    ("va", _lines("va", ["0.1"]), 2, "expected 'valence,arousal'"),
    ("va", _lines("va", ["0.1,0.2", "0.1,0.2,0.3"]), 3, "expected 'valence,arousal'"),
    ("expr", _lines("expr", ["1,2"]), 2, "expected one class index per line"),
    ("au", _lines("au", [",".join(["0"] * 12), ",".join(["0"] * 13)]), 3, "expected 12 comma-separated values"),
]


@pytest.mark.parametrize(("name", "text", "line", "message"), BAD_FILES)
def test_bad_files_name_the_file_and_the_line(tmp_path, name, text, line, message):
    path = tmp_path / f"{name}.txt"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        TASKS.get(name)().read_annotation(path)
    assert str(info.value).startswith(f"{path}: line {line}: ")
    assert message in str(info.value)


def test_every_task_has_bad_file_cases_of_each_kind():
    for name in AFFWILD2:
        lines = [line for task, _, line, _ in BAD_FILES if task == name]
        assert 1 in lines and any(n > 1 for n in lines), name


@pytest.mark.parametrize("name", AFFWILD2)
def test_tolerant_header(name, tmp_path):
    task = TASKS.get(name)()
    # the challenge's files vary in case and spaces in the header, and end with blank lines
    path = tmp_path / "v.txt"
    text = task.format_annotation(labels_of(name, 5))
    head, rest = text.split("\n", 1)
    path.write_text(head.upper().replace(",", ", ") + "\n" + rest + "\n\n")
    np.testing.assert_allclose(task.read_annotation(path), labels_of(name, 5), atol=5e-5)


@pytest.mark.parametrize("name", NAMES)
def test_missing_file_and_missing_labels(name, tmp_path):
    task = TASKS.get(name)()
    with pytest.raises(InputError, match=f"{tmp_path / 'none.txt'}: annotation file not found"):
        task.read_annotation(tmp_path / "none.txt")
    m = task.missing(4)
    assert m.shape == (4, task.values) and m.dtype == np.float32
    assert not task.valid(m).any() and task.well_formed(m).all()


@pytest.mark.parametrize(("name", "rows", "expected"), [
    ("va", [[0.5, -0.5], [-5, -5], [0.5, -5], [1.5, 0], [-1, 1], [-4, 0]], [1, 1, 1, 0, 1, 0]),
    ("expr", [[0], [7], [-1], [8], [2.5], [-2]], [1, 1, 1, 0, 0, 0]),
    ("au", [[0] * 12, [1] * 12, [-1] * 12, [-1] + [0] * 11, [2] + [0] * 11, [0.5] * 12], [1, 1, 1, 0, 0, 0]),
])
def test_well_formed_and_valid_by_hand(name, rows, expected):
    task = TASKS.get(name)()
    y = np.array(rows, np.float32)
    np.testing.assert_array_equal(task.well_formed(y), np.array(expected, bool))
    valid = {"va": [1, 0, 0, 1, 1, 1], "expr": [1, 1, 0, 1, 1, 1], "au": [1, 1, 0, 0, 1, 1]}[name]
    np.testing.assert_array_equal(task.valid(y), np.array(valid, bool))   # valid: no invalid marker


def test_options_are_each_tasks_own_and_validated():
    assert build_task("va").options == VAOptions()
    assert build_task("expr", ExprOptions(class_weights=True)).options.class_weights
    tasks = tasks_of(["au", "va"], type("Section", (), {"au": AUOptions(pos_weight=True)})())
    assert list(tasks) == ["au", "va"] and tasks["au"].options.pos_weight and tasks["va"].options == VAOptions()
    with pytest.raises(ValueError, match="smooth_valence"):
        VAOptions(smooth_valence=-1)
    with pytest.raises((TypeError, ValueError), match="threshold"):   # no such option
        AUOptions(threshold=0.3)
    with pytest.raises(KeyError, match=f"unknown task 'vad'; known: {', '.join(NAMES)}$"):
        build_task("vad")
