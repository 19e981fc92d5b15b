"""Transcripts: the readers on hand-written fixtures (times worked out by hand), every bad input
as a one-line InputError naming the file and the cue, `frame_spans` by hand and against a
brute-force loop, pocketsphinx on espeak-ng speech, the whisper errors, and the word error rate."""

import importlib.metadata
import math
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import InputError, JmtError
from pipeline.stage1.transcripts import (Words, clean_word, cue_words, frame_spans, read_transcript,
                                         recognise_pocketsphinx, recognise_whisper, recogniser_version,
                                         spread, to_asr_rate, transcript_beside, word_error_rate)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "transcripts"


def triples(words: Words) -> list[tuple[str, float, float]]:
    return list(zip(words.text, words.start.tolist(), words.end.tolist()))


def assert_words(words: Words, expected: list[tuple], confidence: list[float] | None = None) -> None:
    assert words.text == tuple(w for w, _, _ in expected)
    assert words.start == pytest.approx([s for _, s, _ in expected], abs=1e-9)
    assert words.end == pytest.approx([e for _, _, e in expected], abs=1e-9)
    assert words.start.dtype == np.float64 and words.end.dtype == np.float64
    assert words.confidence.dtype == np.float32
    assert words.confidence.tolist() == pytest.approx(confidence or [1.0] * len(expected))


# -- readers on the fixtures ------------------------------------------------------------------

def test_webvtt_voice_tag_multiline_cue_inline_timestamp_and_sorting():
    words = read_transcript(FIXTURES / "sample.vtt")
    assert_words(words, [
        ("Hi", 0.5, 1.0),  # the file's last cue: sorted first
        # 1-3 s over "Hello my dear / old friend" (5+2+4+3+6 = 20 chars): 0.1 s a character
        ("Hello", 1.0, 1.5), ("my", 1.5, 1.7), ("dear", 1.7, 2.1), ("old", 2.1, 2.4), ("friend", 2.4, 3.0),
        # 3-4.6 s, <00:00:04.000> before "in": "We met" (5 chars) share 3-4 s, "in Rome" (6) 4-4.6 s
        ("We", 3.0, 3.4), ("met", 3.4, 4.0), ("in", 4.0, 4.2), ("Rome", 4.2, 4.6),
        # "&amp;" -> "&" and the dash are punctuation only: dropped; apostrophes inside stay
        ("Don't", 5.0, 5.5), ("won't", 5.5, 6.0),
    ])


def test_srt_markup_and_position_tail():
    words = read_transcript(FIXTURES / "sample.srt")
    assert_words(words, [("Hello", 1.0, 1.5), ("world", 1.5, 2.0),  # 10 chars over 1 s
                         ("See", 2.5, 2.8), ("you", 2.8, 3.1), ("tomorrow", 3.1, 3.9)])  # 14 over 1.4 s


def test_srt_with_crlf_lines_reads_the_same(tmp_path):
    crlf = tmp_path / "crlf.srt"
    crlf.write_bytes((FIXTURES / "sample.srt").read_bytes().replace(b"\n", b"\r\n"))
    assert triples(read_transcript(crlf)) == triples(read_transcript(FIXTURES / "sample.srt"))


def test_whisper_json_segments():
    words = read_transcript(FIXTURES / "whisper.json")
    # " -" is dropped; " 10 000." holds two tokens: 0.5 s spread over 2 + 3 characters
    assert_words(words, [("Hello", 0.0, 0.5), ("world", 0.6, 1.2), ("It's", 1.5, 1.9), ("fine", 1.9, 2.4),
                         ("10", 2.5, 2.7), ("000", 2.7, 3.0)],
                 confidence=[0.9, 0.75, 0.5, 0.25, 1.0, 1.0])


def test_whisper_json_bare_word_list():
    words = read_transcript(FIXTURES / "whisper_words.json")
    assert_words(words, [("Good", 0.0, 0.32), ("morning", 0.32, 0.8), ("Bye", 0.9, 1.1)],
                 confidence=[0.98, 0.87, 1.0])  # "Bye" has no probability


@pytest.mark.parametrize("name, content", [
    ("a.vtt", ""), ("b.vtt", "\n  \n"), ("c.vtt", "WEBVTT\n"), ("d.srt", ""), ("e.srt", "\n"),
    ("f.json", ""), ("g.json", "[]"), ("h.json", '{"segments": []}'),
])
def test_empty_transcripts_have_no_words(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    words = read_transcript(path)
    assert len(words) == 0 and words.start.shape == (0,) and words.confidence.dtype == np.float32


def test_cue_rules_by_hand():
    assert clean_word("¿«Hello,»?") == "Hello" and clean_word("don't") == "don't"
    assert clean_word("—") == "" and clean_word("♪") == "" and clean_word("$5") == "$5"
    start, end = spread(["ab", "c", "defg"], 1.0, 2.4)  # 7 characters over 1.4 s
    assert start.tolist() == pytest.approx([1.0, 1.4, 1.6]) and end.tolist() == pytest.approx([1.4, 1.6, 2.4])
    assert end[-1] == 2.4  # exactly the cue's end
    # a tag inside a word does not split it; a timestamp goes to the next word, past dropped ones
    assert cue_words("<i>New</i>York <00:00:01.000>— there", timestamps=True) == [("NewYork", None),
                                                                                ("there", 1.0)]
    assert cue_words("a <00:00:01.000>b", timestamps=False) == [("a", None), ("b", None)]


# -- bad inputs: one line, naming the file and where ------------------------------------------

BAD = [
    ("t.vtt", "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nok\n\n00:00:02.000 --> 00:00:0x.000\nbad\n",
     ["line 6", "cue 2"]),
    ("t.vtt", "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nok\n\n00:00:03.000 --> 00:00:02.500\nbad\n",
     ["line 6", "cue 2", "before start"]),
    ("t.vtt", "00:00:01.000 --> 00:00:02.000\nno header\n", ["line 1", "WEBVTT"]),
    ("t.vtt", "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nhi <00:00:05.000>there\n",
     ["line 3", "cue 1", "inline timestamp"]),
    ("t.vtt", "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nhi <00:00:01.800>a <00:00:01.500>b\n",
     ["line 3", "cue 1", "inline timestamp"]),
    ("t.vtt", "WEBVTT\n\n1\n00:00:01.000 --> 00:00:02.000\nhi\n00:00:03.000 --> 00:00:04.000\nho\n",
     ["line 3", "cue 1"]),  # no blank line between two cues
    ("t.vtt", "WEBVTT\n\n00:00:01.000 --> 00:00:02.000 wobble:3\nhi\n", ["line 3", "cue 1"]),
    ("t.srt", "1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:03,000 --> 00:00:02,000\nbad\n",
     ["line 6", "subtitle 2", "before start"]),
    ("t.srt", "1\n00:00:00,000 --> 00:00:0x,500\nbad\n", ["line 2", "subtitle 1", "unparseable"]),
    ("t.srt", "1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:03,000 -> 00:00:04,000\nbad arrow\n",
     ["line 5"]),
    ("t.srt", "hello\n1\n00:00:01,000 --> 00:00:02,000\nok\n", ["line 1"]),
    ("t.json", '{"segments": [\n{"words": [}\n]}', ["line 2", "not JSON"]),
    ("t.json", '{"text": "hi"}', ["segments"]),
    ("t.json", '{"segments": [{"start": 0, "end": 1, "text": "hi"}]}', ["segments[0]", "word_timestamps"]),
    ("t.json", '{"segments": [{"words": [{"word": "a", "start": 0, "end": 1}, {"word": "b", "end": 2}]}]}',
     ["segments[0].words[1]", "'start'"]),
    ("t.json", '[{"word": "a", "start": "0.5", "end": 1}]', ["[0].start", "number"]),
    ("t.json", '[{"word": "a", "start": true, "end": 1}]', ["[0].start", "number"]),
    ("t.json", '[{"word": "a", "start": NaN, "end": 1}]', ["[0].start", "finite"]),
    ("t.json", '[{"word": "a", "start": 0, "end": Infinity}]', ["[0].end", "finite"]),
    ("t.json", '[{"word": "a", "start": -0.5, "end": 1}]', ["[0].start", "negative"]),
    ("t.json", '[{"word": "a", "start": 0, "end": 1}, {"word": "b", "start": 1.0, "end": 0.5}]',
     ["[1].end", "before start"]),
    ("t.json", '[{"word": "a", "start": 0, "end": 1, "probability": 1.5}]', ["[0].probability"]),
    ("t.json", '[{"word": 3, "start": 0, "end": 1}]', ["[0].word"]),
    ("t.json", '[{"start": 0, "end": 1}]', ["[0].word", "missing"]),
    ("t.json", '["a"]', ["[0]"]),
    ("t.json", "42", ["Whisper JSON"]),
    ("t.txt", "hello", ["unknown transcript type"]),
]


@pytest.mark.parametrize("name, content, where", BAD, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BAD)])
def test_bad_input_names_file_and_place(tmp_path, name, content, where):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError) as err:
        read_transcript(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    for fragment in where:
        assert fragment in message, (fragment, message)


def test_unreadable_files(tmp_path):
    with pytest.raises(InputError, match="no such transcript file"):
        read_transcript(tmp_path / "missing.vtt")
    path = tmp_path / "latin1.srt"
    path.write_bytes(b"1\n00:00:01,000 --> 00:00:02,000\ncaf\xe9\n")
    with pytest.raises(InputError, match=r"latin1\.srt: line 3: not UTF-8"):
        read_transcript(path)


def test_transcript_beside_prefers_json_then_vtt_then_srt(tmp_path):
    video = tmp_path / "clip.v1.mp4"
    (tmp_path / "other.json").write_text("[]")
    assert transcript_beside(video) is None
    for suffix in (".srt", ".vtt", ".json"):
        (tmp_path / f"clip.v1{suffix}").write_text("")
        assert transcript_beside(video) == tmp_path / f"clip.v1{suffix}"


# -- frame_spans ------------------------------------------------------------------------------

def make_words(spans: list[tuple[float, float]]) -> Words:
    return Words.build([f"w{i}" for i in range(len(spans))], [s for s, _ in spans], [e for _, e in spans])


def test_frame_spans_by_hand():
    # A [0, .5)  B [.5, 1)  C [.9, 1.6) (overlaps B)  D [3, 3.2); windows of 1 s ending at t
    words = make_words([(0.0, 0.5), (0.5, 1.0), (0.9, 1.6), (3.0, 3.2)])
    ends = np.array([0.2, 0.5, 1.0, 1.5, 2.55, 3.0, 3.1, 4.5])
    spans = frame_spans(words, ends, 1.0)
    assert spans.dtype == np.int64 and spans.shape == (8, 2)
    assert spans.tolist() == [
        [0, 1],  # (-.8, .2]: A only (B starts at .2's future)
        [0, 1],  # (-.5, .5]: B starts at .5, not before the frame's end
        [0, 3],  # (0, 1]: A, B, C (C started at .9)
        [1, 3],  # (.5, 1.5]: A ended exactly at .5, out
        [2, 3],  # (1.55, 2.55]: C still (ends 1.6)
        [3, 3],  # (2, 3]: nothing (C ended, D starts exactly at 3)
        [3, 4],  # (2.1, 3.1]: D
        [4, 4],  # (3.5, 4.5]: nothing, after every word
    ]


def test_frame_spans_with_a_long_word_over_shorter_ones():
    # A [0, 2) spans B [.5, .8) and C [1, 1.5): ends are not sorted, their running maximum is
    words = make_words([(0.0, 2.0), (0.5, 0.8), (1.0, 1.5), (2.5, 3.0)])
    spans = frame_spans(words, np.array([1.0, 1.9, 2.6]), 0.1)
    # (.9, 1]: A heard; B (ends .8) in the range unheard, nested in A; C starts at 1: [0, 2)
    # (1.8, 1.9]: A heard; B and C in the range unheard, nested in A; D not yet: [0, 3)
    # (2.5, 2.6]: A ended at 2 (a naive search on the unsorted ends would not see it), D: [3, 4)
    assert spans.tolist() == [[0, 2], [0, 3], [3, 4]]
    assert frame_spans(words, np.array([1.45]), 1.0).tolist() == [[0, 3]]  # (.45, 1.45]: A, B, C


def test_frame_spans_slightly_overlapping_words_are_exact():
    # each word starts before the last one ends, none nested: the range is exactly the heard words
    words = make_words([(0.0, 0.55), (0.5, 1.05), (1.0, 1.6), (1.5, 2.0)])
    spans = frame_spans(words, np.array([0.52, 1.02, 1.58, 2.1]), 0.5)
    # (.02, .52]: w0, w1   (.52, 1.02]: w0 (.55), w1, w2   (1.08, 1.58]: w2, w3   (1.6, 2.1]: w3
    assert spans.tolist() == [[0, 2], [0, 3], [2, 4], [3, 4]]


def brute_force_check(words: Words, frame_end: np.ndarray, window: float, exact: bool) -> None:
    spans = frame_spans(words, frame_end, window)
    m = len(words)
    for (first, last), fe in zip(spans.tolist(), frame_end):
        heard = [i for i in range(m) if words.start[i] < fe and words.end[i] > fe - window]
        if not heard:
            assert first == last, fe
            continue
        assert first == heard[0] and last > heard[-1], (fe, first, last, heard)
        for j in set(range(first, last)) - set(heard):  # unheard in the range: nested
            assert any(words.start[i] <= words.start[j] and words.end[i] > words.end[j]
                       for i in range(j)), (fe, j)
        if exact:
            assert last == heard[-1] + 1, (fe, last, heard)


def test_frame_spans_against_a_loop():
    rng = np.random.default_rng(7)
    for trial in range(40):
        m = int(rng.integers(0, 25))
        start = np.sort(rng.uniform(0, 10, m).round(1))  # rounded: ties with frame ends happen
        frame_end = np.sort(rng.uniform(-1, 12, 60).round(1))
        window = float(rng.choice([0.1, 0.5, 2.0]))
        # any durations (nesting happens) ...
        end = start + rng.choice([0.0, 0.1, 0.3, 1.0, 2.5], m)
        brute_force_check(make_words(list(zip(start, end))), frame_end, window, exact=False)
        # ... and ends in order (overlaps, no nesting): exact
        end = np.maximum.accumulate(start + rng.uniform(0.0, 1.5, m)) if m else start
        brute_force_check(make_words(list(zip(start, end))), frame_end, window, exact=True)


def test_frame_spans_without_words_or_frames():
    assert frame_spans(Words.empty(), np.array([0.5, 1.0]), 1.0).tolist() == [[0, 0], [0, 0]]
    assert frame_spans(make_words([(0, 1)]), np.zeros(0), 1.0).shape == (0, 2)


# -- recognisers ------------------------------------------------------------------------------

def espeak(text: str, path: Path) -> tuple[np.ndarray, int]:
    """espeak-ng's speech of `text`: float32 mono at its own rate (22050 Hz)."""
    # en-us+f5 at 140 words/min, 4 x 10 ms between words: the voice pocketsphinx read best of
    # those tried (see test_pocketsphinx_recognises_espeak_speech)
    subprocess.run(["espeak-ng", "-v", "en-us+f5", "-s", "140", "-g", "4", "-w", str(path), text], check=True)
    with wave.open(str(path)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
        return pcm.astype(np.float32) / 32768.0, w.getframerate()


def test_to_asr_rate_keeps_pitch_and_duration():
    sr = 22050
    tone = np.sin(2 * np.pi * 440.0 * np.arange(sr) / sr).astype(np.float32)
    out = to_asr_rate(tone, sr)
    assert out.dtype == np.float32 and len(out) == 16000
    assert np.argmax(np.abs(np.fft.rfft(out))) == 440  # 1 s: bin k is k Hz


@pytest.mark.slow
def test_pocketsphinx_recognises_espeak_speech(tmp_path):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not on PATH (apt install espeak-ng): no real speech to recognise")
    one, two = ("my brother likes to play football with his friends",
                "please call me when you get back from work")
    a, sr = espeak(one, tmp_path / "a.wav")
    b, _ = espeak(two, tmp_path / "b.wav")
    gap_from = (int(0.3 * sr) + np.flatnonzero(np.abs(a) > 0.01)[-1]) / sr  # a's last sound
    track = np.concatenate([np.zeros(int(0.3 * sr), np.float32), a, np.zeros(sr, np.float32), b])
    gap_to = (int(0.3 * sr) + len(a) + sr) / sr                             # b's start
    words = recognise_pocketsphinx(track, sr)  # 22050 Hz in: resampled to 16 kHz inside
    # Measured with espeak-ng 1.51, pocketsphinx 5.1.1: WER 0.167 (3 of 18: "when his",
    # "where it" for "with his", "work"); these sentences alone 0.111 and 0.222, five others
    # 0.17-0.55 (mean 0.28). Fed at the wrong rate it is 1.1. 0.35 leaves room for other
    # espeak-ng versions.
    wer = word_error_rate((one + " " + two).split(), list(words.text))
    assert wer < 0.35, (wer, words.text)
    assert np.all(np.diff(words.start) > 0) and np.all(words.end > words.start)
    assert words.start[0] == pytest.approx(0.3, abs=0.15)  # the speech starts at 0.3 s
    assert words.start[0] >= 0 and words.end[-1] <= len(track) / sr
    assert not np.any((words.start < gap_from) & (words.end > gap_to))  # no word over the silence
    assert np.sum(words.start >= gap_to - 0.05) >= 6                    # the second sentence's
    assert words.confidence.dtype == np.float32
    assert np.all((words.confidence >= 0) & (words.confidence <= 1)) and words.confidence.max() > 0.5


def test_recogniser_version():
    info = recogniser_version("pocketsphinx")
    assert info["recogniser"] == "pocketsphinx"
    assert info["version"] == importlib.metadata.version("pocketsphinx")
    with pytest.raises(JmtError, match="known: pocketsphinx, whisper"):
        recogniser_version("kaldi")


def test_whisper_without_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # import faster_whisper: ImportError
    with pytest.raises(JmtError, match="pip install faster-whisper"):
        recognise_whisper(np.zeros(16000, np.float32), 16000, "tiny")


def test_whisper_without_a_model(tmp_path, monkeypatch):
    pytest.importorskip("faster_whisper")
    silence = np.zeros(16000, np.float32)
    with pytest.raises(JmtError, match="no such whisper model directory"):
        recognise_whisper(silence, 16000, tmp_path / "nowhere")
    with pytest.raises(JmtError, match="nor a model name; names: tiny.en, tiny"):
        recognise_whisper(silence, 16000, "tinyy")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(JmtError, match="HF_HUB_OFFLINE is set"):
        recognise_whisper(silence, 16000, "jmt-test/no-such-model")
    with pytest.raises(JmtError, match="cannot load it as a faster-whisper model"):
        recognise_whisper(silence, 16000, tmp_path)  # a directory, but no model in it


# -- word error rate --------------------------------------------------------------------------

@pytest.mark.parametrize("reference, hypothesis, expected", [
    ("the cat sat on the mat", "the cat sat on the mat", 0.0),
    ("the cat sat on the mat", "the cat sit on mat", 2 / 6),   # S sat->sit, D the
    ("a b", "a x b", 1 / 2),                                   # I x
    ("Hello, World!", "hello world", 0.0),                     # case and punctuation
    ("a b c d", "", 1.0),                                      # all deleted
    ("a", "b c d", 3.0),                                       # S + 2 I: above 1
    ("one two three four", "two three four five", 2 / 4),      # D one, I five
    ("", "", 0.0),
])
def test_word_error_rate_by_hand(reference, hypothesis, expected):
    assert word_error_rate(reference.split(), hypothesis.split()) == pytest.approx(expected)


def test_word_error_rate_of_nothing_against_words():
    assert math.isinf(word_error_rate([], ["a"]))
    assert word_error_rate(["a b", "c"], ["a", "b", "c"]) == 0.0  # items holding spaces are split
