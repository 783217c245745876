"""Language models the decoders fuse (word n-gram, ARPA)."""
