"""Planning a run, the training loop, checkpoints, resuming, weight averaging, TensorBoard."""
