"""Stage 2, the fast loop: temporal encoders and fusion heads on the cached embeddings."""
