"""Training losses written in PyTorch: RNN-T (transducer) and Gram-CTC."""
