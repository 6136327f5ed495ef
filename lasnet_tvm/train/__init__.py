"""Training of LAS models: synthetic data, the paper's losses, the training loop."""
