"""Training text: normalisation to the tokenizer's alphabet, offline sources and templates."""
