"""`jmt live` on the tiny demo videos: frame by frame it computes what the offline pipeline
computes with the same stage-1 settings, then the causal protocol (to 1e-5); pipes work; frames
are dropped and counted when the consumer falls behind; a killed source and Ctrl-C end with every
line written. Rotated, damaged and blank inputs, threads and warnings: test_live_inputs.py."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from pipeline.infer.live.source import Source, describe
from pipeline.stage1.audio import run_audio
from pipeline.stage1.embed import run_embed
from pipeline.stage1.faces import run_faces
from pipeline.stage2.data import load_entries, mask_key
from pipeline.stage2.evaluate import anything_present
from pipeline.stage2.windows import predict_entry_causal
from pipeline.infer.model import from_checkpoint
from pipeline.tasks import tasks_of

from .conftest import live_lines, outputs_of

pytestmark = pytest.mark.usefixtures("one_thread")


def offline_causal(ckpt_path, video, work):
    """Offline stage 1 on the video, then the causal protocol: {task: (n, width)}, masks, times."""
    trained = from_checkpoint(ckpt_path)
    work.mkdir(parents=True, exist_ok=True)
    params = trained.stage1_params(work, {"video": video})
    run_faces(params), run_audio(params), run_embed(params)
    model = trained.model.eval()
    entry = load_entries(params.path(params.embed.out), None, model.tasks, names=["video"])[0]
    raw = predict_entry_causal(model, entry, trained.window, torch.device("cpu"))
    tasks = tasks_of(model.tasks, params.tasks)
    masks = {s: entry.read(0, entry.n, (mask_key(s),))[mask_key(s)] for s in entry.streams}
    return {t: tasks[t].activate(raw[t]) for t in tasks}, masks


@pytest.mark.parametrize("video", ["batch1/demo_00.mp4", "batch2/demo_02.mp4"])
def test_live_equals_the_offline_causal_prediction(live_ckpt, tiny_corpus, tmp_path, video):
    path = tiny_corpus / "videos" / video
    lines, summary = live_lines(live_ckpt, path, tmp_path / "live.jsonl", realtime=False)
    want, masks = offline_causal(live_ckpt, path, tmp_path / "work")
    assert summary["dropped"] == 0 and summary["ended"] == "end of source"
    assert [line["frame"] for line in lines] == list(range(len(want["va"])))
    for s, m in masks.items():
        assert [line["present"][s] for line in lines] == m.tolist()
    assert masks["visual"].any() and masks["audio"].any()
    assert not masks["visual"].all() or not masks["audio"].all()   # some frame lacks a stream
    known = anything_present(masks)   # the others' outputs are null
    assert [line["va"] is not None for line in lines] == known.tolist()
    np.testing.assert_allclose(outputs_of(lines)[known], np.clip(want["va"], -1, 1)[known], atol=1e-5, rtol=0)


def test_a_pipe_gives_the_same_lines_as_the_file(live_ckpt, tiny_corpus, tmp_path):
    path = tiny_corpus / "videos/batch1/demo_00.mp4"
    from_file, _ = live_lines(live_ckpt, path, tmp_path / "file.jsonl", realtime=False)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    feeder = subprocess.Popen(["sh", "-c", f"cat '{path}' > '{fifo}'"])
    from_pipe, summary = live_lines(live_ckpt, fifo, tmp_path / "pipe.jsonl", size=(320, 240), fps=15.0,
                                   realtime=False)
    feeder.wait()
    assert summary["processed"] == len(from_file) and summary["dropped"] == 0
    np.testing.assert_allclose(outputs_of(from_pipe), outputs_of(from_file), atol=1e-5, rtol=0)


def test_a_slow_consumer_drops_frames_and_counts_every_one(tiny_corpus):
    info = describe(str(tiny_corpus / "videos/batch1/demo_00.mp4"))
    source = Source(info, sample_rate=16000, realtime=True, max_queue=2)
    got, lost = [], []
    try:
        while True:
            dropped, frame = source.next_frame()
            lost += dropped
            if frame is None:
                break
            got.append(frame.index)
            time.sleep(0.2)   # 5 frames a second from a 15 fps source
    finally:
        source.stop()
    assert source.failure() is None
    assert len(lost) > 10 and sorted(got + [d.index for d in lost]) == list(range(60))
    assert all(np.diff(got) > 0)


def run_cli(args, tmp_path, *, after: float, how: str):
    """Starts `jmt live` on a file at its frame rate, then after `after` s either kills its
    ffmpeg (how='kill') or sends jmt a signal (how: a signal number); returns (rc, stderr, lines)."""
    out = tmp_path / "lines.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "live", *args, "--out", str(out)],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
    deadline = time.time() + 120
    while not (out.exists() and out.read_text().count("\n") >= 3) and time.time() < deadline:
        time.sleep(0.1)   # started: the models are loaded and frames flow
    time.sleep(after)
    if how == "kill":
        kids = subprocess.run(["pgrep", "-P", str(proc.pid), "ffmpeg"], capture_output=True, text=True).stdout.split()
        assert kids, "no ffmpeg child to kill"
        for pid in kids:
            os.kill(int(pid), signal.SIGKILL)
    else:
        proc.send_signal(how)
    _, err = proc.communicate(timeout=120)
    lines = [json.loads(line) for line in out.read_text().splitlines()]   # every line whole
    return proc.returncode, err, lines


def test_a_source_that_dies_ends_with_a_clear_message_and_every_line(live_ckpt, tiny_corpus, tmp_path):
    rc, err, lines = run_cli([str(tiny_corpus / "videos/batch1/demo_00.mp4"), "--checkpoint", str(live_ckpt)],
                             tmp_path, after=0.5, how="kill")
    assert rc == 2
    assert "the source died (ffmpeg killed by signal 9)" in err and "every line up to it was written" in err
    assert 3 <= len(lines) < 60 and [line["frame"] for line in lines] == list(range(len(lines)))


@pytest.mark.parametrize("sig, said", [(signal.SIGINT, "interrupted (Ctrl-C)"), (signal.SIGTERM, "stopped (SIGTERM)")])
def test_ctrl_c_or_sigterm_stops_cleanly_with_every_line(live_ckpt, tiny_corpus, tmp_path, sig, said):
    rc, err, lines = run_cli([str(tiny_corpus / "videos/batch1/demo_00.mp4"), "--checkpoint", str(live_ckpt)],
                             tmp_path, after=0.5, how=sig)
    assert rc == 0 and said in err
    assert 3 <= len(lines) < 60 and [line["frame"] for line in lines] == list(range(len(lines)))
    assert all("va" in line or line.get("dropped") for line in lines)


def test_between_keyframes_the_last_face_is_held(live_ckpt, tiny_corpus, tmp_path):
    lines, summary = live_lines(live_ckpt, tiny_corpus / "videos/batch1/demo_00.mp4", tmp_path / "l.jsonl",
                                realtime=False, detect_every=3)
    assert summary["detect_every"] == 3
    boxes = [line["box"] for line in lines]
    assert boxes[0] is not None
    held = [i for i in range(len(boxes)) if i % 3 and boxes[i] is not None and boxes[i - 1] is not None]
    assert held and all(boxes[i] == boxes[i - 1] for i in held)            # held between keyframes
    keys = [i for i in range(3, len(boxes), 3) if boxes[i] is not None and boxes[i - 1] is not None]
    assert any(boxes[i] != boxes[i - 1] for i in keys)                      # a keyframe detects anew


def test_live_with_the_onnx_head_gives_the_torch_lines(live_ckpt, tiny_corpus, tmp_path):
    from pipeline.infer.export import export_checkpoint

    graph = tmp_path / "model.onnx"
    export_checkpoint(live_ckpt, graph)
    path = tiny_corpus / "videos/batch1/demo_00.mp4"
    torch_lines, _ = live_lines(live_ckpt, path, tmp_path / "torch.jsonl", realtime=False)
    onnx_lines, summary = live_lines(live_ckpt, path, tmp_path / "onnx.jsonl", realtime=False, runtime="onnx",
                                     onnx=graph, threads=2)
    assert summary["runtime"] == "onnx" and summary["processed"] == len(torch_lines)
    assert summary["threads"] == {"torch": 2, "onnxruntime": 2}   # --threads reaches onnxruntime's session
    assert torch.get_num_threads() == 1                           # and the caller's count is back
    np.testing.assert_allclose(outputs_of(onnx_lines), outputs_of(torch_lines), atol=1e-4, rtol=0)


def test_a_url_is_read_through_ffmpeg(live_ckpt, tiny_corpus, tmp_path):
    """An http:// URL served from this machine: ffmpeg reads it as it would a remote stream
    (a URL never waits for the consumer, so frames may be dropped, each one counted)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tiny_corpus / "videos/batch1"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/demo_00.mp4"
        lines, summary = live_lines(live_ckpt, url, tmp_path / "url.jsonl", size=(320, 240), fps=15.0)
    finally:
        server.shutdown()
    assert summary["ended"] == "end of source" and summary["error"] is None
    assert summary["processed"] + summary["dropped"] == summary["frames"] == 60
    assert [line["frame"] for line in lines] == list(range(60)) and summary["processed"] >= 1
    assert sum(bool(line.get("dropped")) for line in lines) == summary["dropped"]
