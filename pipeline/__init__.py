"""jmt: audio-visual valence/arousal recognition with a two-stage feature cache."""

__version__ = "0.1.0"
