import numpy as np
import pytest

from pipeline.corpus.annotations import format_annotation, read_annotation, write_annotation
from pipeline.errors import InputError


def test_format_is_affwild2():
    labels = np.array([[0.5, -0.25], [-5, -5], [np.nan, 0.1], [1.0, -1.0]])
    assert format_annotation(labels) == (
        "valence,arousal\n0.5000,-0.2500\n-5,-5\n-5,-5\n1.0000,-1.0000\n"
    )


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.uniform(-1, 1, (50, 2))
    labels[10:13] = -5
    path = tmp_path / "sub" / "v.txt"
    write_annotation(path, labels)
    back = read_annotation(path)
    assert back.shape == (50, 2) and back.dtype == np.float32
    np.testing.assert_allclose(back, labels, atol=5e-5)
    assert (back[10:13] == -5).all()


@pytest.mark.parametrize(("bad", "shape"), [(np.zeros(3), "(3,)"), (np.zeros((2, 3)), "(2, 3)")])
def test_format_rejects_bad_shapes(bad, shape):
    with pytest.raises(ValueError) as info:
        format_annotation(bad)
    assert str(info.value) == f"labels must have shape (N, 2), got {shape}"


def test_format_rejects_out_of_range():
    with pytest.raises(ValueError, match="outside"):
        format_annotation(np.array([[1.5, 0.0]]))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.1,0.2\n", "line 1: expected header 'valence,arousal', got '0.1,0.2'"),
        ("", "line 1: expected header 'valence,arousal', got 'an empty file'"),
        ("valence,arousal\n0.1,0.2\nabc,0.3\n", "line 3: expected 'valence,arousal', got 'abc,0.3'"),
        ("valence,arousal\n0.1\n", "line 2: expected 'valence,arousal', got '0.1'"),
        ("valence,arousal\n0.1,2.0\n", "line 2: value 2.0 outside"),
    ],
)
def test_reader_errors_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        read_annotation(path)
    assert str(info.value).startswith(f"{path}: {message}")


def test_reader_missing_file(tmp_path):
    with pytest.raises(InputError, match="annotation file not found"):
        read_annotation(tmp_path / "none.txt")
