"""Synthetic speech corpus: every offline TTS voice, perturbed, with Lhotse manifests."""
