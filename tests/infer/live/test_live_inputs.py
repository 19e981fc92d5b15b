"""`jmt live` on inputs that are not plain upright clips (issue 25): a phone's rotated or mirrored
clip is decoded as displayed, as offline; a truncated or corrupt file is reported (summary, stderr,
exit code 3) and no frame waits for audio that never comes, while a sparse file is not damage; a
frame with nothing present gets null outputs; the thread count is chosen, not inherited; frames
and audio come out writable (no raw PyTorch warning)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from pipeline.errors import DAMAGED_EXIT, InputError
from pipeline.infer.live import CausalModel, run_live
from pipeline.infer.live.features import LiveStage1
from pipeline.infer.live.source import Source, describe
from pipeline.media import iter_frames, probe

from .conftest import live_lines, outputs_of

pytestmark = pytest.mark.usefixtures("one_thread")


def source_frames(path):
    """Every frame a live Source decodes from a file, read as fast as it goes: [(H, W, 3) uint8]."""
    source = Source(describe(str(path)), sample_rate=16000, realtime=False)
    frames = []
    try:
        while (frame := source.next_frame()[1]) is not None:
            frames.append(frame.rgb)
    finally:
        source.stop()
    return frames


def test_a_file_is_decoded_with_its_own_turn_not_ffmpegs(made):
    info = describe(str(made["rotated"]))
    assert (info.width, info.height) == (320, 240) and info.orientation.rotation == 270   # stored 240x320
    cmd = Source._command(type("S", (), {"info": info, "_audio_w": None})(), realtime=False)
    assert cmd.index("-noautorotate") < cmd.index("-i")
    assert cmd[cmd.index("-vf") + 1] == "transpose=cclock_flip,vflip,showinfo"


@pytest.mark.parametrize("name", ["rotated", "mirrored"])
def test_live_decodes_a_turned_file_as_offline_stage_1_does(made, name):
    """Frame for frame the pixels offline stage 1 decodes (media.iter_frames), and upright: the
    original within codec noise (mean |difference| ~1 of 255; a wrong turn is ~30)."""
    live = np.stack(source_frames(made[name]))
    offline = np.concatenate(list(iter_frames(made[name], 320, 240)))
    np.testing.assert_array_equal(live, offline)
    original = np.concatenate(list(iter_frames(made["reencoded"], 320, 240)))
    assert live.shape == original.shape and np.abs(live.astype(int) - original).mean() < 3


def test_a_phone_clip_gives_the_outputs_of_the_upright_original(live_ckpt, tiny_corpus, made, tmp_path):
    """The rotated copy against the original through the same live pipeline: the same faces frame
    for frame, boxes and outputs within codec noise. Noise measured on a plain re-encode of the
    original (no turn): boxes up to 5.8 px apart, valence-arousal up to 0.0043; decoded
    sideways-then-squeezed (before the displayed size was probed) the boxes moved 61 px."""
    want, _ = live_lines(live_ckpt, tiny_corpus / "videos/batch1/demo_00.mp4", tmp_path / "a.jsonl", realtime=False)
    got, summary = live_lines(live_ckpt, made["rotated"], tmp_path / "b.jsonl", realtime=False)
    assert summary["orientation"] == "rotated 270 degrees clockwise (display matrix)"
    assert summary["size"] == [320, 240] and len(got) == len(want) == 60
    assert [line["present"] for line in got] == [line["present"] for line in want]
    boxes = [(a["box"], b["box"]) for a, b in zip(want, got) if a["box"] and b["box"]]
    assert len(boxes) == sum(line["box"] is not None for line in want)
    assert max(np.abs(np.subtract(a, b)).max() for a, b in boxes) < 10
    np.testing.assert_allclose(outputs_of(got), outputs_of(want), atol=0.01, rtol=0)


@pytest.mark.parametrize("name", ["truncated", "corrupt"])
def test_a_damaged_file_is_reported_and_no_frame_waits_for_lost_audio(live_ckpt, made, tmp_path, name):
    """Every frame that decodes gets its line, the summary names the damage in media's wording,
    and no frame waits for audio: the corrupt stretch lost 0.32 s of audio, and frames waited for
    it until the 2 s timeout (with the queue at 2, read as fast as it goes)."""
    lines, summary = live_lines(live_ckpt, made[name], tmp_path / "l.jsonl", realtime=False, max_queue=2)
    assert summary["ended"] == "end of source" and summary["error"] is None
    assert summary["damaged"].startswith(f"{made[name]}: damaged (truncated or corrupt): {len(lines)} frames decoded")
    assert 0 < len(lines) < 60 and [line["frame"] for line in lines] == list(range(len(lines)))
    assert summary["audio_wait_ms"]["max"] < 1000


def test_a_sparse_file_that_decodes_cleanly_is_not_damaged(live_ckpt, made, tmp_path):
    assert probe(made["sparse"]).n_frames > 12   # its index lists the frames it skips
    lines, summary = live_lines(live_ckpt, made["sparse"], tmp_path / "l.jsonl", realtime=False)
    assert summary["damaged"] is None and len(lines) == summary["processed"] == 12


def test_the_command_warns_and_exits_3_on_a_damaged_file_after_every_line(live_ckpt, made, tmp_path):
    out, summary = tmp_path / "lines.jsonl", tmp_path / "summary.json"
    proc = subprocess.run([sys.executable, "-m", "pipeline", "live", str(made["corrupt"]), "--checkpoint",
                           str(live_ckpt), "--no-realtime", "--threads", "1", "--out", str(out), "--summary",
                           str(summary)], capture_output=True, text=True, env={**os.environ, "COLUMNS": "300"})
    assert proc.returncode == DAMAGED_EXIT, proc.stderr
    result = json.loads(summary.read_text())
    assert f"warning {result['damaged']}" in proc.stderr and "decoding error line(s), the last:" in proc.stderr
    assert len(out.read_text().splitlines()) == result["processed"] == result["frames"]
    assert result["threads"] == {"torch": 1, "onnxruntime": None}
    assert "Warning" not in proc.stderr and "warnings.warn" not in proc.stderr   # no raw Python warning


def test_a_frame_with_nothing_present_has_null_outputs(live_ckpt, made, tmp_path):
    lines, summary = live_lines(live_ckpt, made["blank"], tmp_path / "l.jsonl", realtime=False)
    assert summary["processed"] == len(lines) == 15
    assert all(line["present"] == {"visual": False, "audio": False} and line["box"] is None for line in lines)
    assert all(line["va"] is None for line in lines)   # not a confident-looking value from no input


def test_live_runs_with_the_threads_asked_for_and_restores_the_count(live_ckpt, made, tmp_path, monkeypatch):
    seen = []   # torch's thread count at each stage-1 frame and each head call

    def counted(method):
        def wrapper(self, *args):
            seen.append(torch.get_num_threads())
            return method(self, *args)
        return wrapper

    monkeypatch.setattr(LiveStage1, "frame", counted(LiveStage1.frame))
    monkeypatch.setattr(CausalModel, "push", counted(CausalModel.push))
    torch.set_num_threads(2)   # what the process had (one_thread restores its own count after)
    with open(tmp_path / "l.jsonl", "w") as out:
        summary = run_live(str(made["short"]), live_ckpt, out, realtime=False)
    assert summary["threads"] == {"torch": 1, "onnxruntime": None}   # one per stage by default
    assert len(seen) == 2 * summary["processed"] == 30 and set(seen) == {1}
    assert torch.get_num_threads() == 2


def test_frames_come_out_writable(made):
    """torch.as_tensor on a read-only array warns ("The given NumPy array is not writable"):
    MTCNN's downscaling did it on every run of a source larger than faces.detect_max_side."""
    frames = source_frames(made["short"])
    assert len(frames) == 15 and all(f.flags.writeable for f in frames)


@pytest.mark.parametrize(("stream", "what"), [
    ({"name": "files", "files": {"path": "openface/{video}.csv", "preset": "openface"}}, "features another tool wrote into files"),
    ({"name": "text_lexicon"}, "a transcript"),
])
def test_live_refuses_a_stream_a_live_source_cannot_have(repo_params, made, stream, what):
    params = repo_params.updated(embed={"streams": {"visual": {"name": "fer_xception"}, "extra": stream}})
    with pytest.raises(InputError, match=f"jmt live: stream extra reads {what}, which a live source does not have"):
        LiveStage1(params, describe(str(made["rotated"])))
