"""Audio extractors: frames/s of each audio backbone at 15 fps video on this CPU, pitch
accuracy of `prosody` against torchaudio's detect_pitch_frequency, and the size of the
waveform cache per hour of audio. Numbers -> JSON + stdout.

    python bench/audio_extractors.py --out docs/bench/audio_extractors.json

The signal is the demo voice (pipeline/demo/voice.py: harmonic source, formants, syllables
and pauses, arousal swinging so pitch, level and rate vary) over a -60 dB noise floor.
Every extractor is timed on the same audio in one run, each twice (the better run is kept:
the machine is shared); wall and CPU seconds are both reported, with the load average.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))      # bench/: common.py
from common import REPO, write_json  # noqa: E402

SR, FPS = 16000, 15.0


def demo_voice(seconds: float, seed: int = 0, base_f0: float = 150.0, arousal: float | None = None) -> np.ndarray:
    """The demo speaker over a noise floor; arousal swings over +-1 every 20 s unless fixed."""
    from pipeline.demo import voice

    n = int(seconds * FPS)
    t = np.arange(n) / FPS
    aro = np.sin(2 * np.pi * t / 20.0) if arousal is None else np.full(n, arousal)
    rng = np.random.default_rng(seed)
    wave = voice.synthesize(np.zeros(n), aro, np.full(n, base_f0), FPS, SR, rng)
    return wave + voice.noise_floor(len(wave), rng)


def windows(seconds: float) -> tuple[np.ndarray, np.ndarray]:
    from pipeline.stage1.audio import sample_windows

    ts = np.arange(int(seconds * FPS)) / FPS
    return ts, sample_windows(ts, FPS, 1.0, SR)


def timed(fn, repeats: int = 2) -> tuple[float, float, object]:
    """Best wall and CPU seconds of `repeats` runs (after one untimed warm-up on the same input)."""
    best_wall = best_cpu = float("inf")
    out = None
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        best_wall = min(best_wall, time.perf_counter() - w)
        best_cpu = min(best_cpu, time.process_time() - c)
    return best_wall, best_cpu, out


def bench_speed(seconds_fast: float, seconds_ssl: float) -> dict:
    from pipeline.config import BackboneParams, load_params
    from pipeline.stage1.audio import logmel, window_frames
    from pipeline.stage1.backbones import build_backbone
    from pipeline.stage1.embed import audio_windows

    params = load_params(REPO / "params.yaml")
    out = {}
    for name, seconds in [("logmel_stats", seconds_fast), ("prosody", seconds_fast), ("egemaps", seconds_fast),
                          ("wav2vec2_base", seconds_ssl), ("wavlm_base", seconds_ssl)]:
        wave = demo_voice(seconds)
        ts, win = windows(seconds)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bp = BackboneParams(name=name, allow_random=name.endswith("_base"))
            net = build_backbone(bp, REPO)
        if name == "logmel_stats":  # what `jmt audio` + `jmt embed` do: spectrogram, then windows of it
            cfg = params.audio
            hop = cfg.hop_ms / 1000.0
            frame_end = np.clip(np.floor((ts + 1 / FPS) / hop + 1e-9).astype(np.int64) + 1, 0, None)

            def job():
                spec = logmel(wave, params)
                res = [net(torch.as_tensor(audio_windows(spec, frame_end[a:a + 128], window_frames(params), 1e-6)))
                       for a in range(0, len(ts), 128)]
                return torch.cat(res)
        else:
            def job():
                return net(torch.as_tensor(wave), torch.as_tensor(win))
        with torch.no_grad():
            job()  # warm-up
            wall, cpu, res = timed(job)
        assert res.shape[0] == len(ts) and torch.isfinite(res).all()
        out[name] = {"audio_s": seconds, "frames": len(ts), "dim": int(res.shape[1]), "wall_s": round(wall, 3),
                     "cpu_s": round(cpu, 3), "frames_per_s_wall": round(len(ts) / wall, 1),
                     "frames_per_s_cpu": round(len(ts) / cpu, 1),
                     "x_realtime_wall": round(seconds / wall, 1)}
        print(name, out[name], flush=True)
    # the alternative not taken: openSMILE's own 88 eGeMAPS functionals, one run per 1 s window
    from pipeline.stage1.backbones.egemaps import smile

    func, wave = smile("functionals"), demo_voice(10.0)
    _, win = windows(10.0)
    win = win[15:45]
    wall, cpu, _ = timed(lambda: [func.process_signal(wave[s:e], SR) for s, e in win])
    out["egemaps_88_functionals_per_window"] = {
        "frames": len(win), "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
        "frames_per_s_wall": round(len(win) / wall, 1), "frames_per_s_cpu": round(len(win) / cpu, 1)}
    print("egemaps_88_functionals_per_window", out["egemaps_88_functionals_per_window"], flush=True)
    return out


def bench_pitch() -> dict:
    """Per-window F0 error on the demo voice at fixed pitch (arousal 0: F0 = base +-2% vibrato):
    prosody's YIN vs torchaudio.functional.detect_pitch_frequency (median over the window)."""
    import torchaudio

    from pipeline.stage1.backbones.prosody import FEATURES, Prosody

    res = {}
    for f0 in (100.0, 150.0, 250.0):
        wave = demo_voice(6.0, seed=1, base_f0=f0, arousal=0.0)
        ts, win = windows(6.0)
        with torch.no_grad():
            feats = Prosody()(torch.as_tensor(wave), torch.as_tensor(win)).numpy()[15:]
        yin = 27.5 * 2 ** feats[:, FEATURES.index("f0_mean")]
        track = torchaudio.functional.detect_pitch_frequency(torch.as_tensor(wave)[None], SR, frame_time=0.01,
                                                             freq_low=50).numpy()[0]   # one value per 10 ms
        rows = np.arange(len(track)) * 0.01
        naive = np.array([np.median(track[(rows >= s / SR) & (rows < e / SR)]) for s, e in win[15:]])
        rel = lambda est: np.abs(est / f0 - 1)  # noqa: E731
        res[f"{int(f0)}_hz"] = {
            "prosody_median_rel_err": round(float(np.median(rel(yin))), 4),
            "prosody_windows_off_by_more_than_5pct": round(float((rel(yin) > 0.05).mean()), 3),
            "detect_pitch_frequency_median_rel_err": round(float(np.median(rel(naive))), 4),
            "detect_pitch_frequency_windows_off_by_more_than_5pct": round(float((rel(naive) > 0.05).mean()), 3)}
    print("pitch", res, flush=True)
    return res


def bench_cache_size(seconds: float) -> dict:
    """Bytes per hour of the waveform dataset as `jmt audio` writes it (int16, gzip 1), for the
    demo voice and for plain noise (an incompressible worst case), with read-back speed."""
    from pipeline.config import load_params
    from pipeline.stage1.audio import logmel, read_waveform, write_waveform

    params = load_params(REPO / "params.yaml")
    res = {}
    rng = np.random.default_rng(0)
    signals = {"demo_voice": demo_voice(seconds),
               "noise_-30dB": (10 ** (-30 / 20) * rng.standard_normal(int(seconds * SR))).astype(np.float32)}
    with tempfile.TemporaryDirectory() as tmp:
        for key, wave in signals.items():
            path = Path(tmp) / f"{key}.h5"
            with h5py.File(path, "w") as f:
                write_waveform(f, wave)
                spec = logmel(wave, params)
                f.create_dataset("logmel", data=spec, chunks=(min(len(spec), 4096), spec.shape[1]),
                                 compression="gzip", compression_opts=1)
            with h5py.File(path, "r") as f:
                wave_bytes = f["waveform"].id.get_storage_size()
                mel_bytes = f["logmel"].id.get_storage_size()
                t = time.perf_counter()
                back = read_waveform(f)
                read_s = time.perf_counter() - t
            assert np.abs(back - np.clip(wave, -1, 1)).max() <= 0.5 / 32767 + 1e-7
            per_hour = 3600.0 / seconds
            res[key] = {"waveform_mb_per_hour": round(wave_bytes * per_hour / 1e6, 1),
                        "raw_int16_mb_per_hour": round(SR * 2 * 3600 / 1e6, 1),
                        "logmel_mb_per_hour": round(mel_bytes * per_hour / 1e6, 1),
                        "waveform_read_s_per_hour": round(read_s * per_hour, 2)}
    print("cache", res, flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "docs/bench/audio_extractors.json")
    ap.add_argument("--seconds", type=float, default=120.0, help="audio for logmel_stats, prosody, egemaps")
    ap.add_argument("--ssl-seconds", type=float, default=30.0, help="audio for the SSL models")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "python": platform.python_version(), "torch": torch.__version__,
                          "load_average_1min_before": round(os.getloadavg()[0], 2)},
              "video_fps": FPS, "window_s": 1.0}
    result["speed"] = bench_speed(args.seconds, args.ssl_seconds)
    result["pitch"] = bench_pitch()
    result["waveform_cache"] = bench_cache_size(args.seconds)
    result["machine"]["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
