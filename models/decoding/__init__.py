"""Decoders over acoustic model outputs (CTC first)."""
