"""How well does each audio mask (`audio.mask`: energy | vad) find the voice? Frame-level
precision and recall of "voice present" against the demo generator's ground truth.

Runs the real audio stage (`jmt audio`, params.yaml's audio section) on a demo corpus
(generated with `jmt demo`'s Python API when the folder holds none), then, from the cached
per-frame scores (`energy_db`, `vad_prob`) and the stage's own mask function, builds both
masks and compares them with the truth in corpus.json:

- truth "voice present" = inside the audio track and outside the video's `audio_gap` (the
  stretch made silent or drowned in white noise, generate.py / voice.degrade). Pauses
  between syllables count as voice: the per-frame emotion model needs "the speaker is
  talking in this stretch", not "a vowel sounds in this frame".

Also (when `espeak-ng` is installed) the same on real synthetic speech: sentences by
espeak-ng, with a 3 s silence and a 3 s white-noise stretch between them, as a video.

    python bench/voice_activity.py --corpus /tmp/demo_full --out docs/bench/voice_activity.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))      # bench/: common.py
from common import REPO, write_json  # noqa: E402

from pipeline import cache  # noqa: E402
from pipeline.config import Params, load_params  # noqa: E402
from pipeline.demo.generate import generate_demo  # noqa: E402
from pipeline.media import VideoWriter, read_audio, write_wav  # noqa: E402
from pipeline.stage1.audio import run_audio  # noqa: E402
from pipeline.stage1.voice import frame_spans, vad_frame_probs, voice_mask  # noqa: E402

MASKS = ("energy", "vad", "silero_only")  # silero_only: vad without vad_voicing (for comparison)


def with_corpus(base: Params, corpus: Path, work: Path) -> Params:
    """params.yaml pointed at `corpus`, the audio cache under `work`."""
    return base.updated(corpus={"root": str(corpus), "layout": "affwild2"},
                        audio={"out": str(work / "audio"), "on_error": "fail"})


FILLS = (0.0, 0.5, 1.0, 1.5)  # fill_gaps_s values swept (s)


def silero_only(f: h5py.File, params: Params, video: Path) -> np.ndarray:
    """The vad score without the voicing term (silero-vad alone), from the video's track."""
    cfg = params.audio
    starts, stops = frame_spans(f["timestamps"][...], float(f.attrs["fps"]))
    return vad_frame_probs(read_audio(video, cfg.sample_rate), cfg.sample_rate, starts, stops,
                           with_voicing=False, min_db=cfg.energy_db)


def masks_of(f: h5py.File, params: Params, silero: np.ndarray, fill: float | None = None) -> dict[str, np.ndarray]:
    """The masks from one audio cache file's scores (and the silero-only score), with the
    stage's own function; gaps filled up to `fill` s (default: params' fill_gaps_s)."""
    cfg = params.audio
    times, inside = f["timestamps"][...], f["audio_valid"][...]
    starts, stops = frame_spans(times, float(f.attrs["fps"]))
    scores = {"energy": (f["energy_db"][...], cfg.energy_db), "vad": (f["vad_prob"][...], cfg.vad_threshold),
              "silero_only": (silero, cfg.vad_threshold)}
    gap = cfg.fill_gaps_s if fill is None else fill
    out = {m: voice_mask(s, thr, inside, starts, stops, gap) for m, (s, thr) in scores.items()}
    if fill is None and not np.array_equal(out[cfg.mask], f["voice"][...]):
        raise AssertionError(f"{f.filename}: recomputed {cfg.mask} mask differs from the cached `voice`")
    return out


def scores(truth: np.ndarray, pred: np.ndarray) -> dict:
    """Frame counts and precision / recall of `pred` against `truth` (bool arrays)."""
    tp, fp, fn = int((truth & pred).sum()), int((~truth & pred).sum()), int((truth & ~pred).sum())
    return {"frames": int(len(truth)), "true_voice": int(truth.sum()), "tp": tp, "fp": fp, "fn": fn,
            "precision": round(tp / max(tp + fp, 1), 4), "recall": round(tp / max(tp + fn, 1), 4)}


def demo_truth(video: dict, n: int) -> np.ndarray:
    truth = np.ones(n, bool)
    for a, b in video["audio_gap"]:
        truth[a:b] = False
    return truth


def bench_demo(params: Params, corpus: Path, work: Path) -> dict:
    """Runs the audio stage on the corpus and scores both masks, overall and per gap kind."""
    t0 = time.time()
    result = run_audio(params)
    seconds = time.time() - t0
    videos = json.loads((corpus / "corpus.json").read_text())["videos"]
    truth_all, pred_all, kinds = [], {m: [] for m in MASKS}, {}
    sweep = {fill: {m: [] for m in MASKS} for fill in FILLS}
    for v in videos:  # one entry per video: the two people of demo_00 share its track
        name = v["name"] if len(v["persons"]) == 1 else f"{v['name']}_{v['persons'][0]['side']}"
        with cache.open_entry(cache.entry_path(params.path(params.audio.out), name)) as f:
            silero = silero_only(f, params, corpus / v["video"])
            pred = masks_of(f, params, silero)
            for fill in FILLS:
                for m, mask in masks_of(f, params, silero, fill).items():
                    sweep[fill][m].append(mask)
        truth = demo_truth(v, len(pred["vad"]))
        truth_all.append(truth)
        for m in MASKS:
            pred_all[m].append(pred[m])
        kinds.setdefault(v["audio_gap_mode"], []).append((truth, pred))
    truth = np.concatenate(truth_all)
    out = {m: scores(truth, np.concatenate(pred_all[m])) for m in MASKS}
    for kind, rows in sorted(kinds.items()):
        t = np.concatenate([r[0] for r in rows])
        for m in MASKS:
            out[m][f"videos_with_{kind}_gap"] = scores(t, np.concatenate([r[1][m] for r in rows]))
    audio_s = sum(v["n_frames"] / v["fps"] for v in videos)
    swept = {f"fill_gaps_s={fill}": {m: {k: v for k, v in scores(truth, np.concatenate(masks[m])).items()
                                         if k in ("precision", "recall")} for m in MASKS}
             for fill, masks in sweep.items()}
    return {"videos": len(videos), "audio_seconds": round(audio_s, 1),
            "audio_stage_seconds": round(seconds, 1), "masks": out, "fill_gaps_sweep": swept}


SENTENCES = ["The quick brown fox jumps over the lazy dog, and then it runs away into the woods.",
             "I am really happy to see you today. I hope that everything goes well with your project.",
             "Let us talk about the weather for a while, because it has been raining all week long."]


def bench_espeak(params: Params, work: Path) -> dict | None:
    """espeak-ng sentences | 3 s silence | sentence | 3 s white noise | sentence, as a video;
    truth = from each sentence's first to last sample above -50 dBFS (its pauses included)."""
    if shutil.which("espeak-ng") is None:
        return None
    sr, fps = params.audio.sample_rate, 25.0
    rng = np.random.default_rng(0)
    parts, truth_spans, t = [], [], 0
    for k, text in enumerate(SENTENCES):
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "s.wav"
            subprocess.run(["espeak-ng", "-w", str(wav), "-s", "150", text], check=True)
            speech = read_audio(wav, sr)
        speech = 0.5 * speech / (np.abs(speech).max() + 1e-9)
        loud = np.flatnonzero(np.abs(speech) > 10 ** (-50 / 20))
        truth_spans.append((t + loud[0], t + loud[-1]))
        parts.append(speech)
        t += len(speech)
        if k < 2:  # a silent stretch, then a noise stretch
            gap = (0.35 if k == 1 else 0.0) * rng.standard_normal(3 * sr)
            parts.append(gap.astype(np.float32))
            t += len(gap)
    audio = np.concatenate(parts) + (1e-3 * rng.standard_normal(t)).astype(np.float32)
    folder = work / "espeak" / "videos" / "batch1"
    folder.mkdir(parents=True, exist_ok=True)
    n = int(len(audio) / sr * fps)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "a.wav"
        write_wav(wav, np.clip(audio, -1, 1), sr)
        with VideoWriter(folder / "speech.mp4", 64, 48, fps, audio_wav=wav) as w:
            for _ in range(n):
                w.write(np.zeros((48, 64, 3), np.uint8))
    manifest = work / "espeak" / "manifest.csv"
    manifest.write_text(f"video,annotation,split,name\n{folder / 'speech.mp4'},,train,speech\n")
    p = params.updated(corpus={"layout": "manifest", "manifest": str(manifest)},
                       audio={"out": str(work / "espeak" / "audio")})
    run_audio(p)
    with cache.open_entry(cache.entry_path(p.path(p.audio.out), "speech")) as f:
        pred = masks_of(f, p, silero_only(f, p, folder / "speech.mp4"))
        times = f["timestamps"][...]
    mid = (times + 0.5 / fps) * sr
    truth = np.zeros(len(times), bool)
    for a, b in truth_spans:
        truth |= (mid >= a) & (mid < b)
    return {"seconds": round(len(audio) / sr, 1), "masks": {m: scores(truth, pred[m]) for m in MASKS}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path("/tmp/demo_full"),
                    help="a demo corpus (generated there, full size, when the folder holds none)")
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--work", type=Path, default=Path("/tmp/jmt-voice-activity"))
    ap.add_argument("--out", type=Path, default=REPO / "docs/bench/voice_activity.json")
    args = ap.parse_args()
    base = load_params(args.params)
    if not (args.corpus / "corpus.json").is_file():
        generate_demo(base.demo, args.corpus)
    shutil.rmtree(args.work, ignore_errors=True)
    params = with_corpus(base, args.corpus.resolve(), args.work)
    report = {"corpus": str(args.corpus), "params": base.audio.model_dump(exclude={"out", "on_error"}),
              "truth": "voice present = inside the track and outside the generator's audio_gap "
                       "(syllable pauses count as voice)",
              "demo": bench_demo(params, args.corpus, args.work), "espeak": bench_espeak(params, args.work)}
    write_json(args.out, report)
    for part in ("demo", "espeak"):
        if report[part] is None:
            print(f"{part}: skipped (espeak-ng not installed)")
            continue
        for m, s in report[part]["masks"].items():
            extra = "  ".join(f"{k[12:]}: P {v['precision']:.3f} R {v['recall']:.3f}"
                              for k, v in s.items() if k.startswith("videos_with_"))
            print(f"{part:7} {m:7} precision {s['precision']:.3f}  recall {s['recall']:.3f}  "
                  f"({s['frames']} frames, {s['true_voice']} with voice)  {extra}")
    for fill, row in report["demo"]["fill_gaps_sweep"].items():
        print(f"demo    {fill:16} " + "  ".join(f"{m}: P {v['precision']:.3f} R {v['recall']:.3f}"
                                                 for m, v in row.items()))
    print(f"audio stage: {report['demo']['audio_stage_seconds']} s for {report['demo']['audio_seconds']} s "
          f"of audio in {report['demo']['videos']} videos -> {args.out}")


if __name__ == "__main__":
    main()
