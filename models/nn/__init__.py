"""Network blocks and the streaming acoustic model."""
