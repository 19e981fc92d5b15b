"""Corpora: the Aff-Wild2 annotation format and (later) dataset adapters."""
