#!/usr/bin/env bash
# Makes sure the system tools are on PATH: ffmpeg and ffprobe (the pipeline) and espeak-ng
# (real speech for the voice-activity tests). Installs Debian's packages with apt-get when
# they are missing and we may (root), else stops with one line saying how.
set -euo pipefail
have() { command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null && command -v espeak-ng >/dev/null; }
have && exit 0
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "installing ffmpeg, espeak-ng (apt-get)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends ffmpeg espeak-ng >/dev/null
  have && exit 0
fi
echo "error: ffmpeg/ffprobe or espeak-ng not found; install them (Debian/Ubuntu: sudo apt-get install ffmpeg espeak-ng) and re-run make" >&2
exit 1
