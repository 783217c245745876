"""Language-model training: n-gram estimation and its text."""
