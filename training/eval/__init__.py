"""Evaluation: WER/CER of a bundle (and an offline peer) on a Lhotse manifest, with breakdowns."""
