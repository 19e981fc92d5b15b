"""Stage 1, run once: videos -> aligned faces and log-mel spectrograms -> cached embeddings."""
