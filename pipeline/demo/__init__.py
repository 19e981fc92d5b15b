"""The demo corpus: synthetic videos in the Aff-Wild2 layout with a real face and voice cues."""
