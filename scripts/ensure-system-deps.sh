#!/usr/bin/env bash
# Makes sure ffmpeg and ffprobe are on PATH: installs Debian's `ffmpeg` package with
# apt-get when they are missing and we may (root), else stops with one line saying how.
set -euo pipefail
if command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null; then
  exit 0
fi
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "installing ffmpeg (apt-get)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
  command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null && exit 0
fi
echo "error: ffmpeg/ffprobe not found; install them (Debian/Ubuntu: sudo apt-get install ffmpeg) and re-run make" >&2
exit 1
