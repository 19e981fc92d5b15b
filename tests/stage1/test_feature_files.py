"""Reading other tools' per-frame feature files (`pipeline.stage1.feature_files`): CSV, .npy and
HDF5; alignment by frame index and by nearest timestamp (variable frame rates); masks from
`success` and confidence; every bad input an InputError naming the file, the line and the column."""

from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.config import FilesParams
from pipeline.errors import InputError
from pipeline.stage1.feature_files import align, read_table, resolve


def spec(**kw) -> FilesParams:
    return resolve(FilesParams(path="x/{video}.csv", **kw))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def read_aligned(path: Path, n: int, fps: float = 10.0, times=None, **kw):
    files = spec(**kw)
    times = np.arange(n) / fps if times is None else np.asarray(times, np.float64)
    return align(path, read_table(path, files), files, times, fps)


def test_csv_by_frame_column_with_masks_and_spaces_in_the_header(tmp_path):
    # OpenFace-style: names after the first carry a leading space; frames are 1-based
    path = write(tmp_path / "a.csv", "frame, timestamp, confidence, success, AU01_r, AU02_r, other\n"
                                     "1, 0.0, 0.98, 1, 0.1, 1.1, x\n"
                                     "2, 0.1, 0.97, 0, 0.2, 1.2, x\n"       # not tracked: masked
                                     "3, 0.2, 0.30, 1, 0.3, 1.3, x\n"       # low confidence: masked
                                     "5, 0.4, 0.99, 1, 0.5, 1.5, x\n"       # frame 4 missing: masked
                                     "6, 0.5, 0.99, 1, 0.6, 1.6, x\n"
                                     "\n")
    got = read_aligned(path, 6, columns=["AU01_r", "AU02_r"], frame_column="frame", first_frame=1,
                       confidence_column="confidence", success_column="success")
    np.testing.assert_array_equal(got.mask, [True, False, False, False, True, True])
    np.testing.assert_allclose(got.features, [[0.1, 1.1], [0, 0], [0, 0], [0, 0], [0.5, 1.5], [0.6, 1.6]], rtol=1e-6)
    assert got.features.dtype == np.float32
    assert got.stats == {"rows": 5, "rows_used": 3, "rows_outside": 0, "frames_masked": 3}


def test_regex_picks_whole_names_in_file_order(tmp_path):
    path = write(tmp_path / "a.csv", "AU01_r,AU01_c,xAU02_r,AU02_r\n1,2,3,4\n5,6,7,8\n")
    files = spec(regex=r"AU\d\d_r")
    table = read_table(path, files)
    assert table.columns == ("AU01_r", "AU02_r")
    np.testing.assert_array_equal(table.values, [[1, 4], [5, 8]])


def test_without_a_choice_every_column_but_the_rows_own_fields(tmp_path):
    path = write(tmp_path / "a.csv", ",frame,f0,f1\n0,0,1.5,2.5\n1,1,3.5,4.5\n")   # pandas' unnamed index first
    table = read_table(path, spec(frame_column="frame"))
    assert table.columns == ("f0", "f1")
    np.testing.assert_array_equal(table.frame, [0, 1])


def test_rows_outside_the_video_are_dropped_and_the_count_is_checked(tmp_path):
    rows = "".join(f"{i},{i * 10}\n" for i in range(12))
    path = write(tmp_path / "a.csv", "frame,v\n" + rows)
    got = read_aligned(path, 10, columns=["v"], frame_column="frame", count_tolerance=2)
    np.testing.assert_array_equal(got.features[:, 0], np.arange(10) * 10)
    assert got.mask.all() and got.stats["rows_outside"] == 2
    with pytest.raises(InputError, match=r"a\.csv: 12 frames, the video has 9 \(more than count_tolerance 2"):
        read_aligned(path, 9, columns=["v"], frame_column="frame", count_tolerance=2)


def test_several_faces_on_a_frame_keep_the_most_confident(tmp_path):
    path = write(tmp_path / "a.csv", "frame,FaceScore,v\n0,0.9,1\n1,0.6,2\n1,0.95,3\n2,,\n")   # frame 2: no face (NaN)
    got = read_aligned(path, 3, columns=["v"], frame_column="frame", confidence_column="FaceScore")
    np.testing.assert_array_equal(got.features[:, 0], [1, 3, 0])
    np.testing.assert_array_equal(got.mask, [True, True, False])
    two = write(tmp_path / "b.csv", "frame,v\n0,1\n1,2\n1,3\n")
    with pytest.raises(InputError, match=r"b\.csv, lines 3 and 4: two rows for frame 1 and no confidence"):
        read_aligned(two, 2, columns=["v"], frame_column="frame")


def test_rows_in_order_without_a_frame_column(tmp_path):
    path = write(tmp_path / "a.csv", "v,w\n1,2\n3,4\n")
    got = read_aligned(path, 3, count_tolerance=1)
    np.testing.assert_array_equal(got.features, [[1, 2], [3, 4], [0, 0]])
    np.testing.assert_array_equal(got.mask, [True, True, False])


def test_timestamps_align_a_variable_frame_rate_video(tmp_path):
    """Frames at irregular times (VFR) take the row nearest in time within half a frame; a
    file at 50 rows/s gives each frame its nearest row, the rest are dropped."""
    times = np.array([0.0, 0.1, 0.26, 0.3, 0.5, 0.56])        # VFR: gaps of 100, 160, 40, 200, 60 ms
    rows = np.round(np.arange(0, 0.6, 0.02), 2)                 # 50 rows/s
    path = write(tmp_path / "a.csv", "t,v\n" + "".join(f"{t},{t * 100}\n" for t in rows))
    got = read_aligned(path, len(times), times=times, columns=["v"], time_column="t", align="timestamp")
    np.testing.assert_allclose(got.features[:, 0], times * 100, rtol=1e-6)
    assert got.mask.all() and got.stats["rows_used"] == 6
    sparse = write(tmp_path / "b.csv", "t,v\n0.0,1\n0.31,2\n0.45,3\n")   # 0.45 is 50 ms from frame 0.5
    got = read_aligned(sparse, len(times), times=times, columns=["v"], time_column="t", align="timestamp",
                       tolerance_s=0.02, count_tolerance=2)
    np.testing.assert_array_equal(got.features[:, 0], [1, 0, 0, 2, 0, 0])
    np.testing.assert_array_equal(got.mask, [True, False, False, True, False, False])
    far = write(tmp_path / "c.csv", "t,v\n0.0,1\n3.0,2\n")
    with pytest.raises(InputError, match=r"c\.csv: its last row is at 3\.000 s, the video's last frame at 0\.560 s"):
        read_aligned(far, len(times), times=times, columns=["v"], time_column="t", align="timestamp")


def test_npy_and_hdf5_rows_are_frames(tmp_path):
    values = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "a.npy", values)
    got = read_aligned(tmp_path / "a.npy", 4)
    np.testing.assert_array_equal(got.features, values)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("features/wavlm", data=values * 2)
    got = read_aligned(tmp_path / "a.h5", 4, dataset="features/wavlm")
    np.testing.assert_array_equal(got.features, values * 2)
    assert read_table(tmp_path / "a.h5", spec(dataset="features/wavlm")).columns == ("0", "1", "2")


@pytest.mark.parametrize(("name", "text", "kw", "message"), [
    ("missing.csv", None, {}, r"missing\.csv: feature file not found"),
    ("empty.csv", "", {}, r"empty\.csv: empty file \(a header row"),
    ("noheader.csv", "1,2,3\n4,5,6\n", {}, r"noheader\.csv, line 1: no header row"),
    ("nocol.csv", "a,b\n1,2\n", {"columns": ["c"]}, r"nocol\.csv, line 1: no column 'c' \(columns: a, b\)"),
    ("noregex.csv", "a,b\n1,2\n", {"regex": "AU.*"}, r"noregex\.csv, line 1: no column matches 'AU\.\*'"),
    ("text.csv", "a,b\n1,2\n3,x\n", {}, r"text\.csv, line 3, column 'b': 'x' is not a number"),
    ("nan.csv", "a,b\n1,2\n3,nan\n", {}, r"nan\.csv, line 3, column 'b': nan \(NaN/inf in a usable row\)"),
    ("inf.csv", "a,b\n1,inf\n", {}, r"inf\.csv, line 2, column 'b': inf \(NaN/inf"),
    ("empty_cell.csv", "a,b\n1,\n", {}, r"empty_cell\.csv, line 2, column 'b': nan"),
    ("ragged.csv", "a,b\n1,2\n3\n", {}, r"ragged\.csv, line 3: 1 cells, the header has 2"),
    ("frame.csv", "f,a\n0,1\n1.5,2\n", {"frame_column": "f"}, r"frame\.csv, line 3, column 'f': 1\.5 is not a frame number"),
    ("time.csv", "t,a\n0,1\nnan,2\n", {"time_column": "t", "align": "timestamp"},
     r"time\.csv, line 3, column 't': nan is not a time"),
    ("a.txt", "a\n1\n", {}, r"a\.txt: cannot tell the format from the suffix"),
])
def test_bad_input_names_file_line_and_column(tmp_path, name, text, kw, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_aligned(path, 2, **kw)


def test_nan_in_a_masked_row_is_no_error(tmp_path):
    """py-feat writes a faceless frame as empty cells and no FaceScore: masked, not an error."""
    path = write(tmp_path / "a.csv", "frame,FaceScore,v\n0,,\n1,0.9,2\n")
    got = read_aligned(path, 2, columns=["v"], frame_column="frame", confidence_column="FaceScore")
    np.testing.assert_array_equal(got.mask, [False, True])


def test_bad_arrays(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(InputError, match=r"one\.npy: expected a numeric \(frames, features\) array"):
        read_aligned(tmp_path / "one.npy", 3)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match=r"obj\.npy: not a numeric \.npy array"):   # never unpickled
        read_aligned(tmp_path / "obj.npy", 1)
    np.save(tmp_path / "nan.npy", np.array([[1.0], [np.nan]]))
    with pytest.raises(InputError, match=r"nan\.npy, row 1, column '0': nan"):
        read_aligned(tmp_path / "nan.npy", 2)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["x"] = np.zeros((2, 2))
    with pytest.raises(InputError, match=r"a\.h5: no dataset 'y' \(it holds x\)"):
        read_aligned(tmp_path / "a.h5", 2, dataset="y")
    with pytest.raises(InputError, match=r"a\.h5: an HDF5 feature file needs `dataset:`"):
        read_aligned(tmp_path / "a.h5", 2)
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(InputError, match=r"bad\.h5: not an HDF5 file"):
        read_aligned(tmp_path / "bad.h5", 2, dataset="x")


# The presets on files in each tool's layout (tests/fixtures/features/README.md: the sources read,
# and the contents: a 12-frame clip at 15 fps)
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "features"
OPENFACE_AUS = ["01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20", "23", "25", "26", "45"]
PYFEAT_AUS = ["01", "02", "04", "05", "06", "07", "09", "10", "11", "12", "14", "15", "17", "20", "23", "24",
              "25", "26", "28", "43"]
EMOTIONS = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]


@pytest.mark.parametrize("name", ["openface_2.2.csv", "openface_2.2_compact.csv"])
def test_openface_preset(name):
    """Both header forms (with and without the space after each comma); frame 4 failed (success 0),
    frame 7 has no row, frame 9's confidence is 0.50 (kept at the preset's 0.5)."""
    files = resolve(FilesParams(path="x", preset="openface"))
    table = read_table(FIXTURES / name, files)
    cols = [f"AU{a}_r" for a in OPENFACE_AUS] + [f"AU{a}_c" for a in OPENFACE_AUS[:-1]] + ["AU28_c", "AU45_c"]
    assert list(table.columns) == ["gaze_angle_x", "gaze_angle_y", "pose_Rx", "pose_Ry", "pose_Rz"] + cols
    got = align(FIXTURES / name, table, files, np.arange(12) / 15, 15.0)
    frames = np.arange(1, 13)
    usable = ~np.isin(frames, [4, 7])
    np.testing.assert_array_equal(got.mask, usable)
    f = frames[usable]
    want = np.concatenate([np.stack([f / 100, -f / 100, f / 100, -f / 100, 0 * f], 1),
                           f[:, None] / 10 + np.arange(17) / 100,
                           np.repeat((f % 2 == 0)[:, None], 18, 1)], 1)
    np.testing.assert_allclose(got.features[usable], want, atol=1e-6)
    assert not got.features[~usable].any()
    strict = files.model_copy(update={"min_confidence": 0.6})
    assert not align(FIXTURES / name, table, strict, np.arange(12) / 15, 15.0).mask[8]   # frame 9


def test_openface_preset_by_timestamp():
    files = resolve(FilesParams(path="x", preset="openface", align="timestamp"))
    got = align(FIXTURES / "openface_2.2.csv", read_table(FIXTURES / "openface_2.2.csv", files), files,
                np.arange(12) / 15, 15.0)
    np.testing.assert_array_equal(got.mask, ~np.isin(np.arange(1, 13), [4, 7]))


def test_pyfeat_preset():
    """pandas' unnamed index column first; frame 3 has no face (FaceScore 0, empty cells); frame 6
    has two faces: the more confident (0.99) is kept."""
    files = resolve(FilesParams(path="x", preset="pyfeat"))
    table = read_table(FIXTURES / "pyfeat.csv", files)
    assert list(table.columns) == [f"AU{a}" for a in PYFEAT_AUS] + EMOTIONS
    got = align(FIXTURES / "pyfeat.csv", table, files, np.arange(12) / 15, 15.0)
    frames = np.arange(12)
    np.testing.assert_array_equal(got.mask, frames != 3)
    f = frames[frames != 3]
    want = np.concatenate([0.01 * (f[:, None] + np.arange(20)), np.full((11, 3), 0.04), 0.05 * f[:, None],
                           np.full((11, 2), 0.04), 0.8 - 0.05 * f[:, None]], 1)
    np.testing.assert_allclose(got.features[frames != 3], want, atol=1e-6)
    assert got.stats["rows"] == 13 and got.stats["rows_used"] == 11


def test_wavlm_preset():
    """The JMT authors' layout: pandas' header 0..767, row r = frame r + 1; all 768 columns, or the
    first 512 (their converter's choice) with a regex."""
    files = resolve(FilesParams(path="x", preset="wavlm"))
    got = align(FIXTURES / "jmt_wavlm.csv", read_table(FIXTURES / "jmt_wavlm.csv", files), files,
                np.arange(12) / 15, 15.0)
    assert got.features.shape == (12, 768) and got.mask.all()
    np.testing.assert_array_equal(got.features, (np.arange(1, 13)[:, None] * 1000 + np.arange(768)).astype(np.float32))
    first = resolve(FilesParams(path="x", preset="wavlm", regex=r"[0-9]|[1-9][0-9]|[1-4][0-9][0-9]|50[0-9]|51[01]"))
    assert read_table(FIXTURES / "jmt_wavlm.csv", first).columns == tuple(str(j) for j in range(512))
    with pytest.raises(InputError, match="no header row .* set numeric_header: true"):
        read_table(FIXTURES / "jmt_wavlm.csv", resolve(FilesParams(path="x")))
