"""Stage 1 frame by frame: the live twin of `jmt faces`, `jmt audio` and `jmt embed`.

Every value is computed by stage 1's own rules from what has arrived so far, so a frame's
features are the ones the offline cache holds for it, with these differences, all forced by
having no future (docs/live.md):

- faces: MTCNN one frame at a time on every `faces.detect_every`-th frame, the last keyframe's
  face held in between (offline interpolates between keyframes, which needs the next one);
  while no face is held, every frame is detected. `detect_every: 1` detects every frame;
- the audio mask: a voiced stretch is held for up to `audio.fill_gaps_s` after it (a hangover),
  where offline fills only gaps that voice closes within that time, which needs the future;
- frame t's audio is what plays until the next frame (stage 1's rule): the frame is processed
  once the next frame's time and that audio (plus half an STFT window) have arrived.

With `faces.detect_every: 1`, `faces.batch_size: 1`, `embed.batch_size: 1` and
`audio.fill_gaps_s: 0` the offline stage 1 computes the same thing batch for batch, and the
features agree with the cache (tests/infer/live/test_live.py).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.config import Params
from pipeline.device import resolve_device
from pipeline.errors import InputError
from pipeline.infer.live.source import SourceInfo
from pipeline.media import place_track, track_shift
from pipeline.stage1 import audio as audio_stage
from pipeline.stage1 import clips
from pipeline.stage1.align import warp_crops
from pipeline.stage1.audio import LOG_FLOOR, mel_spectrogram, sample_windows, window_frames
from pipeline.stage1.detect import Detector, Face, PersonTrack
from pipeline.stage1.embed import Backbones, embed_frames, frame_input, stream_mask
from pipeline.stage1.faces import align_faces, jpeg_roundtrip
from pipeline.stage1.voice import MAX_LAG, VAD_CHUNK, VAD_RATE, SileroStream, chunk_scores, frame_means


@dataclass
class FrameOut:
    """One frame's stage-1 result."""

    features: dict[str, np.ndarray]   # stream -> (D,) float32 (float16-rounded, as the cache stores)
    masks: dict[str, bool]
    box: list[float] | None           # the face box, frame pixels
    audio: bool                       # inside the track and voiced (the audio streams' mask)


@dataclass
class Track:
    """The audio track's recent samples on the frames' clock: `samples[i]` is track sample
    `base + i`; `ended`: nothing follows them. Older samples are released as frames go by
    (RETAIN_S), so memory and per-frame work stay flat however long the source plays."""

    samples: np.ndarray
    base: int
    ended: bool

    @property
    def n(self) -> int:
        """Track samples so far."""
        return self.base + len(self.samples)

    def get(self, start: int, stop: int) -> np.ndarray:
        """Track samples [start, stop) that exist (none before `base` are asked for)."""
        return self.samples[max(start - self.base, 0):max(stop - self.base, 0)]


RETAIN_S = 1.0   # audio kept before a frame's own window (window_s): its logmel, VAD and waveform reads


class LiveAudio:
    """The audio track as it arrives: the stage-1 log-mel spectrogram frame by frame, the frame
    windows, the energy and the voice mask."""

    def __init__(self, params: Params, info: SourceInfo) -> None:
        cfg = self.cfg = params.audio
        self.sr = cfg.sample_rate
        self.width = window_frames(params)
        self.mel = mel_spectrogram(params, center=False)   # frames cut here, padding rebuilt as offline
        self.hop, self.n_fft = self.mel.hop_length, self.mel.n_fft
        self.info = info
        self.spec: dict[int, np.ndarray] = {}    # spectrogram frame -> (n_mels,) log-mel (recent ones)
        self.vad_scores: list[float] = []        # per 32 ms chunk (mask: vad), from chunk vad_first
        self.vad_first = 0
        self.gap_start: float | None = None      # hangover: where the current unvoiced stretch began
        self.voiced_before = False
        if cfg.mask == "vad":
            if self.sr != VAD_RATE:
                raise InputError(f"jmt live: audio.mask vad needs audio.sample_rate {VAD_RATE} (the checkpoint "
                                 f"has {self.sr}); use a checkpoint trained with it, or audio.mask energy")
            self.vad = SileroStream()

    # ---- the track: ffmpeg's samples, placed on the frames' clock as read_audio does ------

    def track(self, raw: np.ndarray, raw_base: int, ended: bool) -> Track:
        """ffmpeg's samples (`raw[i]` is its sample `raw_base + i`) on the frames' clock, as
        the audio stage places them (media.place_track)."""
        x, base, capped = place_track(raw, raw_base, audio_start=self.info.audio_start,
                                                  audio_end=self.info.audio_end, sr=self.sr)
        return Track(x, base, ended or capped)

    @property
    def shift(self) -> int:
        """Track sample = ffmpeg's sample + shift (the track's start on the frames' clock)."""
        return track_shift(self.info.audio_start, self.sr)

    def release_before(self, t: float) -> int:
        """ffmpeg's first sample a frame at or after `t` can still read."""
        return max(int((t - self.cfg.window_s - RETAIN_S) * self.sr) - self.shift, 0)

    def needed(self, t: float, stop: float) -> int:
        """Samples (ffmpeg's, from the track's start) frame [t, stop) needs before it is final."""
        end = self._window_end(t, None)
        need = (end - 1) * self.hop + self.n_fft // 2 + 1                   # the last spectrogram frame
        need = max(need, int(stop * self.sr) + 1)                            # the energy span
        if self.cfg.mask == "vad":
            chunks = int(np.ceil(stop * VAD_RATE / VAD_CHUNK)) + 1
            need = max(need, chunks * VAD_CHUNK + MAX_LAG)
        return need - self.shift

    def _window_end(self, t: float, n_spec: int | None) -> int:
        """audio.window_ends of frame t (`n_spec` None: the track is still playing)."""
        return int(audio_stage.window_ends(np.array([t]), self.info.fps, self.cfg.hop_ms / 1000.0, n_spec)[0])

    # ---- one frame -------------------------------------------------------------------------

    def frame(self, x: Track, t: float, stop: float) -> tuple[np.ndarray, bool]:
        """Frame [t, stop)'s log-mel window (width, n_mels) and its audio mask, from the track
        so far."""
        n, ended = x.n, x.ended
        n_spec = (1 + n // self.hop if n else 0) if ended else None   # the spectrogram's length, once known
        window = self._window(x, self._window_end(t, n_spec))
        # a track still playing goes on past t (its samples were waited for)
        inside = bool(audio_stage.inside_track(np.array([t]), self.info.fps, self.info.audio_start,
                                               n / self.sr if ended else np.inf, n > 0)[0])
        level = audio_stage.level_db(x.get(*audio_stage.frame_samples(t, stop, self.sr)))
        if self.cfg.mask == "vad":
            score, threshold = float(self._vad(x, t, stop)), self.cfg.vad_threshold
        else:
            score, threshold = level, self.cfg.energy_db
        voiced = score > threshold and inside
        return window, self._hold(voiced, inside, t, stop)

    def _window(self, x: Track, end: int) -> np.ndarray:
        """Spectrogram rows [end - width, end), silence (log floor) before the track."""
        rows = range(end - self.width, end)
        todo = [k for k in rows if k >= 0 and k not in self.spec]
        if todo:
            k0, k1 = todo[0], todo[-1] + 1
            p = self.n_fft // 2
            j = np.arange(k0 * self.hop, (k1 - 1) * self.hop + self.n_fft) - p   # sample index per padded position
            j = np.abs(j)                                                         # reflect at the start
            if x.ended:
                j = np.where(j >= x.n, 2 * (x.n - 1) - j, j)                     # reflect at the end
            seg = torch.as_tensor(x.samples[np.clip(j, x.base, max(x.n - 1, 0)) - x.base])
            with torch.no_grad():
                spec = torch.log(self.mel(seg) + LOG_FLOOR).T.numpy()           # (k1 - k0, n_mels)
            for k in range(k0, k1):
                self.spec[k] = spec[k - k0]
        for k in [k for k in self.spec if k < end - self.width]:
            del self.spec[k]
        floor = np.full(self.cfg.n_mels, np.log(LOG_FLOOR), np.float32)
        return np.stack([self.spec[k] if k >= 0 else floor for k in rows]).astype(np.float32)

    def _vad(self, x: Track, t: float, stop: float) -> float:
        """The frame's mean VAD score: silero (its state carried chunk to chunk, as offline) and
        voicing per 32 ms chunk, averaged over [t, stop) (voice.frame_means' rule, over the
        recent chunks: the older ones are let go)."""
        n_chunks = -(-x.n // VAD_CHUNK) if x.ended else x.n // VAD_CHUNK
        upto = min(n_chunks, int(np.ceil(stop * VAD_RATE / VAD_CHUNK)) + 1)
        c = self.vad_first + len(self.vad_scores)                  # the first chunk not scored yet
        if upto > c:   # chunks [c, upto), and what voicing reads after them
            self.vad_scores.extend(chunk_scores(self.vad, x.get(c * VAD_CHUNK, upto * VAD_CHUNK + MAX_LAG), upto - c,
                                                with_voicing=self.cfg.vad_voicing, min_db=self.cfg.energy_db))
        step = VAD_CHUNK / VAD_RATE
        drop = max(int(t / step) - 1 - self.vad_first, 0)          # chunks ending before this frame
        del self.vad_scores[:drop]
        self.vad_first += drop
        t0 = self.vad_first * step                                 # the kept chunks' start
        return frame_means(np.asarray(self.vad_scores, np.float32), step, np.array([t - t0]), np.array([stop - t0]))[0]

    def _hold(self, voiced: bool, inside: bool, t: float, stop: float) -> bool:
        """The causal gap fill: after voice, unvoiced frames count as voiced until the gap
        reaches `fill_gaps_s` (offline fills a gap only if voice closes it in time)."""
        if voiced:
            self.gap_start, self.voiced_before = None, True
            return True
        if not inside or not self.voiced_before:
            self.gap_start = None
            return False
        if self.gap_start is None:
            self.gap_start = t
        return stop - self.gap_start < self.cfg.fill_gaps_s


NOT_LIVE = {"files": "features another tool wrote into files", "words": "a transcript"}


class LiveStage1:
    """Per-frame faces, audio and every stream's backbone of a checkpoint's stage-1 params."""

    def __init__(self, params: Params, info: SourceInfo) -> None:
        self.params, self.info = params, info
        cfg = params.faces
        if cfg.source != "mtcnn":
            raise InputError(f"jmt live: faces.source {cfg.source!r} reads Aff-Wild2's own crops; live needs mtcnn")
        self.detector = Detector(device=resolve_device(cfg.device), max_side=cfg.detect_max_side,
                                 min_face_size=cfg.min_face_size)
        self.track = PersonTrack(None, info.width, cfg.min_prob)
        self.every, self.count, self.held = cfg.detect_every, 0, None   # keyframes, and the face held between them
        self.size = cfg.crop_size
        self.nets = Backbones(params)
        for name, kind in self.nets.inputs.items():
            if kind in ("files", "words"):
                raise InputError(f"jmt live: stream {name} reads {NOT_LIVE[kind]}, which a live source does "
                                 "not have; train a model without it for live use")
        self.audio = LiveAudio(params, info)
        span = max([net.clip * net.clip_stride for name, net in self.nets.nets.items()
                    if self.nets.inputs[name] == "clips"] or [1])
        self.crops: collections.deque[np.ndarray] = collections.deque(maxlen=span)
        self.found: collections.deque[bool] = collections.deque(maxlen=span)
        for name, net in self.nets.nets.items():
            if self.nets.inputs[name] == "waveform" and int(net.sample_rate) != self.audio.sr:
                raise InputError(f"jmt live: stream {name} reads the waveform at {net.sample_rate} Hz, the "
                                 f"checkpoint's audio is at {self.audio.sr} Hz; live does not resample")

    def built(self) -> dict[str, tuple[str, str]]:
        """Stream -> (backbone, its weights' sha256) as built here, in stream order (what
        `Trained.check_backbones` compares with the checkpoint's)."""
        return {name: (bp.name, self.nets.sha[name]) for name, bp in self.params.embed.streams.items()}

    def warm_up(self) -> None:
        """Runs MTCNN, the alignment and every backbone once on blank input (state untouched)."""
        rgb = np.zeros((self.info.height, self.info.width, 3), np.uint8)
        self.detector(rgb[None])
        crops = warp_crops(torch.from_numpy(rgb[None].copy()), np.eye(2, 3)[None], self.size).numpy()
        jpeg_roundtrip(crops, np.ones(1, bool), self.params.faces.jpeg_quality)
        for name, net in self.nets.nets.items():
            one = frame_input(self.nets.inputs[name], net, self.params)
            if one is not None:   # the waveform backbones are not warmed up
                shape, dtype = one
                self.nets.run(net, np.zeros((1, *shape), dtype))

    def face(self, rgb: np.ndarray) -> tuple[np.ndarray, bool, list[float] | None]:
        """(the aligned crop as the cache returns it, found, box) of one frame."""
        if self.every == 1 or self.count % self.every == 0 or self.held is None:
            face = self.held = self.track.choose(self.detector(rgb[None])[0])
        else:
            face = Face(self.held.box, self.held.landmarks, self.held.prob, detected=False)
        self.count += 1
        crops, found = align_faces(torch.from_numpy(rgb[None].copy()), [face], self.size)
        crops = jpeg_roundtrip(crops, found, self.params.faces.jpeg_quality)
        return crops[0], bool(found[0]), [float(v) for v in face.box] if found[0] else None

    def frame(self, rgb: np.ndarray, t: float, stop: float, x: Track) -> FrameOut:
        """Every stream's features for frame [t, stop) (`x`: the audio track so far)."""
        crop, found, box = self.face(rgb)
        self.crops.append(crop)
        self.found.append(found)
        window, voiced = self.audio.frame(x, t, stop)
        feats, masks = {}, {}
        for name, y in embed_frames(self.nets, _FrameInputs(self, window, x, t)).items():
            if not np.isfinite(y).all():
                raise InputError(f"jmt live: the {name} stream's backbone gave NaN/inf at {t:.3f} s")
            feats[name] = y[0].astype(np.float16).astype(np.float32)
            masks[name] = bool(stream_mask(self.nets.inputs[name], found, voiced))
        return FrameOut(feats, masks, box, voiced)


class _FrameInputs:
    """Frame t's backbone inputs (embed.FrameInputs), a batch of one, from what has arrived:
    `window` its log-mel window, `x` the audio track so far."""

    def __init__(self, stage1: LiveStage1, window: np.ndarray, x: Track, t: float) -> None:
        self.s, self.window, self.x, self.t = stage1, window, x, t

    def crops(self) -> np.ndarray:
        return self.s.crops[-1][None]

    def clips(self, k: int, stride: int) -> np.ndarray:
        found, crops = self.s.found, self.s.crops
        idx = clips.clip_indices(np.array(found), k, stride, len(found) - 1)[0]        # (k,) into the kept crops
        return np.stack([crops[i] if i >= 0 else np.zeros_like(crops[-1]) for i in idx])[None]

    def logmel(self) -> np.ndarray:
        return self.window[None]

    def track(self, name: str, net: torch.nn.Module) -> np.ndarray:
        """A waveform stream's features: its backbone on the window of samples ending with the
        frame, from the track so far (LiveStage1 refuses the files and words streams)."""
        s = self.s
        (start, end), = sample_windows(np.array([self.t]), s.info.fps, s.params.audio.window_s, s.audio.sr)
        lo = max(0, int(start))
        with torch.no_grad():
            return net(torch.as_tensor(self.x.get(lo, end)).to(s.nets.device),
                       torch.as_tensor([[start - lo, end - lo]])).float().cpu().numpy()
