"""`jmt transcribe` and the text streams of `jmt embed`: transcripts from WebVTT files (and from
pocketsphinx) cached per entry with their provenance; a text stream's features are its backbone
on each frame's words heard in its window, its mask where a word is heard; an edited transcript
re-embeds its entries only; a missing one is a recorded skip."""

import hashlib

import h5py
import numpy as np
import pytest

from pipeline import cache
from pipeline.cache_tools import verify
from pipeline.stage1.backbones.text import TextLexicon
from pipeline.stage1.embed import run_embed
from pipeline.stage1.transcribe import read_words, run_transcribe
from pipeline.stage1.transcripts import frame_spans, read_transcript

from .helpers import params_at
from .test_embed import FRAMES, _shared

VIDEOS = {"demo_00": ["demo_00_left", "demo_00_right"], "demo_01": ["demo_01"], "demo_02": ["demo_02"]}


def write_vtt(path, words: list[tuple[float, float, str]]) -> None:
    def ts(t):
        return f"00:00:{t:06.3f}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("WEBVTT\n\n" + "".join(f"{ts(a)} --> {ts(b)}\n{w}\n\n" for a, b, w in words))


SAID = {"demo_00": [(0.5, 1.0, "I"), (1.0, 1.6, "love"), (1.6, 2.4, "this")],
        "demo_01": [(0.2, 0.7, "terrible"), (3.0, 3.5, "awful"), (3.5, 4.5, "day")],
        "demo_02": [(2.0, 2.5, "wonderful")]}


@pytest.fixture
def text_params(tiny_cache, tmp_path):
    params, _ = tiny_cache
    for video, words in SAID.items():
        write_vtt(tmp_path / "tx" / f"{video}.vtt", words)
    return params, params_at(tmp_path, params.path(params.corpus.root), **_shared(params), transcribe={
        "out": "cache/transcripts", "path": "tx/{video}.vtt"}, embed={"streams": {
            "visual": {"name": "fer_xception"}, "audio": {"name": "logmel_stats"},
            "text": {"name": "text_lexicon", "window_s": 2.0}}})


def test_transcripts_are_cached_and_text_streams_read_them(text_params):
    params, run = text_params
    result = run_transcribe(run)
    assert sorted(result.done) == sorted(FRAMES) and result.skipped == []
    out = run.path(run.transcribe.out)
    for video, entries in VIDEOS.items():
        vtt = run.root / "tx" / f"{video}.vtt"
        for name in entries:
            with h5py.File(cache.entry_path(out, name)) as f:
                words = read_words(f)
                assert words.text == tuple(w for _, _, w in SAID[video])
                np.testing.assert_allclose(words.start, [a for a, _, _ in SAID[video]])
                assert f.attrs["recogniser"] == "file" and f.attrs["source"] == f"tx/{video}.vtt"
                assert f.attrs["source_sha256"] == hashlib.sha256(vtt.read_bytes()).hexdigest()
    assert run_transcribe(run).done == {}          # current
    assert verify(out, run.root / "params.yaml") == []   # `jmt cache verify` knows the layout
    broken = cache.entry_path(out, "demo_02")
    with h5py.File(broken, "a") as f:
        f["start"][0] = 9.0                          # after the file was written: sorted no more
    faults = "\n".join(verify(out))
    assert "demo_02.h5: words not sorted by start" not in faults   # one word: nothing to sort
    assert "demo_02.h5: content differs from its recorded content_sha256" in faults
    with h5py.File(cache.entry_path(out, "demo_01"), "a") as f:
        f["confidence"][1] = 2.0
    assert "demo_01.h5: confidence outside [0, 1] (word 1)" in "\n".join(verify(out))
    for name in ("demo_01", "demo_02"):
        cache.entry_path(out, name).unlink()
    assert sorted(run_transcribe(run).done) == ["demo_01", "demo_02"]
    embedded = run_embed(run)
    assert sorted(embedded.done) == sorted(FRAMES) and embedded.skipped == []
    lexicon = TextLexicon(2.0)
    for video, entries in VIDEOS.items():
        words = read_transcript(run.root / "tx" / f"{video}.vtt")
        for name in entries:
            with h5py.File(cache.entry_path(run.path(run.embed.out), name)) as f, \
                    h5py.File(cache.entry_path(params.path(params.embed.out), name)) as two:
                streams = cache.attrs_of(f)["streams"]
                assert [(s["name"], s["input"]) for s in streams][2] == ("text", "words")
                assert streams[2]["words"] == {"recogniser": "file", "words": len(words), "window_s": 2.0}
                end = f["timestamps"][...] + 1.0 / float(f.attrs["fps"])
                spans = frame_spans(words, end, 2.0)
                np.testing.assert_array_equal(f[cache.stream_key("text", "mask")][...], spans[:, 1] > spans[:, 0])
                np.testing.assert_allclose(f[cache.stream_key("text", "features")][...].astype(np.float32),
                                           lexicon(words, spans), rtol=2e-3, atol=2e-3)
                heard = f[cache.stream_key("text", "mask")][...]
                assert heard.any() and not heard.all()   # words end within each tiny video
                for s in ("visual", "audio"):
                    np.testing.assert_array_equal(f[cache.stream_key(s, "features")][...],
                                                  two[cache.stream_key(s, "features")][...])


def test_an_edited_transcript_reruns_its_entries_and_a_missing_one_is_a_recorded_skip(text_params):
    _, run = text_params
    run_transcribe(run)
    run_embed(run)
    write_vtt(run.root / "tx" / "demo_02.vtt", [(1.0, 1.5, "sad")])
    assert sorted(run_transcribe(run).done) == ["demo_02"]
    assert sorted(run_embed(run).done) == ["demo_02"]            # the transcript's hash is an input
    kept = cache.entry_path(run.path(run.transcribe.out), "demo_01").read_bytes()
    (run.root / "tx" / "demo_01.vtt").unlink()
    missing = run_transcribe(run)
    assert [s["entry"] for s in missing.skipped] == ["demo_01"]
    assert "tx/demo_01.vtt: no transcript for demo_01" in missing.skipped[0]["error"]
    assert cache.entry_path(run.path(run.transcribe.out), "demo_01").read_bytes() == kept   # nothing lost
    (run.root / "tx" / "demo_00.vtt").write_text("WEBVTT\n\n00:00:02.000 --> 00:00:01.000\nbackwards\n")
    bad = run_transcribe(run)
    assert {s["entry"] for s in bad.skipped} >= {"demo_00_left", "demo_00_right"}
    assert "demo_00.vtt" in {s["entry"]: s["error"] for s in bad.skipped}["demo_00_left"]


def test_pocketsphinx_transcribes_the_cached_track(tiny_cache, tmp_path):
    params, _ = tiny_cache
    run = params_at(tmp_path, params.path(params.corpus.root), **_shared(params),
                    transcribe={"out": "cache/transcripts", "source": "pocketsphinx"})
    result = run_transcribe(run)
    assert sorted(result.done) == sorted(FRAMES) and result.skipped == []
    with h5py.File(cache.entry_path(run.path(run.transcribe.out), "demo_01")) as f:
        assert f.attrs["recogniser"] == "pocketsphinx" and f.attrs["package"] == "pocketsphinx"
        words = read_words(f)
        n = float(f.attrs.get("n_words", len(words)))
        assert n == len(words)
        assert (np.diff(words.start) >= 0).all() and (words.end >= words.start).all()
        assert ((words.confidence >= 0) & (words.confidence <= 1)).all()
