"""Transcripts with word times: what a text stream reads.

A transcript is `Words`: one item per word with its start, end and confidence, sorted by start.
It comes from a file beside the video (`transcript_beside`, `read_transcript`: WebVTT, SRT or
Whisper JSON) or from a recogniser run on the audio track (`recognise_pocketsphinx`, offline
with the model inside its wheel; `recognise_whisper`, faster-whisper, an optional install).
Each video frame then reads the words heard in its window (`frame_spans`, the audio stage's
window: the `window_s` seconds ending when the frame ends).

Rules written once here:
- a word is a whitespace-separated token with punctuation (and symbols such as "♪") stripped
  from both ends, case kept; a token left empty is dropped (`clean_word`);
- caption cues time whole lines, not words: a cue's [start, end) is spread over its words in
  proportion to their character counts (`spread`); WebVTT inline timestamps, where a cue has
  them, pin the start of the word that follows them (`cue_words`);
- a source without confidences gives 1.0.
"""

from __future__ import annotations

import functools
import html
import importlib.metadata
import json
import math
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from pipeline.errors import InputError, JmtError

# webvtt, srt, pocketsphinx and faster_whisper (optional) are imported where used: modules that
# only pass `Words` around need none of them.

SUFFIXES = (".json", ".vtt", ".srt")  # transcript_beside's order of preference (see there)
ASR_RATE = 16000                      # both recognisers run on 16 kHz mono
SPHINX_FILLERS = ("<", "[", "+")      # <s> </s> <sil> [NOISE] [SPEECH] (+NOISE+ in older models)


@dataclass(frozen=True)
class Words:
    """An entry's transcript, one item per word, sorted by start time."""

    text: tuple[str, ...]     # the words as written (punctuation stripped, case kept)
    start: np.ndarray         # float64 (m,) seconds on the video's clock
    end: np.ndarray           # float64 (m,) seconds, end >= start
    confidence: np.ndarray    # float32 (m,) in [0, 1]; 1.0 where the source gives none

    def __len__(self) -> int:
        return len(self.text)

    @classmethod
    def build(cls, text: Sequence[str], start: Iterable[float], end: Iterable[float],
              confidence: Iterable[float] | None = None) -> Words:
        """Words from parallel sequences in any order: sorted by start (stable, so words that
        start together keep their order), confidence 1.0 where None."""
        start = np.asarray(list(start), np.float64)
        end = np.asarray(list(end), np.float64)
        conf = (np.ones(len(start), np.float32) if confidence is None
                else np.asarray(list(confidence), np.float32))
        order = np.argsort(start, kind="stable")
        return cls(tuple(text[i] for i in order), start[order], end[order], conf[order])

    @classmethod
    def empty(cls) -> Words:
        """No words (an empty transcript, or silence)."""
        return cls.build((), (), ())


# -- words and cues ---------------------------------------------------------------------------

def _strippable(ch: str) -> bool:
    # P*: punctuation; So: symbols such as the "♪" of song captions. Sm/Sc ("+", "$") stay.
    cat = unicodedata.category(ch)
    return cat[0] == "P" or cat == "So"


def clean_word(token: str) -> str:
    """A token with punctuation stripped from both ends ("friend!" -> "friend", "don't" stays);
    "" when nothing else is left."""
    i, j = 0, len(token)
    while i < j and (_strippable(token[i]) or token[i].isspace()):
        i += 1
    while j > i and (_strippable(token[j - 1]) or token[j - 1].isspace()):
        j -= 1
    return token[i:j]


def spread(words: Sequence[str], start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
    """The cue rule: [start, end) split over `words` in proportion to their character counts,
    each word ending where the next starts; float64 (m,) starts and ends. A cue 1-3 s with
    "Hello my dear" (5 + 2 + 4 chars) gives Hello 1-1.909, my 1.909-2.273, dear 2.273-3."""
    cum = np.cumsum([0] + [len(w) for w in words], dtype=np.float64)
    edges = start + (end - start) * cum / max(cum[-1], 1.0)
    edges[-1] = end  # exactly the cue's end, whatever the rounding
    return edges[:-1], edges[1:]


_TAG = re.compile(r"<([^<>\n]*)>")      # a "<" with no ">" after it is text (as webvtt-py reads it)
_ASS_OVERRIDE = re.compile(r"\{\\[^{}]*\}")  # {\an8}, {\i1}: SRT files converted from ASS carry them


def cue_words(raw: str, *, timestamps: bool = False) -> list[tuple[str, float | None]]:
    """A cue's text -> its words, each with the inline timestamp that precedes it (or None).

    Markup goes: tags (<v Speaker>, <c.x>, <i>, <b>, <font ...>) and ASS overrides ({\\an8});
    HTML entities are decoded (&amp; -> &). A tag does not split a word ("<i>New</i>York" is one
    word). With `timestamps` (WebVTT), a <00:00:01.500> tag pins the start of the next word;
    a word dropped by `clean_word` hands its timestamp on to the word after it."""
    tokens: list[list] = []       # [characters, timestamp]
    pending: float | None = None  # the last timestamp seen, not yet given to a word
    in_word = False
    for k, piece in enumerate(_TAG.split(_ASS_OVERRIDE.sub("", raw))):
        if k % 2:  # a tag's content
            if timestamps and (t := _vtt_timestamp(piece)) is not None:
                pending = t
            continue
        for ch in html.unescape(piece):
            if ch.isspace():
                in_word = False
            elif in_word:
                tokens[-1][0].append(ch)
            else:
                tokens.append([[ch], pending])
                pending, in_word = None, True
    out, carry = [], None
    for chars, mark in tokens:
        word, mark = clean_word("".join(chars)), mark if mark is not None else carry
        if word:
            out.append((word, mark))
            carry = None
        else:
            carry = mark
    return out


def _vtt_timestamp(tag: str) -> float | None:
    from webvtt.errors import MalformedCaptionError
    from webvtt.models import Timestamp
    try:
        return Timestamp.from_string(tag.strip()).in_milliseconds() / 1000.0
    except MalformedCaptionError:
        return None  # not a timestamp tag: markup


def time_cue(words: list[tuple[str, float | None]], start: float, end: float,
             where: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Word times of a cue [start, end) from `cue_words`: runs of words split at the words with
    an inline timestamp; each run spreads [its timestamp (the cue's start for the first run),
    the next run's timestamp (the cue's end for the last)) by `spread`. Without inline
    timestamps that is one run, the whole cue."""
    text = [w for w, _ in words]
    if not text:
        return [], np.zeros(0), np.zeros(0)
    anchors, times = [0], [start]
    for i, (_, mark) in enumerate(words):
        if mark is None:
            continue
        if not times[-1] <= mark <= end:
            raise InputError(f"{where}: inline timestamp {mark:.3f} s is outside the cue "
                             f"({start:.3f}-{end:.3f} s) or before an earlier one")
        if i == 0:
            times[0] = mark
        else:
            anchors.append(i)
            times.append(mark)
    anchors.append(len(text))
    times.append(end)
    parts = [spread(text[a:b], t0, t1) for a, b, t0, t1 in zip(anchors, anchors[1:], times, times[1:])]
    return text, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _check_cue(start: float, end: float, where: str) -> None:
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0:
        raise InputError(f"{where}: times must be finite and >= 0 (start {start}, end {end})")
    if end < start:
        raise InputError(f"{where}: end {end:.3f} s is before start {start:.3f} s")


def _from_cues(cues: Iterable[tuple[str, float, float, str]], timestamps: bool) -> Words:
    """Words from (raw text, start, end, where) cues."""
    text, starts, ends = [], [], []
    for raw, start, end, where in cues:
        _check_cue(start, end, where)
        t, s, e = time_cue(cue_words(raw, timestamps=timestamps), start, end, where)
        text += t
        starts.append(s)
        ends.append(e)
    if not text:
        return Words.empty()
    return Words.build(text, np.concatenate(starts), np.concatenate(ends))


# -- readers ----------------------------------------------------------------------------------

def _read_text(path: Path) -> str:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such transcript file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read it ({e.strerror})") from None
    try:
        return data.decode("utf-8-sig")  # a BOM is common in caption files
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise InputError(f"{path}: line {line}: not UTF-8 text (byte {e.start})") from None


_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # webvtt-py splits lines on CR, LF and CRLF


def read_webvtt(path: Path) -> Words:
    """A WebVTT file's words (webvtt-py, strict: a malformed cue is an error, not skipped).

    Cue times are spread over the words by `spread`; inline timestamps (<00:00:01.500>, as in
    karaoke-style or auto-generated captions) pin word starts (`time_cue`); markup is stripped.
    An empty file has no words."""
    import webvtt
    from webvtt.errors import MalformedCaptionError, MalformedFileError

    text = _read_text(path)
    if not text.strip():
        return Words.empty()
    lines = _LINE_BREAK.split(text)
    try:
        captions = webvtt.from_string(text, strict=True).captions
    except MalformedFileError:
        raise InputError(f"{path}: line 1: not WebVTT (the first line must start with WEBVTT)") from None
    except (MalformedCaptionError, ValueError) as e:
        raise InputError(f"{path}: {_vtt_error_at(lines)}{e}".replace("\n", " ")) from None
    # strict parsing leaves "-->" only on cue timing lines: the k-th is cue k's (for messages)
    timing = [n for n, line in enumerate(lines, 1) if "-->" in line]
    if len(timing) != len(captions):
        timing = [None] * len(captions)

    def where(k: int) -> str:
        return f"{path}: " + (f"line {timing[k]} (cue {k + 1})" if timing[k] else f"cue {k + 1}")

    return _from_cues(((c.raw_text, c.start_time.in_milliseconds() / 1000.0,
                        c.end_time.in_milliseconds() / 1000.0, where(k))
                       for k, c in enumerate(captions)), timestamps=True)


def _vtt_error_at(lines: list[str]) -> str:
    """Where webvtt-py's strict parser failed ("line 7 (cue 2): "), as its errors name no line:
    the first cue block that fails alone. "" when none does (the error lies elsewhere)."""
    import webvtt
    from webvtt.errors import MalformedCaptionError, MalformedFileError

    cue, block, first = 0, [], 0
    for n, line in enumerate([*lines, ""], 1):
        if line:
            first = first if block else n
            block.append(line)
            continue
        if any("-->" in b for b in block):
            cue += 1
            try:
                webvtt.from_string("WEBVTT\n\n" + "\n".join(block), strict=True)
            except (MalformedCaptionError, MalformedFileError, ValueError):
                return f"line {first} (cue {cue}): "
        block = []
    return ""


def read_srt(path: Path) -> Words:
    """An SRT file's words (the `srt` package). Cue times are spread over the words by `spread`;
    markup (<i>, <font ...>, {\\an8}) is stripped. An empty file has no words."""
    import srt

    text = _read_text(path)
    if not text.strip():
        return Words.empty()
    try:
        subs = list(srt.parse(text))
    except srt.SRTParseError as e:
        at = e.expected_start + len(e.unmatched_content) - len(e.unmatched_content.lstrip())
        line = text.count("\n", 0, at) + 1
        bad = e.unmatched_content.strip().splitlines()[0][:60] if e.unmatched_content.strip() else ""
        raise InputError(f"{path}: line {line}: not an SRT cue ({bad!r})") from None
    except srt.TimestampParseError as e:
        raise InputError(f"{path}: {e}") from None
    # srt.parse runs this regex: one match per subtitle, in order (for line numbers and a check
    # srt skips: "00:00:0x,500" reads as 0 s with "x,500" as the line's free-form tail)
    matches = list(srt.SRT_REGEX.finditer(text))
    cues = []
    for k, (sub, m) in enumerate(zip(subs, matches)):
        line = text.count("\n", 0, m.start(2)) + 1
        where = f"{path}: line {line} (subtitle {k + 1 if sub.index is None else sub.index})"
        if m.group(4) and text[m.end(3)] != " ":
            raise InputError(f"{where}: unparseable end time {(m.group(3) + m.group(4)).split()[0]!r}")
        cues.append((sub.content, sub.start.total_seconds(), sub.end.total_seconds(), where))
    return _from_cues(cues, timestamps=False)


def _number(item: dict, key: str, where: str, *, required: bool = True) -> float | None:
    if key not in item:
        if required:
            raise InputError(f"{where}: missing {key!r}")
        return None
    value = item[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where}.{key}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise InputError(f"{where}.{key}: not finite ({value!r})")
    return float(value)


def whisper_words(items: Iterable[tuple[str, Any]], source: str) -> Words:
    """Words from Whisper word dicts {"word", "start", "end", "probability"?}, each with its
    location for messages. Whisper's words carry their leading space and punctuation
    (" Hello,"): cleaned by `clean_word`; a "word" holding several tokens spreads its time
    over them by `spread`; no "probability" means 1.0."""
    text, starts, ends, conf = [], [], [], []
    for where, w in items:
        where = f"{source}: {where}"
        if not isinstance(w, dict):
            raise InputError(f"{where}: expected an object with word, start, end, got {type(w).__name__}")
        word = w.get("word")
        if not isinstance(word, str):
            got = "missing" if "word" not in w else f"expected a string, got {word!r}"
            raise InputError(f"{where}.word: {got}")
        start, end = _number(w, "start", where), _number(w, "end", where)
        if start < 0:
            raise InputError(f"{where}.start: negative ({start})")
        if end < start:
            raise InputError(f"{where}.end: {end} is before start {start}")
        p = _number(w, "probability", where, required=False)
        if p is not None and not 0.0 <= p <= 1.0:
            raise InputError(f"{where}.probability: {p} is outside [0, 1]")
        tokens = [t for t in (clean_word(t) for t in word.split()) if t]
        s, e = spread(tokens, start, end)
        text += tokens
        starts += s.tolist()
        ends += e.tolist()
        conf += [1.0 if p is None else p] * len(tokens)
    return Words.build(text, starts, ends, conf)


def read_whisper_json(path: Path) -> Words:
    """A Whisper JSON transcript with word times (`word_timestamps=True`): openai-whisper's and
    faster-whisper's {"segments": [{..., "words": [{"word", "start", "end", "probability"}]}]},
    or a bare list of such word dicts. A segment without "words" is an error (transcribed
    without word timestamps). An empty file has no words."""
    text = _read_text(path)
    if not text.strip():
        return Words.empty()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: line {e.lineno} column {e.colno}: not JSON ({e.msg})") from None
    if isinstance(data, list):
        return whisper_words(((f"[{j}]", w) for j, w in enumerate(data)), str(path))
    if not isinstance(data, dict) or "segments" not in data:
        raise InputError(f"{path}: expected Whisper JSON: an object with 'segments' or a list of words")
    segments = data["segments"]
    if not isinstance(segments, list):
        raise InputError(f"{path}: segments: expected a list, got {type(segments).__name__}")
    items = []
    for i, seg in enumerate(segments):
        if not isinstance(seg, dict) or not isinstance(seg.get("words"), list):
            raise InputError(f"{path}: segments[{i}]: no 'words' list (transcribe with "
                             "word_timestamps=True)")
        items += [(f"segments[{i}].words[{j}]", w) for j, w in enumerate(seg["words"])]
    return whisper_words(items, str(path))


READERS = {".vtt": read_webvtt, ".srt": read_srt, ".json": read_whisper_json}


def read_transcript(path: Path) -> Words:
    """A transcript file's words, read by its suffix: .vtt (WebVTT), .srt, .json (Whisper)."""
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise InputError(f"{path}: unknown transcript type {path.suffix!r}; known: {', '.join(READERS)}")
    return reader(path)


def transcript_beside(video: Path) -> Path | None:
    """The transcript beside a video, `<stem>.json`, `<stem>.vtt` or `<stem>.srt`, in that order
    of preference when several exist: Whisper JSON times each word, WebVTT may (inline
    timestamps), SRT times only cues. None when there is none."""
    video = Path(video)
    return next((p for p in (video.with_suffix(s) for s in SUFFIXES) if p.is_file()), None)


# -- frames -----------------------------------------------------------------------------------

def frame_spans(words: Words, frame_end: np.ndarray, window_s: float) -> np.ndarray:
    """For each frame, int64 (n, 2) [first, last): the words heard in its window
    (frame_end - window_s, frame_end], word i heard iff start_i < frame_end and
    end_i > frame_end - window_s; first == last when none is.

    `last` is one past the last word starting before the frame's end (starts are sorted);
    `first` is the first word ending after the window's start, found on the running maximum of
    the ends, which is sorted even where words overlap (ends alone are not then). So every
    heard word lies in the range and `first` is heard. A word in it that is not heard is nested
    in an earlier one (starts later, ends sooner: "uh" inside an overlapping speaker's word);
    where no word is nested, slight overlaps included, the range holds exactly the heard words."""
    frame_end = np.asarray(frame_end, np.float64)
    if frame_end.ndim != 1:
        raise ValueError(f"frame_end must be 1-D, got shape {frame_end.shape}")
    if not window_s > 0:
        raise ValueError(f"window_s must be > 0, got {window_s}")
    last = np.searchsorted(words.start, frame_end, side="left")          # start < frame_end
    reach = np.maximum.accumulate(words.end) if len(words) else words.end
    first = np.searchsorted(reach, frame_end - window_s, side="right")   # reach > window start
    # first <= last already (a word ending by the window's start began before the frame's
    # end), and first == last where none is heard; the minimum guards float ties on huge clocks
    first = np.minimum(first, last)
    return np.stack([first, last], axis=1).astype(np.int64)


# -- recognisers ------------------------------------------------------------------------------

def to_asr_rate(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """float32 mono at `sample_rate` -> float32 at 16 kHz (polyphase resampling, scipy)."""
    wave = np.asarray(wave, np.float32)
    if wave.ndim != 1:
        raise ValueError(f"expected mono audio (1-D), got shape {wave.shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
    if sample_rate == ASR_RATE:
        return wave
    from scipy.signal import resample_poly
    g = math.gcd(ASR_RATE, int(sample_rate))
    return resample_poly(wave, ASR_RATE // g, int(sample_rate) // g).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _sphinx_decoder():
    """pocketsphinx's decoder with its default config: the en-us acoustic model, dictionary and
    language model inside its wheel (one per process: loading takes ~0.5 s)."""
    try:
        from pocketsphinx import Decoder
    except ImportError:
        raise JmtError("pocketsphinx is not installed: pip install pocketsphinx") from None
    return Decoder(loglevel="FATAL")  # the default logs every utterance to stderr


def _speech_regions(pcm: np.ndarray) -> list[tuple[float, bytes]]:
    """16 kHz int16 -> (start s, pcm bytes) of each speech region, by pocketsphinx's endpointer
    (its `live` command's way with long audio: one utterance per region keeps the search
    small). Trailing silence lets the endpointer close the last region."""
    from pocketsphinx import Endpointer
    ep = Endpointer(sample_rate=ASR_RATE)
    n = ep.frame_bytes // 2                          # samples per endpointer frame
    tail = int(2 * ep.DEFAULT_WINDOW * ASR_RATE)     # two decision windows of silence
    pcm = np.concatenate([pcm, np.zeros((-len(pcm)) % n + tail // n * n, np.int16)])
    regions, speech, start = [], [], 0.0
    for k in range(0, len(pcm), n):
        out = ep.process(pcm[k:k + n].tobytes())
        if out is None:
            continue
        if not speech:
            start = ep.speech_start
        speech.append(out)
        if not ep.in_speech:
            regions.append((start, b"".join(speech)))
            speech = []
    if speech:
        regions.append((start, b"".join(speech)))
    return regions


def recognise_pocketsphinx(wave: np.ndarray, sample_rate: int) -> Words:
    """English words heard in a mono track, by pocketsphinx 5 with its bundled default model.

    Times come from the decoder's word segmentation (frames at its `frate`, 100/s; a segment's
    end frame is inclusive), offset by the speech region's start and kept inside the track.
    Confidence is the segment's posterior probability from the lattice (the `bestpath` search,
    on by default); pocketsphinx's Python API already returns it linear (`logmath_exp`, see
    its cython/_pocketsphinx.pyx `Segment.create`), clipped to [0, 1] against rounding.
    Silence and fillers (<s>, </s>, <sil>, [NOISE]) are dropped, alternate pronunciations
    ("read(2)") named by their word."""
    audio = to_asr_rate(wave, sample_rate)
    duration = len(audio) / ASR_RATE
    decoder = _sphinx_decoder()
    frate = float(decoder.config["frate"])
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
    text, starts, ends, conf = [], [], [], []
    for offset, region in _speech_regions(pcm):
        decoder.start_utt()
        decoder.process_raw(region, full_utt=True)
        decoder.end_utt()
        for seg in decoder.seg() or ():
            if seg.word.startswith(SPHINX_FILLERS):
                continue
            word = clean_word(re.sub(r"\(\d+\)$", "", seg.word))
            if not word:
                continue
            text.append(word)
            starts.append(min(offset + seg.start_frame / frate, duration))
            ends.append(min(offset + (seg.end_frame + 1) / frate, duration))
            conf.append(min(max(seg.prob, 0.0), 1.0))
    return Words.build(text, starts, ends, conf)


def recogniser_version(recogniser: str = "pocketsphinx") -> dict[str, str]:
    """What made a recognised transcript, for the cache's provenance attributes:
    {"recogniser", "package", "version", "model"}."""
    known = {"pocketsphinx": ("pocketsphinx", "en-us (bundled)"),
             "whisper": ("faster-whisper", "as given to recognise_whisper")}
    if recogniser not in known:
        raise JmtError(f"unknown recogniser {recogniser!r}; known: {', '.join(known)}")
    package, model = known[recogniser]
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        raise JmtError(f"{package} is not installed: pip install {package}") from None
    return {"recogniser": recogniser, "package": package, "version": version, "model": model}


def _hub_offline() -> bool:
    # read now, not at import (huggingface_hub reads it once); its own list of true values
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _whisper_model_dir(model: str | Path) -> str:
    """A local faster-whisper (CTranslate2) model directory: `model` itself, or the Hub copy
    of a model name ("small") or id ("Systran/faster-whisper-small"), cached or downloaded
    (never downloaded when HF_HUB_OFFLINE is set). A Path must be a directory."""
    if Path(model).is_dir():
        return str(model)
    if isinstance(model, Path):
        raise JmtError(f"{model}: no such whisper model directory")
    from faster_whisper.utils import available_models, download_model
    if "/" not in str(model) and str(model) not in available_models():
        raise JmtError(f"whisper model {str(model)!r}: not a local directory nor a model name; "
                       f"names: {', '.join(available_models())}, or a Hub id (owner/name)")
    offline = _hub_offline()
    try:
        return download_model(str(model), local_files_only=offline)
    except Exception as e:  # the Hub's errors are many (not cached, HTTP, network, no such repo)
        why = ("not in the Hugging Face cache and HF_HUB_OFFLINE is set, so not downloaded"
               if offline else f"could not fetch it ({type(e).__name__}: {str(e)[:200]})".replace("\n", " "))
        raise JmtError(f"whisper model {str(model)!r}: not a local directory; {why}") from None


@functools.lru_cache(maxsize=1)
def _whisper_model(path: str, device: str, compute_type: str):
    from faster_whisper import WhisperModel
    try:
        return WhisperModel(path, device=device, compute_type=compute_type)
    except (RuntimeError, ValueError, OSError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise JmtError(f"{path}: cannot load it as a faster-whisper model ({why})") from None


def recognise_whisper(wave: np.ndarray, sample_rate: int, model: str | Path, device: str = "cpu",
                      compute_type: str = "int8", *, language: str | None = None) -> Words:
    """Words heard in a mono track by faster-whisper (an optional install) with word times
    (`word_timestamps=True`), its word probabilities as confidences. `model`: a local
    CTranslate2 model directory, or a model name/Hub id (see `_whisper_model_dir`);
    `language` None: detected."""
    try:
        import faster_whisper  # noqa: F401  (optional: only this recogniser needs it)
    except ImportError:
        raise JmtError("faster-whisper is not installed: pip install faster-whisper "
                       "(or use the pocketsphinx recogniser)") from None
    audio = to_asr_rate(wave, sample_rate)
    whisper = _whisper_model(_whisper_model_dir(model), device, compute_type)
    segments, _ = whisper.transcribe(audio, word_timestamps=True, language=language)
    items = [(f"segment {i} word {j}", {"word": w.word, "start": w.start, "end": w.end,
                                        "probability": w.probability})
             for i, seg in enumerate(segments) for j, w in enumerate(seg.words or ())]
    return whisper_words(items, f"faster-whisper ({model})")


# -- evaluation -------------------------------------------------------------------------------

def word_error_rate(reference: list[str], hypothesis: list[str]) -> float:
    """(S + D + I) / N: substitutions, deletions and insertions of the fewest edits (Levenshtein
    over words) turning the reference into the hypothesis, N the reference's word count. Words
    are compared lower-cased with punctuation stripped (`clean_word`); items holding spaces are
    split. It can exceed 1 (insertions); an empty reference gives 0.0, or inf against words."""
    def norm(words: list[str]) -> list[str]:
        return [c for w in words for c in (clean_word(t).lower() for t in w.split()) if c]

    ref, hyp = norm(reference), norm(hypothesis)
    if not ref:
        return 0.0 if not hyp else math.inf
    row = list(range(len(hyp) + 1))  # edits from ref[:i] to hyp[:j], one row at a time
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / len(ref)
